"""README's workflow section runs as written, in order, from a fresh checkout: every file it
reads is part of the repository, and its outputs go to a fresh directory.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tunelab.cli import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def workflow_commands() -> list[list[str]]:
    """The `tunelab ...` commands of the first bash block under '## The workflow'."""
    section = README.read_text(encoding="utf-8").split("## The workflow", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "tunelab":
            commands.append(words[1:])
    return commands


def test_the_workflow_section_has_commands_to_run():
    commands = workflow_commands()
    assert [c[0] for c in commands] == ["format", "validate", "analyze", "analyze"]


def test_the_source_the_workflow_starts_from_is_part_of_the_repository():
    source = workflow_commands()[0][1]  # tunelab format SOURCE ...
    found = (ROOT / source).resolve()
    assert found.is_relative_to(ROOT) and found.is_file(), source  # not ../shared


@pytest.mark.slow  # analyze with the bundled model converts its tokenizer once (seconds)
def test_the_workflow_runs_in_order_on_a_fresh_machine(tmp_path, monkeypatch, capsys):
    (tmp_path / "src").symlink_to(ROOT / "src")  # the checkout's files; outputs stay here
    monkeypatch.chdir(tmp_path)
    for argv in workflow_commands():
        code = main(argv)
        assert code == 0, f"tunelab {shlex.join(argv)}: {capsys.readouterr().err}"
    assert Path("data/trec_train.jsonl").exists() and Path("data/trec_val.jsonl").exists()
    assert Path("trec_report.html").exists()


def test_the_provider_table_says_what_each_built_in_provider_declares():
    from tunelab.providers.provider import CAPABILITIES
    from tunelab.providers.registry import provider_class

    section = README.read_text(encoding="utf-8").split("### `tunelab providers`", 1)[1]
    rows = re.findall(r"^\| `([\w-]+)`[^|]*\|(.*)\|$", section.split("```", 1)[0], re.MULTILINE)
    table = {name: [cell.strip() for cell in cells.split("|")] for name, cells in rows}
    assert set(table) == {"local", "openai", "together", "anthropic", "openai-compatible"}
    for name, cells in table.items():
        offered = {cap for cap, cell in zip(CAPABILITIES, cells, strict=False) if cell != "–"}
        assert offered == set(provider_class(name).capabilities), name
