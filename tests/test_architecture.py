"""The design the code keeps: one way to answer with a model, one answer type.

Answering is the providers' (`Provider.chat`, `answer_batch`, `score`, `serve_*`): the front
ends, evaluations and migrations ask a provider and never drive the engine's generation or
scoring themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tunelab

SRC = Path(tunelab.__file__).parent
ANSWERING = ("tunelab.engine.generate", "tunelab.engine.score")
ABOVE_PROVIDERS = ("cli", "server", "evals", "migrate", "demo.py")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources_above_providers() -> list[Path]:
    paths: list[Path] = []
    for place in ABOVE_PROVIDERS:
        target = SRC / place
        paths += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return paths


def test_front_ends_evaluations_and_migrations_do_not_drive_the_engines_answering():
    offenders = {
        str(path.relative_to(SRC)): sorted(m for m in imported_modules(path) if m in ANSWERING)
        for path in sources_above_providers()
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_no_layer_asks_where_the_engine_loads_a_model():
    naming = [p for p in SRC.rglob("*.py") if "engine_source" in p.read_text()]
    assert naming == []


def test_one_answer_type():
    """`tunelab.types.Answer` is the only class for a model's answer (and its usage)."""
    answer_classes = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name in (
                "Answer",
                "Usage",
                "Completion",
                "ChatResult",
                "ChatAnswer",
            ):
                answer_classes.append(f"{path.relative_to(SRC)}:{node.name}")
    assert sorted(answer_classes) == ["types.py:Answer", "types.py:Usage"]


def _function_imports(tree: ast.Module) -> list[ast.stmt]:
    return sorted(
        (
            node
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
            if isinstance(node, (ast.Import, ast.ImportFrom))
        ),
        key=lambda node: node.lineno,
    )


def test_every_import_inside_a_function_says_why_it_is_there():
    """An import is deferred to keep torch, transformers, the SDKs or an optional extra out of
    the commands that do not need them, never to get around an import cycle (import-linter's
    contracts keep the package acyclic): each says so, on its line or on the comment line
    above its group of imports."""
    silent = []
    for path in SRC.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in _function_imports(ast.parse("\n".join(lines))):
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            grouped = above.startswith(("import ", "from ")) or above.startswith("#")
            if "#" not in line and not grouped:
                silent.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert silent == []
