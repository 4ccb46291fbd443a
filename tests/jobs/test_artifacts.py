"""Workers on several machines: files and outputs through the artefact store (TUNELAB_ARTIFACTS).

Separate TUNELAB_HOME directories play machines sharing one registry (a SQLite file named by
TUNELAB_DATABASE_URL, or a real PostgreSQL server); a `file://` URL to a temporary directory
stands in for the shared store. While one machine works, the others' homes are moved away, so
nothing can be read from them by path: what crosses over goes through the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from jobtools import job_row
from tiny import write_chat_jsonl
from tunelab.cli import main
from tunelab.engine.steps import StepRecord
from tunelab.providers.local import training, worker
from tunelab.registry import Store


class Machines:
    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.homes = {name: root / name for name in ("creator", "worker", "rescuer")}
        for home in self.homes.values():
            home.mkdir(parents=True)

    def be(self, name: str) -> Path:
        """Work as machine `name`; the other machine's home is out of reach meanwhile."""
        for other, home in self.homes.items():
            away = home.with_name(f"{other}-away")
            if other == name and away.exists():
                away.rename(home)
            elif other != name and home.exists():
                home.rename(away)
        self.monkeypatch.setenv("TUNELAB_HOME", str(self.homes[name]))
        return self.homes[name]


@pytest.fixture
def machines(tmp_path, monkeypatch) -> Machines:
    monkeypatch.setenv("TUNELAB_DATABASE_URL", str(tmp_path / "shared-registry.db"))
    return Machines(tmp_path / "machines", monkeypatch)


@pytest.fixture
def store_dir(tmp_path, monkeypatch) -> Path:
    shared = tmp_path / "artifact-store"
    monkeypatch.setenv("TUNELAB_ARTIFACTS", f"file://{shared}/tunelab")
    return shared / "tunelab"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_worker_on_another_machine_trains_and_the_creator_chats_and_exports(
    machines, store_dir, create_job, train_file, tmp_path, capsys
):
    val_file = write_chat_jsonl(
        tmp_path / "val.jsonl",
        [("What is three plus three?", "Six"), ("Who painted the Mona Lisa?", "Leonardo")],
    )
    machines.be("creator")
    job = create_job("--val", str(val_file), "--max-steps", "3", "--suffix", "far")
    assert job["tunelab"]["output_dir"] == f"file://{store_dir}/jobs/{job['id']}"
    shared_files = sorted(p.name for p in (store_dir / "files").iterdir())
    assert len(shared_files) == 2  # training and validation files, named by checksum
    train_file.unlink()  # the originals stay on the creator's disk only
    val_file.unlink()

    worker_home = machines.be("worker")
    assert worker.run_worker(max_jobs=1) == 1
    done = job_row(job["id"])
    assert done.status == "succeeded", done.error_message
    assert sorted(p.name for p in (worker_home / "files").iterdir()) == shared_files
    uploaded = {
        p.relative_to(store_dir / "jobs" / job["id"]).as_posix()
        for p in (store_dir / "jobs" / job["id"]).rglob("*")
        if p.is_file()
    }
    for name in (
        "adapter_model.safetensors",
        "metrics.jsonl",
        "loss.svg",
        "finetune.log",
        "tunelab_config.json",
    ):
        assert name in uploaded
    assert not any(name.startswith("checkpoints/") for name in uploaded)

    creator_home = machines.be("creator")
    name = done.fine_tuned_model
    assert _listed_path(capsys, name) == f"file://{store_dir}/jobs/{job['id']}"  # not the worker's
    code, out, err = run_cli(
        capsys, "chat", name, "What is the capital of France?", "--max-tokens", "4"
    )
    assert code == 0 and out.strip(), err
    fetched = creator_home / "jobs" / job["id"]
    assert _listed_path(capsys, name) == str(fetched)
    assert (fetched / "adapter_model.safetensors").read_bytes() == (
        store_dir / "jobs" / job["id"] / "adapter_model.safetensors"
    ).read_bytes()
    code, _, err = run_cli(capsys, "export", name, "-o", str(tmp_path / "merged"), "--merge")
    assert code == 0, err
    assert any((tmp_path / "merged").glob("*.safetensors"))
    assert (tmp_path / "merged" / "README.md").exists()  # the export's model card


def _listed_path(capsys, name: str) -> str:
    code, out, err = run_cli(capsys, "models", "list", "--json")
    assert code == 0, err
    return next(m["path"] for m in orjson.loads(out)["data"] if m["id"] == name)


def test_a_job_stopped_on_one_machine_resumes_on_another_from_its_checkpoint(
    machines, store_dir, create_job, capsys, monkeypatch
):
    machines.be("creator")
    job = create_job("--n-epochs", "8", "--checkpoint-every", "5")  # 24 steps
    machines.be("worker")
    _stop_after_step(monkeypatch, 10)
    assert worker.run_worker(max_jobs=1) == 1
    stopped = job_row(job["id"])
    assert stopped.status in ("cancelled", "paused") and stopped.progress["step"] < 24
    assert any((store_dir / "jobs" / job["id"] / "checkpoints").iterdir())

    creator_home = machines.be("creator")
    code, _, err = run_cli(capsys, "jobs", "resume", job["id"], "--no-start")
    assert code == 0, err
    assert worker.run_worker(max_jobs=1) == 1
    done = job_row(job["id"])
    assert done.status == "succeeded", done.error_message
    summary = json.loads((creator_home / "jobs" / job["id"] / "tunelab_config.json").read_text())
    assert summary["result"]["resumed_from_step"] >= 10
    assert summary["result"]["step"] == summary["result"]["total_steps"] == 24
    shared = store_dir / "jobs" / job["id"]
    assert (shared / "adapter_model.safetensors").exists()
    # A succeeded job's upload leaves its checkpoints out, the earlier upload's included.
    assert not any(p.is_file() for p in shared.rglob("*") if "checkpoints" in p.parts)


def _stop_after_step(monkeypatch, step: int) -> None:
    """The worker's first run stops after `step`, as a `jobs cancel` landing then would."""
    controls, stopped = [], []
    real_train, real_recorder = worker._train_job, training.ProgressRecorder

    def train_job(store, workspace, control, rewards=None):
        controls.append(control)
        return real_train(store, workspace, control, rewards)

    class Recorder(real_recorder):
        def __call__(self, record: StepRecord) -> None:
            super().__call__(record)
            if record.step == step and not stopped:
                stopped.append(step)
                controls[-1].set()

    monkeypatch.setattr(worker, "_train_job", train_job)
    monkeypatch.setattr(training, "ProgressRecorder", Recorder)


def test_unset_a_worker_that_cannot_see_the_files_says_how_to_share_them(
    machines, create_job, capsys
):
    machines.be("creator")
    job = create_job("--max-steps", "2")
    assert "://" not in job["tunelab"]["output_dir"]
    machines.be("worker")
    assert worker.run_worker(max_jobs=1) == 1
    failed = job_row(job["id"])
    assert failed.status == "failed" and failed.error_code == "artifact_not_here"
    assert "TUNELAB_ARTIFACTS" in failed.error_message
    with Store() as store:
        assert store.get_file(job["training_file"]).path.startswith(str(machines.root))
    code, out, _ = run_cli(capsys, "jobs", "show", job["id"], "--json")
    assert code == 0 and orjson.loads(out)["status"] == "failed"
    code, out, _ = run_cli(capsys, "jobs", "show", job["id"])
    assert code == 0 and "not on this one" in " ".join(out.split())  # the creator's path


def test_a_file_uploaded_on_one_machine_is_downloadable_from_anothers_server(
    machines, store_dir, create_job, train_file
):
    from fastapi.testclient import TestClient

    from tunelab.server.app import ServerConfig, create_app

    machines.be("creator")
    job = create_job()
    sent = train_file.read_bytes()
    train_file.unlink()

    machines.be("worker")
    app = create_app(ServerConfig(start_worker=False))
    with TestClient(app, base_url="http://localhost") as api:
        got = api.get(f"/v1/files/{job['training_file']}/content")
        assert got.status_code == 200 and got.content == sent
        missing = api.get("/v1/files/file-nope/content")
        assert missing.status_code == 404


# -- a worker machine that dies: its checkpoints were uploaded as they were saved ----------


def test_a_job_whose_worker_machine_dies_resumes_on_a_third_from_its_uploaded_checkpoint(
    machines, store_dir, create_job, capsys, tmp_path
):
    _die_and_resume(machines, store_dir, create_job, capsys, tmp_path)


def test_the_same_with_the_machines_sharing_a_postgresql_registry(
    machines, store_dir, create_job, capsys, tmp_path, monkeypatch, postgres_url
):
    monkeypatch.setenv("TUNELAB_DATABASE_URL", postgres_url)
    _die_and_resume(machines, store_dir, create_job, capsys, tmp_path)
    with Store() as store:
        assert str(store.path).startswith("postgresql://")


def _die_and_resume(machines, store_dir, create_job, capsys, tmp_path) -> None:
    """Created on one machine, run on a second that dies (SIGKILL) after step 10, resumed on
    a third from the checkpoint the second uploaded at step 10."""
    machines.be("creator")
    job = create_job("--n-epochs", "8", "--checkpoint-every", "5", "--keep-checkpoints", "1")
    shared = store_dir / "jobs" / job["id"]
    machines.be("worker")
    with _stalled_worker(10, tmp_path / "worker-stderr.log"):
        # Step 5's checkpoint was pruned when step 10's was saved: in the store as well.
        _wait_until(lambda: _uploaded_steps(shared) == [10])
    rescuer_home = machines.be("rescuer")
    code, out, err = run_cli(capsys, "jobs", "show", job["id"], "--json")
    lost = orjson.loads(out)
    assert code == 0 and lost["status"] == "failed", err
    assert lost["error"]["code"] == "worker_lost"
    with Store() as store:
        recorded = [p.fine_tuned_model_checkpoint for p in store.list_checkpoints(job["id"])]
    assert recorded == ["checkpoints/step-00000010"]  # the same on every machine
    code, out, _ = run_cli(capsys, "jobs", "checkpoints", job["id"], "--json")
    shown = [p["fine_tuned_model_checkpoint"] for p in orjson.loads(out)["data"]]
    assert shown == [f"file://{shared}/checkpoints/step-00000010"]  # not the dead one's path

    code, _, err = run_cli(capsys, "jobs", "resume", job["id"], "--no-start")
    assert code == 0, err
    assert worker.run_worker(max_jobs=1) == 1
    done = job_row(job["id"])
    assert done.status == "succeeded", done.error_message
    summary = json.loads((rescuer_home / "jobs" / job["id"] / "tunelab_config.json").read_text())
    assert summary["result"]["resumed_from_step"] == 10
    assert summary["result"]["step"] == summary["result"]["total_steps"] == 24
    with Store() as store:
        messages = [event.message for event in store.list_events(job["id"], limit=1000)]
    assert any(m.startswith("Checkpoint at step 10 uploaded") for m in messages)
    assert "Uploading the job's outputs to the artefact store" in messages


@contextlib.contextmanager
def _stalled_worker(step: int, stderr: Path):
    """A worker process that stalls after `step`; SIGKILLed when the block ends."""
    script = Path(__file__).with_name("stalled_worker.py")
    with stderr.open("wb") as errors:
        child = subprocess.Popen(
            [sys.executable, str(script), str(step)], stdout=subprocess.PIPE, stderr=errors
        )
    try:
        line = child.stdout.readline().decode()  # EOF (a crash) ends it too
        assert line.strip() == f"at step {step}", stderr.read_text()[-3000:]
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def _uploaded_steps(shared: Path) -> list[int]:
    """The checkpoints the store's manifest names, when those are all the store holds."""
    manifest = shared / ".tunelab-manifest.json"
    if not manifest.exists():
        return []
    named = {
        name.split("/")[1]
        for name in orjson.loads(manifest.read_bytes())["files"]
        if name.startswith("checkpoints/")
    }
    folder = shared / "checkpoints"
    held = {p.name for p in folder.iterdir()} if folder.exists() else set()
    return sorted(int(name.split("-")[1]) for name in named) if named == held else []


def _wait_until(condition, deadline_seconds: float = 600.0) -> None:
    """Poll `condition` (a generous deadline: a busy machine is slow, never this slow)."""
    give_up = time.monotonic() + deadline_seconds
    while not condition():
        assert time.monotonic() < give_up, "condition never met"
        time.sleep(0.1)


# -- the store's directory uploads ---------------------------------------------------------


def _checkpoint(job: Path, step: int, *, complete: bool = True) -> None:
    point = job / "checkpoints" / f"step-{step:08d}"
    point.mkdir(parents=True)
    (point / "weights.bin").write_bytes(bytes([step]) * 100)
    if complete:
        (point / "COMPLETE").write_text(point.name)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".tunelab-manifest.json"
    }


def _share(store, job: Path, **options) -> bool:
    from tunelab.providers.local.artifacts import resumable_files

    return store.put_dir(
        job, "jobs/j", files=resumable_files(job), fixed=("checkpoints",), **options
    )


def test_checkpoints_are_sent_once_pruned_ones_leave_the_store_and_unfinished_ones_stay_here(
    tmp_path,
):
    from tunelab.artifacts import Artifacts

    store, job = Artifacts(f"file://{tmp_path}/store"), tmp_path / "job"
    shared = tmp_path / "store" / "jobs" / "j"
    _checkpoint(job, 5)
    (job / "metrics.jsonl").write_text('{"step": 5}\n')
    assert _share(store, job)
    sent = shared / "checkpoints" / "step-00000005" / "weights.bin"
    os.utime(sent, ns=(1, 1))
    _checkpoint(job, 10)
    _checkpoint(job, 15, complete=False)  # being written
    (job / "checkpoints" / ".tmp-step-00000020.1").mkdir()
    (job / "tunelab_config.json").write_text("{}")  # a finished output: its own upload
    assert _share(store, job)
    assert sent.stat().st_mtime_ns == 1  # not sent again
    shutil.rmtree(job / "checkpoints" / "step-00000005")  # pruned by the engine
    assert _share(store, job)
    assert [p.name for p in (shared / "checkpoints").iterdir()] == ["step-00000010"]
    assert sorted(_tree(shared)) == [
        "checkpoints/step-00000010/COMPLETE",
        "checkpoints/step-00000010/weights.bin",
        "metrics.jsonl",
    ]


def test_an_upload_cut_short_leaves_the_previous_one_whole_and_fetchable(tmp_path):
    from tunelab.artifacts import Artifacts

    store, job = Artifacts(f"file://{tmp_path}/store"), tmp_path / "job"
    _checkpoint(job, 5)
    (job / "metrics.jsonl").write_text('{"step": 5}\n')
    assert _share(store, job)
    first = _tree(job)
    shutil.rmtree(job / "checkpoints" / "step-00000005")
    _checkpoint(job, 10)
    (job / "metrics.jsonl").write_text('{"step": 5}\n{"step": 10}\n')
    asked = []
    assert not _share(store, job, stop=lambda: asked.append(1) or len(asked) > 2)  # 2 files sent
    store.sync_dir("jobs/j", tmp_path / "elsewhere")
    assert _tree(tmp_path / "elsewhere") == first


def test_a_checkpoint_pruned_while_it_uploads_is_left_out_whole(tmp_path):
    from tunelab.artifacts import Artifacts

    store, job = Artifacts(f"file://{tmp_path}/store"), tmp_path / "job"
    _checkpoint(job, 5)
    _checkpoint(job, 10)

    def prune_first() -> bool:  # the engine prunes step 5 as its upload begins
        shutil.rmtree(job / "checkpoints" / "step-00000005", ignore_errors=True)
        return False

    assert _share(store, job, stop=prune_first)
    store.sync_dir("jobs/j", tmp_path / "elsewhere")
    assert sorted(_tree(tmp_path / "elsewhere")) == [
        "checkpoints/step-00000010/COMPLETE",
        "checkpoints/step-00000010/weights.bin",
    ]


def test_checkpoints_recorded_by_older_versions_are_shown_where_this_machine_reaches_them(
    machines, store_dir, create_job, capsys
):
    home = machines.be("creator")
    job = create_job()
    with Store() as store:
        store.add_checkpoint(job["id"], 2, fine_tuned_model_checkpoint="checkpoints/step-00000002")
        old = f"/elsewhere/home/jobs/{job['id']}/checkpoints/step-00000001"  # a worker's path
        store.add_checkpoint(job["id"], 1, fine_tuned_model_checkpoint=old)
    here = home / "jobs" / job["id"] / "checkpoints" / "step-00000002"
    here.mkdir(parents=True)
    code, out, err = run_cli(capsys, "jobs", "checkpoints", job["id"], "--json")
    assert code == 0, err
    shown = [p["fine_tuned_model_checkpoint"] for p in orjson.loads(out)["data"]]
    assert shown == [str(here), f"file://{store_dir}/jobs/{job['id']}/checkpoints/step-00000001"]
