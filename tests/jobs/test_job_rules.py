"""The rules every caller of the jobs API gets (the CLI, the server and the studio call the
same functions): OpenAI's suffix and metadata limits, and the data validated before a job
is made. The server's and the studio's side is in tests/server/test_job_rules_routes.py.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.providers.jobs import JobSpec, create_job
from tunelab.registry import Store


@pytest.mark.parametrize(
    ("suffix", "metadata", "code"),
    [
        ("x" * 65, {}, "invalid_suffix"),
        ("a:b", {}, "invalid_suffix"),  # would split the ft: name
        ("two words", {}, "invalid_suffix"),
        (None, {f"k{i}": "v" for i in range(17)}, "invalid_metadata"),
        (None, {"k" * 65: "v"}, "invalid_metadata"),
        (None, {"k": "v" * 513}, "invalid_metadata"),
        (None, {"k": 3}, "invalid_metadata"),
    ],
)
def test_a_job_request_past_openais_limits_is_refused_by_the_api(suffix, metadata, code):
    with pytest.raises(TunelabError) as raised:
        JobSpec(Path("train.jsonl"), suffix=suffix, metadata=metadata)
    assert raised.value.code == code and raised.value.hint


def test_a_request_at_the_limits_is_accepted():
    spec = JobSpec(
        Path("t.jsonl"), suffix="a" * 64, metadata={f"{i:064d}": "v" * 512 for i in range(16)}
    )
    assert spec.suffix == "a" * 64 and len(spec.metadata) == 16


def test_the_cli_refuses_a_long_suffix_before_reading_the_data(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json\n")  # validation would fail too: the suffix is checked first
    code = main(
        [
            "jobs",
            "create",
            "--model",
            str(tiny_model_dir),
            "--train",
            str(broken),
            "--suffix",
            "s" * 65,
            "--no-start",
        ]
    )
    assert code == 2 and "[invalid_suffix]" in capsys.readouterr().err
    with Store() as store:
        assert store.list_jobs() == []


def test_create_job_validates_the_data_for_the_model_before_recording_a_job(
    tiny_model_dir, tmp_path
):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}) + b"\n")
    with pytest.raises(TunelabError) as raised:
        create_job(JobSpec(bad, model=str(tiny_model_dir)), start_worker=False)
    assert raised.value.code == "invalid_training_data"
    assert "no job was created" in raised.value.message
    findings = raised.value.report.to_dict()["findings"]  # they travel with the error
    assert "no_assistant_message" in {f["code"] for f in findings}
    with Store() as store:
        assert store.list_jobs() == [] and store.list_files() == []
