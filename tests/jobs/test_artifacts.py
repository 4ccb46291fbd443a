"""Workers on several machines: files and outputs through the artefact store (TUNELAB_ARTIFACTS).

Two TUNELAB_HOME directories play two machines sharing one registry (a SQLite file named by
TUNELAB_DATABASE_URL); a `file://` URL to a temporary directory stands in for the shared
store. While one machine works, the other's home is moved away, so nothing can be read from
it by path: what crosses over goes through the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from jobtools import job_row
from tiny import write_chat_jsonl
from tunelab.cli import main
from tunelab.providers import worker
from tunelab.registry import Store


class Machines:
    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.homes = {name: root / name for name in ("creator", "worker")}
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
    uploaded = {p.relative_to(store_dir / "jobs" / job["id"]).as_posix()
                for p in (store_dir / "jobs" / job["id"]).rglob("*") if p.is_file()}  # fmt: skip
    for name in ("adapter_model.safetensors", "metrics.jsonl", "loss.svg",
                 "finetune.log", "tunelab_config.json"):  # fmt: skip
        assert name in uploaded
    assert not any(name.startswith("checkpoints/") for name in uploaded)

    creator_home = machines.be("creator")
    name = done.fine_tuned_model
    code, out, err = run_cli(capsys, "chat", name, "What is the capital of France?",
                             "--max-tokens", "4")  # fmt: skip
    assert code == 0 and out.strip(), err
    fetched = creator_home / "jobs" / job["id"]
    assert (fetched / "adapter_model.safetensors").read_bytes() == (
        store_dir / "jobs" / job["id"] / "adapter_model.safetensors").read_bytes()  # fmt: skip
    code, _, err = run_cli(capsys, "export", name, "-o", str(tmp_path / "merged"), "--merge")
    assert code == 0, err
    assert any((tmp_path / "merged").glob("*.safetensors"))
    assert (tmp_path / "merged" / "README.md").exists()  # the export's model card


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
    real_train, real_recorder = worker._train_job, worker._ProgressRecorder

    def train_job(store, job, control):
        controls.append(control)
        return real_train(store, job, control)

    class Recorder(real_recorder):
        def __call__(self, record: dict) -> None:
            super().__call__(record)
            if record["step"] == step and not stopped:
                stopped.append(step)
                controls[-1].set()

    monkeypatch.setattr(worker, "_train_job", train_job)
    monkeypatch.setattr(worker, "_ProgressRecorder", Recorder)


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
