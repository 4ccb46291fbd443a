"""Fair sharing of the cores: the wait policy and thread count of processes that compute."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import orjson
import pytest

from tiny import save_tiny_model, write_chat_jsonl
from tunelab import cores
from tunelab.cli import main

PROBE = """
import json, os
import tunelab.engine  # imports torch through tunelab, as the CLI, worker and server do
import torch
from tunelab import cores
with cores.computing() as share:
    threads = torch.get_num_threads()
print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"),
                  "blocktime": os.environ.get("KMP_BLOCKTIME"), "threads": threads}))
"""


OURS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "TUNELAB_THREADS")


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    return {**env, **extra}


def _probe(env: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_computing_process_gets_the_passive_wait_policy_before_torch_loads():
    seen = _probe(_clean_env())
    assert seen["policy"] == "PASSIVE" and seen["blocktime"] == "0"
    assert seen["threads"] == cores.available_cores()  # alone: every core


def test_the_users_own_settings_win():
    seen = _probe(_clean_env(OMP_WAIT_POLICY="ACTIVE", TUNELAB_THREADS="1"))
    assert seen["policy"] == "ACTIVE" and seen["threads"] == 1


@pytest.fixture
def other_computing_process(isolated_home):
    """A live process registered as computing, as a second tunelab training would be."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    registry = isolated_home / "compute"
    registry.mkdir(parents=True, exist_ok=True)
    (registry / str(sleeper.pid)).touch()
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def test_processes_computing_together_split_the_cores(other_computing_process, isolated_home):
    registry = isolated_home / "compute"
    (registry / "999999999").touch()  # a process that died without leaving
    assert cores.computing_processes() == [other_computing_process]
    with cores.computing():
        assert sorted(cores.computing_processes()) == sorted([other_computing_process, os.getpid()])
    assert cores.computing_processes() == [other_computing_process]  # it left again
    assert not (registry / "999999999").exists()
    assert cores.fair_threads(2, cores=4) == 2
    assert cores.fair_threads(3, cores=2) == 1  # never fewer than one thread


def test_a_training_takes_half_the_cores_beside_another(
    other_computing_process, tmp_path, monkeypatch
):
    from tunelab.engine import TrainConfig, train

    monkeypatch.delenv("TUNELAB_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    model_dir = save_tiny_model(tmp_path / "tiny")
    from tunelab.engine import load_base

    model, tokenizer, _ = load_base(str(model_dir))
    records = []
    config = TrainConfig(max_steps=2, batch_size=2, precision="fp32", lora_rank=4)
    train(
        model,
        tokenizer,
        write_chat_jsonl(tmp_path / "train.jsonl"),
        None,
        config,
        tmp_path / "out",
        callback=records.append,
    )
    assert [r.threads for r in records] == [max(1, cores.available_cores() // 2)] * 2


def test_a_worker_process_computes_with_the_passive_policy(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "tiny")
    train_file = write_chat_jsonl(tmp_path / "train.jsonl")
    capsys.readouterr()
    assert (
        main(
            [
                "jobs",
                "create",
                "--model",
                str(model_dir),
                "--train",
                str(train_file),
                "--batch-size",
                "4",
                "--max-steps",
                "1",
                "--precision",
                "fp32",
                "--no-start",
                "--json",
            ]
        )
        == 0
    )
    job_id = orjson.loads(capsys.readouterr().out)["id"]
    subprocess.run(
        [sys.executable, "-m", "tunelab", "worker", "--exit-when-idle", "0"],
        env=_clean_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert main(["jobs", "events", job_id, "--json"]) == 0
    out = capsys.readouterr().out
    n = cores.available_cores()
    assert f"Computing with {n} thread(s) of {n} cores, OpenMP wait policy passive" in out


def test_a_queued_job_says_what_it_waits_behind(tmp_path, capsys):
    from tunelab.registry import Store

    model_dir = save_tiny_model(tmp_path / "tiny")
    train_file = write_chat_jsonl(tmp_path / "train.jsonl")
    ids = []
    for _ in range(2):
        capsys.readouterr()
        assert (
            main(
                [
                    "jobs",
                    "create",
                    "--model",
                    str(model_dir),
                    "--train",
                    str(train_file),
                    "--no-start",
                    "--json",
                ]
            )
            == 0
        )
        ids.append(orjson.loads(capsys.readouterr().out)["id"])
    assert main(["jobs", "show", ids[1], "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["tunelab"]["queue"] == (
        "queued behind 1 queued job(s) created before it"
    )
    with Store() as store:
        # Running in a live worker (this process), so no command takes it for lost.
        store.update_job(
            ids[0],
            status="running",
            worker_pid=os.getpid(),
            worker_host=socket.gethostname(),
            heartbeat_at=int(time.time()),
            progress={"step": 3, "total_steps": 10, "loss": 1.0},
        )
    assert main(["jobs", "show", ids[1]]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"queued behind {ids[0]} (running, step 3/10)" in out
    assert main(["jobs", "show", ids[0], "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["tunelab"]["queue"] is None
