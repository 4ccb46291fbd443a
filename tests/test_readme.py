"""README's workflow section runs as written, in order, in a fresh directory.

`../shared` is not part of the repository: its TREC file is replaced by the bundled TREC
sample (same columns), the only change made to the commands.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tunelab.cli import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
SAMPLE = ROOT / "src/tunelab/resources/samples/trec_sample.tsv"
SHARED_TREC = "../shared/datasets/trec/train.tsv"


def workflow_commands() -> list[list[str]]:
    """The `tunelab ...` commands of the first bash block under '## The workflow'."""
    section = README.read_text(encoding="utf-8").split("## The workflow", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "tunelab":
            commands.append([w.replace(SHARED_TREC, str(SAMPLE)) for w in words[1:]])
    return commands


def test_the_workflow_section_has_commands_to_run():
    commands = workflow_commands()
    assert [c[0] for c in commands] == ["format", "validate", "analyze", "analyze"]


@pytest.mark.slow  # analyze with the bundled model converts its tokenizer once (seconds)
def test_the_workflow_runs_in_order_on_a_fresh_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in workflow_commands():
        code = main(argv)
        assert code == 0, f"tunelab {shlex.join(argv)}: {capsys.readouterr().err}"
    assert Path("data/trec_train.jsonl").exists() and Path("data/trec_val.jsonl").exists()
    assert Path("trec_report.html").exists()
