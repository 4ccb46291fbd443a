"""The front ends (the CLI, the server and its studio) stand side by side over the Python
API: neither imports the other, apart from the commands that start the server."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunelab"
STARTS_THE_SERVER = {"serve_cmd.py"}  # `tunelab serve` builds the app; `tunelab ui` runs it


def imported(path: Path) -> set[str]:
    """Every module `path` imports (lazily inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def reaches(package: str, into: str, allowed: set[str] = frozenset()) -> list[str]:
    return sorted(
        f"{path.relative_to(SRC)} imports {name}"
        for path in (SRC / package).rglob("*.py")
        if path.name not in allowed
        for name in imported(path)
        if name == f"tunelab.{into}" or name.startswith(f"tunelab.{into}.")
    )


def test_the_cli_does_not_import_the_server():
    assert reaches("cli", "server", STARTS_THE_SERVER) == []


def test_the_server_does_not_import_the_cli():
    assert reaches("server", "cli") == []


def test_the_check_sees_an_import_when_there_is_one():
    assert reaches("cli", "server") == ["cli/serve_cmd.py imports tunelab.server.app"]
