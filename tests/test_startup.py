"""The light commands start at once: they never import torch or the other heavy libraries.

Each command runs in a fresh interpreter (a test process has long imported torch) and the
modules it loaded are read from `sys.modules` when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CLEAN = str(FIXTURES / "validate" / "clean.jsonl")
HEAVY = ("torch", "transformers", "peft", "openai", "together", "anthropic", "fastapi", "uvicorn")

PROBE = """
import json, sys
from tunelab.cli import main
try:
    code = main(sys.argv[1:])
finally:
    heavy = [name for name in {heavy!r} if name in sys.modules]
    sys.stderr.write("\\nLOADED " + json.dumps(heavy) + "\\n")
"""


def loaded_heavy(*args: str) -> list[str]:
    """The heavy modules that `tunelab ARGS` imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("LOADED ")][-1]
    return json.loads(line.removeprefix("LOADED "))


def test_importing_the_cli_loads_no_heavy_library():
    code = f"import sys, tunelab.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["jobs", "create", "--help"],
        ["chat", "--help"],
        ["validate", CLEAN],
        ["analyze", CLEAN, "--model", "gpt-4.1-nano"],
        ["jobs", "list"],
        ["models", "list"],
        ["eval", "list"],
    ],
    ids=lambda args: " ".join(a for a in args if not a.startswith("/")),
)
def test_light_commands_do_not_import_torch(args):
    assert loaded_heavy(*args) == []


def test_format_does_not_import_torch(tmp_path):
    source = FIXTURES / "format" / "queries.csv"
    assert loaded_heavy("format", str(source), "--train-output", str(tmp_path / "t.jsonl")) == []


BAD = "no-such-model"


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--train", CLEAN, "-o", "{tmp}/run", "-m", BAD],
        ["jobs", "create", "--train", CLEAN, "-m", BAD, "--no-start"],
        ["eval", "classify", "--data", CLEAN, "-m", BAD],
        ["eval", "queries", "--data", CLEAN, "-m", BAD],
        ["eval", "judge", "--judge-model", BAD, "--data", CLEAN, "-m", "smollm2-135m-instruct"],
        ["generate-conversations", "--ideas", CLEAN, "-m", BAD, "-o", "{tmp}/c.db"],
        ["chat", BAD, "hi"],
        ["serve", "--model", BAD],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_bad_model_name_fails_before_any_heavy_work(args, tmp_path):
    """Every `--model` is resolved first: a mistyped name is a one-line error, with no data
    read and no torch imported (what made it take seconds), and nothing started."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "[unknown_model]" in done.stderr and BAD in done.stderr, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("LOADED ")][-1]
    assert json.loads(line.removeprefix("LOADED ")) == []
    assert not (tmp_path / "run").exists() and not (tmp_path / "c.db").exists()


@pytest.mark.slow  # converts the bundled tokenizer once (shared SmolLM2 home)
def test_analyze_with_the_bundled_model_needs_no_torch(smollm2_home):
    """Counting the bundled model's tokens reads its converted tokenizer's files: no
    transformers, no torch (only the one-time conversion from the GGUF needs them)."""
    from tunelab.catalog import bundled_model_dir

    bundled_model_dir()  # the conversion, done once per home
    assert loaded_heavy("analyze", CLEAN) == []
    assert loaded_heavy("validate", CLEAN, "--model", "smollm2-135m-instruct") == []
