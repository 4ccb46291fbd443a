"""A queued local job trained in 2 torchrun processes (gloo on CPU), supervised by the worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from jobtools import job_row, wait_until
from tunelab.cli import main
from tunelab.engine.checkpoint import complete_checkpoints, read_checkpoint_meta
from tunelab.providers.local import worker
from tunelab.providers.local.ranks import descendants
from tunelab.registry import Store

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
# The slow tests start torchrun and two ranks (torch imported three times).


def rank_pids() -> dict[int, int]:
    """The torchrun ranks below this test process, by rank."""
    found = {}
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            ranks = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RANK=")]
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if ranks and b"tunelab.providers.local.ranks" in command:
                found[int(ranks[0])] = pid
    return found


def alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


class WorkerThread:
    """`run_worker` for one job in a thread (its torchrun is a child of this process)."""

    def __enter__(self):
        self.thread = threading.Thread(target=worker.run_worker, kwargs={"max_jobs": 1})
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join()


def running_ranks(job_id: str) -> dict[int, int]:
    """Both ranks' pids, once the job has recorded a step."""
    wait_until(lambda: (job_row(job_id).progress or {}).get("step", 0) >= 1, timeout=600)
    return wait_until(lambda: (lambda found: found if len(found) == 2 else None)(rank_pids()))


@pytest.mark.slow
def test_a_two_process_job_succeeds_with_rank_0s_metrics_once(create_job, capsys):
    job = create_job("--n-epochs", "2", "--nproc-per-node", "2", "--suffix", "ranks")
    assert job_row(job["id"]).metadata["tunelab_nproc_per_node"] == 2

    assert worker.run_worker(max_jobs=1) == 1

    done = job_row(job["id"])
    assert done.status == "succeeded", done.error_message
    with Store() as store:
        metrics = store.list_metrics(job["id"])
        events = [e.message for e in store.list_events(job["id"], limit=1000)]
        model = store.find_model(done.fine_tuned_model)
    assert [m["step"] for m in metrics] == list(range(1, 7))  # each step once: rank 0's
    assert any(m.startswith("Training in 2 processes (torchrun") for m in events)
    assert sum(m.startswith("Loaded base model") for m in events) == 1
    assert (Path(model.path) / "adapter_model.safetensors").exists()
    assert not list(Path(model.path).glob(".ranks-*"))  # the ranks' exchange files are gone
    code = main(
        ["chat", done.fine_tuned_model, "What is the capital of France?", "--max-tokens", "4"]
    )
    assert code == 0


@pytest.mark.slow
def test_a_two_process_full_fine_tuning_job_trains_sharded(create_job, capsys):
    job = create_job(
        "--method", "full", "--n-epochs", "1", "--nproc-per-node", "2", "--distributed", "fsdp"
    )

    assert worker.run_worker(max_jobs=1) == 1

    done = job_row(job["id"])
    assert done.status == "succeeded", done.error_message
    with Store() as store:
        metrics = store.list_metrics(job["id"])
        model = store.find_model(done.fine_tuned_model)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    output = Path(model.path)
    assert json.loads((output / "tunelab_config.json").read_text())["config"]["distributed"] == (
        "fsdp"
    )
    assert (output / "model.safetensors").exists()  # the gathered weights, a full model
    code = main(
        ["chat", done.fine_tuned_model, "What is the capital of France?", "--max-tokens", "4"]
    )
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "sharding", [(), ("--method", "full", "--distributed", "fsdp")], ids=["ddp", "fsdp"]
)
def test_cancelling_a_two_process_job_stops_every_rank(create_job, capsys, sharding):
    job = create_job("--n-epochs", "1000", "--nproc-per-node", "2", *sharding)
    with WorkerThread():
        pids = running_ranks(job["id"])
        assert main(["jobs", "cancel", job["id"]]) == 0

    done = job_row(job["id"])
    assert done.status == "cancelled"
    assert 1 <= done.progress["step"] < done.progress["total_steps"]
    # The ranks stopped together after a step, and rank 0 saved that step's checkpoint.
    saved = [read_checkpoint_meta(c)["step"] for c in complete_checkpoints(Path(done.output_dir))]
    assert saved[-1] == done.progress["step"]
    assert not any(alive(pid) for pid in pids.values())


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_and_ends_the_other(create_job, capsys):
    job = create_job("--n-epochs", "1000", "--nproc-per-node", "2")
    with WorkerThread():
        pids = running_ranks(job["id"])
        os.kill(pids[1], signal.SIGKILL)

    done = job_row(job["id"])
    assert done.status == "failed" and done.error_code == "rank_failed"
    assert "rank 1 of 2 was killed (exit code -9)" in done.error_message
    assert not alive(pids[0])


def test_hosted_providers_choose_their_own_processes(tiny_model_dir, train_file, capsys):
    code = main(
        [
            "jobs",
            "create",
            "--provider",
            "together",
            "--model",
            "some/model",
            "--train",
            str(train_file),
            "--nproc-per-node",
            "2",
        ]
    )
    assert code == 2
    assert "--nproc-per-node is for jobs trained on this machine" in capsys.readouterr().err


def test_the_failure_reported_is_the_cause_not_its_echo_on_the_other_rank(tmp_path):
    from tunelab.providers.local.ranks import ERROR_PREFIX, rank_failure

    def report(rank: int, code: str, message: str) -> None:
        error = {"code": code, "message": message}
        (tmp_path / f"{ERROR_PREFIX}{rank}").write_text(json.dumps(error))

    report(0, "internal_error", "RuntimeError: [gloo] Connection closed by peer")
    report(1, "out_of_memory", "the GPU ran out of memory (lower --batch-size)")
    err = rank_failure(tmp_path, 1, 2)
    assert err.code == "out_of_memory"
    assert err.message == "rank 1 of 2 failed: the GPU ran out of memory (lower --batch-size)"

    (tmp_path / f"{ERROR_PREFIX}1").unlink()
    (tmp_path / "finetune.log").write_text(
        "ChildFailedError:\nFailures:\n[1]:\n  rank      : 0 (local_rank: 0)\n"
        "  exitcode  : -15 (pid: 8)\nRoot Cause (first observed failure):\n[0]:\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 9)\n"
    )
    err = rank_failure(tmp_path, 1, 2)
    assert err.code == "rank_failed" and "rank 1 of 2 was killed (exit code -9)" in err.message
