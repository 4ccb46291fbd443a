"""The `openai` provider of `tunelab jobs` against tunelab's own server: tunelab driving tunelab.

The client side has its own TUNELAB_HOME (the autouse fixture), the server another, as when
a team points its laptop at a shared GPU box.
"""

from __future__ import annotations

import orjson
import pytest

from tunelab.cli import main

pytestmark = pytest.mark.slow


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_jobs_on_the_openai_provider_run_on_a_tunelab_server(
    server, tiny_model, train_path, capsys, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # loopback servers need no key
    code, out, err = cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "openai",
        "--base-url",
        server.url,
        "--model",
        str(tiny_model),
        "--train",
        str(train_path),
        "--n-epochs",
        "2",
        "--suffix",
        "remote",
        "--json",
    )
    assert code == 0, err
    job = orjson.loads(out)
    assert job["tunelab"]["provider"] == "openai" and job["tunelab"]["provider_job_id"]

    code, out, err = cli(capsys, "jobs", "wait", job["id"], "--json")
    done = orjson.loads(out)
    assert code == 0, err
    assert done["fine_tuned_model"].startswith("ft:tiny-llama:local:remote:")
    code, out, _ = cli(capsys, "jobs", "events", job["id"])
    assert "The job has successfully completed" in out
    code, out, _ = cli(capsys, "jobs", "checkpoints", job["id"], "--json")
    assert orjson.loads(out)["data"]

    code, out, err = cli(
        capsys, "chat", done["fine_tuned_model"], "Who wrote Hamlet?", "--max-tokens", "4"
    )
    assert code == 0 and out.strip(), err
