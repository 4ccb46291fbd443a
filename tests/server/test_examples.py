"""`examples/openai_sdk/`: the seeds' OpenAI scripts run unchanged against `tunelab serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parents[2] / "examples" / "openai_sdk"


def run(server, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "unused"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_example_scripts_fine_tune_check_and_use_a_model(server, tiny_model, train_path):
    made = run(
        server,
        "fine_tune.py",
        str(train_path),
        "--model",
        str(tiny_model),
        "--epochs",
        "1",
        "--suffix",
        "example",
    )
    assert made.returncode == 0, made.stderr
    job_id = re.search(r"Job ID: (ftjob-\w+)", made.stdout).group(1)

    waited = run(server, "check_fine_tune_status.py", job_id, "--wait")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    model = re.search(r"Fine-tuned model: (\S+)", waited.stdout).group(1)
    assert "The job has successfully completed" in waited.stdout

    listed = run(server, "check_fine_tune_status.py", "--list")
    assert job_id in listed.stdout

    for flags in ((), ("--stream",)):
        used = run(
            server,
            "use_fine_tuned_model.py",
            model,
            "Who wrote Hamlet?",
            "--max-tokens",
            "4",
            *flags,
        )
        assert used.returncode == 0 and used.stdout.strip(), used.stderr
