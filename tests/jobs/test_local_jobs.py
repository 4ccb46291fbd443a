"""Local jobs end to end: create, run in a worker, watch, chat with the `ft:` model; faults."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import orjson
import pytest

from jobtools import job_row, wait_until, worker_process
from tunelab.cli import main
from tunelab.providers.local import worker
from tunelab.registry import Store


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_local_job_goes_queued_running_succeeded_and_its_model_answers(create_job, capsys):
    job = create_job("--n-epochs", "8", "--suffix", "capitals")
    assert job["status"] == "queued" and job["object"] == "fine_tuning.job"
    seen = [job_row(job["id"]).status]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            status = job_row(job["id"]).status
            if seen[-1] != status:
                seen.append(status)
            stop.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert worker.run_worker(max_jobs=1) == 1
    finally:
        stop.set()
        watcher.join()
    seen.append(job_row(job["id"]).status)
    assert seen[0] == "queued" and seen[-1] == "succeeded"
    assert "running" in seen

    code, out, _ = run_cli(capsys, "jobs", "show", job["id"], "--json")
    done = orjson.loads(out)
    assert code == 0 and done["status"] == "succeeded"
    name = done["fine_tuned_model"]
    assert name.startswith("ft:tiny-llama:local:capitals:")
    assert done["hyperparameters"]["n_epochs"] == 8 and done["trained_tokens"] > 0

    code, out, _ = run_cli(capsys, "jobs", "events", job["id"], "--json")
    messages = [json.loads(chunk)["message"] for chunk in _json_objects(out)]
    assert messages[0].startswith("Created fine-tuning job")
    assert any(m.startswith("Step 1/24: training loss=") for m in messages)
    assert messages[-2:] == [
        f"New fine-tuned model created: {name}",
        "The job has successfully completed",
    ]
    with Store() as store:
        metrics = store.list_metrics(job["id"])
        checkpoints = store.list_checkpoints(job["id"])
    assert [m["step"] for m in metrics] == list(range(1, 25))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert [c.step for c in checkpoints] == [24, 21]  # the engine keeps the latest two

    code, out, _ = run_cli(capsys, "models", "list", "--fine-tuned", "--json")
    assert [m["id"] for m in orjson.loads(out)["data"]] == [name]
    code, out, _ = run_cli(
        capsys, "chat", name, "What is the capital of France?", "--max-tokens", "6"
    )
    assert code == 0 and out.strip()  # the trained adapter loads and answers


def _json_objects(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON objects (one per event)."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        _, end = decoder.raw_decode(text, index)
        found.append(text[index:end])
        index = end
    return found


def test_jobs_list_pages_through_every_job_newest_first(create_job, capsys):
    made = [create_job()["id"] for _ in range(5)]
    _, out, _ = run_cli(capsys, "jobs", "list", "--limit", "3", "--json")
    first = orjson.loads(out)
    assert first["has_more"] is True
    _, out, _ = run_cli(
        capsys, "jobs", "list", "--limit", "3", "--after", first["data"][-1]["id"], "--json"
    )
    second = orjson.loads(out)
    ids = [j["id"] for j in first["data"] + second["data"]]
    assert ids == made[::-1]


def test_cancelling_a_queued_job_is_immediate_and_a_worker_skips_it(create_job, capsys):
    job = create_job()
    code, out, _ = run_cli(capsys, "jobs", "cancel", job["id"], "--json")
    assert code == 0 and orjson.loads(out)["status"] == "cancelled"
    assert worker.run_worker(exit_when_idle=0) == 0
    code, _, err = run_cli(capsys, "jobs", "cancel", job["id"])
    assert code == 1 and "job_finished" in err


def test_bad_settings_and_bad_data_create_no_job(create_job, tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    code, _, err = run_cli(
        capsys, "jobs", "create", "--model", str(tiny_model_dir), "--train", str(bad), "--no-start"
    )
    assert code == 1 and "invalid_training_data" in err
    code, _, err = run_cli(
        capsys,
        "jobs",
        "create",
        "--model",
        str(tiny_model_dir),
        "--train",
        str(tmp_path / "missing.jsonl"),
        "--no-start",
    )
    assert code == 2
    code, out, _ = run_cli(capsys, "jobs", "list", "--json")
    assert orjson.loads(out)["data"] == []


def test_a_job_keeps_its_own_copy_of_the_training_file(create_job, train_file, capsys):
    job = create_job("--max-steps", "2")
    original = train_file.read_bytes()
    train_file.write_text("edited after the job was created\n")
    assert worker.run_worker(max_jobs=1) == 1
    assert job_row(job["id"]).status == "succeeded"
    with Store() as store:
        copy = store.get_file(job["training_file"])
    assert Path(copy.path).read_bytes() == original


@pytest.mark.slow
def test_cancel_during_training_ends_the_job_cancelled_mid_run(create_job, capsys):
    job = create_job("--n-epochs", "2000")
    process = worker_process("--exit-when-idle", "0")
    try:
        wait_until(lambda: _step(job["id"]) >= 3, 600)
        code, out, _ = run_cli(capsys, "jobs", "cancel", job["id"])
        assert code == 0 and "cancel requested" in out
        # The worker picks the request up on its next heartbeat (each second), then stops
        # after the step in flight: on the tiny model that is many steps, so the check is
        # that the run ends cancelled long before its 2,000 epochs, not a count of steps.
        row = wait_until(lambda: _finished(job["id"]), timeout=300)
        assert row.status == "cancelled"
        assert row.progress["step"] < row.progress["total_steps"]
    finally:
        process.kill()
        process.wait()


def _step(job_id: str) -> int:
    return (job_row(job_id).progress or {}).get("step", 0)


def _finished(job_id: str):
    row = job_row(job_id)
    return row if row.status in ("succeeded", "failed", "cancelled") else None


@pytest.mark.slow
def test_a_killed_worker_is_detected_and_the_job_resumes_from_its_checkpoint(create_job, capsys):
    # 180 steps: enough left after step 20 that the kill lands mid-run, few enough that
    # the resumed run stays quick on a busy machine (it was 1,200).
    job = create_job("--n-epochs", "60", "--checkpoint-every", "10")
    process = worker_process("--exit-when-idle", "0")
    try:
        with Store() as store:
            wait_until(
                lambda: any(c.step >= 20 for c in store.list_checkpoints(job["id"])), timeout=600
            )
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    code, out, _ = run_cli(capsys, "jobs", "show", job["id"], "--json")  # any command detects it
    lost = orjson.loads(out)
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost"
    assert f"tunelab jobs resume {job['id']}" in lost["error"]["message"]

    code, out, _ = run_cli(capsys, "jobs", "resume", job["id"], "--no-start", "--json")
    assert code == 0 and orjson.loads(out)["status"] == "queued"
    assert worker.run_worker(max_jobs=1) == 1
    done = job_row(job["id"])
    assert done.status == "succeeded" and done.fine_tuned_model
    summary = json.loads((Path(done.output_dir) / "tunelab_config.json").read_text())
    assert summary["result"]["resumed_from_step"] >= 20
    assert summary["result"]["step"] == summary["result"]["total_steps"]
    with Store() as store:  # trained tokens span both attempts, each step once
        assert done.trained_tokens == sum(m["tokens"] for m in store.list_metrics(job["id"]))


def test_piped_jobs_wait_prints_a_line_per_change_not_per_poll(create_job, capsys):
    """A 60-step job watched through a pipe: a short log, no carriage returns or warnings."""
    import subprocess
    import sys

    job = create_job("--n-epochs", "100", "--max-steps", "60")
    process = worker_process("--exit-when-idle", "0")
    try:
        waited = subprocess.run(
            [sys.executable, "-m", "tunelab", "jobs", "wait", job["id"]],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        process.wait(timeout=600)
    output = waited.stdout + waited.stderr
    assert waited.returncode == 0, output
    assert "succeeded" in waited.stdout
    assert len(output.splitlines()) < 30, output
    assert "\r" not in output and "Warning" not in output
    assert "step 60/60" in waited.stderr

    # The curve and the job's log, as a user looks at them afterwards.
    code, out, _ = run_cli(capsys, "jobs", "show", job["id"])
    log = Path(job_row(job["id"]).output_dir) / "finetune.log"
    assert code == 0 and str(log) in out and "· training loss" in out
    assert "step 60/60: loss" in log.read_text()
    code, out, _ = run_cli(capsys, "jobs", "metrics", job["id"], "--json")
    assert [m["step"] for m in orjson.loads(out)["data"]] == list(range(1, 61))
    assert (log.parent / "loss.svg").exists()


def test_a_local_estimate_counts_the_steps_max_steps_allows(tmp_path, isolated_home):
    from tunelab.data.analyze import FileAnalysis
    from tunelab.providers.jobs import JobSpec, estimate_job

    (isolated_home / "throughput.json").write_text(
        json.dumps(
            {
                "tiny": {
                    "lora": {
                        "tokens_per_second": 100.0,
                        "eval_tokens_per_second": 300.0,
                        "overhead_seconds": 2.0,
                        "measured_at": "2026-11-30T00:00:00+00:00",
                        "device": "cpu",
                    }
                }
            }
        )
    )
    analysis = FileAnalysis(
        file="t.jsonl",
        n_examples=40,
        n_invalid_examples=0,
        total_tokens=4000,
        total_assistant_tokens=1000,
        n_over_context=0,
        n_missing_system=0,
        n_missing_user=0,
        distributions={},
        validation={},
        model="tiny",
        provider="local",
        tokenizer="tiny",
        exact_counts=True,
        context_limit=None,
        n_epochs=3,
        billed_tokens=12000,
        estimated_cost_usd=None,
        costs=[],
        task={},
        val=None,
        notes=[],
    )
    spec = JobSpec(
        training_file=tmp_path / "t.jsonl",
        model="tiny",
        hyperparameters={"batch_size": 4, "max_steps": 3},
    )
    estimate = estimate_job(spec, analysis)
    # 3 of 10 steps per epoch: 30% of one epoch's 4,000 tokens at 100 tokens/s, plus overhead.
    assert estimate.total_steps == 3
    assert estimate.seconds == pytest.approx(1200 / 100 + 2.0)
    uncapped = estimate_job(
        JobSpec(
            training_file=tmp_path / "t.jsonl", model="tiny", hyperparameters={"batch_size": 4}
        ),
        analysis,
    )
    assert uncapped.total_steps == 30 and uncapped.seconds == pytest.approx(122.0)
