"""A provider's identity is compared only inside the provider registry: everywhere else the
code asks a capability (`runs_here`, `trains_here`, `supports(...)`) instead.

Matching a record's provider against another record's or a caller's (grouping jobs by
provider, a price or a catalog entry for a given provider) is a lookup, not an identity
check: a provider field compared with a fixed name is one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tunelab"
REGISTRY = SRC / "providers" / "registry.py"
# Names that hold a provider's name, or this machine's.
PROVIDER_NAMES = {"THIS_MACHINE", "DEFAULT_PROVIDER", "LOCAL_PROVIDER", "PROVIDER", "this_machine"}
IDENTITY_IN_TEMPLATE = re.compile(
    r"(==|!=)\s*this_machine\b|\bthis_machine\s*(==|!=)"
    r"|\.provider\s*(==|!=)|(==|!=)\s*\w+\.provider\b|(==|!=)\s*[\"']local[\"']"
)


def names_a_provider(node: ast.expr) -> bool:
    """Whether `node` is a fixed provider name: a constant that holds one, or "local"."""
    if isinstance(node, ast.Name):
        return node.id in PROVIDER_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in PROVIDER_NAMES
    return isinstance(node, ast.Constant) and node.value == "local"


def is_provider_field(node: ast.expr) -> bool:
    """A record's provider: `x.provider` or `x["provider"]`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "provider"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "provider"
    return False


def compares_identity(operands: list[ast.expr]) -> bool:
    if any(names_a_provider(x) for x in operands):
        return True
    literal = any(isinstance(x, ast.Constant) and isinstance(x.value, str) for x in operands)
    return literal and any(is_provider_field(x) for x in operands)


def identity_checks(source: str) -> list[int]:
    """The lines of `source` that compare a provider's name with `==` or `!=`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        equalities = [op for op in node.ops if isinstance(op, ast.Eq | ast.NotEq)]
        if equalities and compares_identity([node.left, *node.comparators]):
            lines.append(node.lineno)
    return lines


def offending_python() -> list[str]:
    return [
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        if path != REGISTRY
        for line in identity_checks(path.read_text())
    ]


def offending_templates() -> list[str]:
    return [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if IDENTITY_IN_TEMPLATE.search(line)
    ]


def test_no_code_outside_the_registry_compares_provider_names():
    assert offending_python() == []


def test_no_template_compares_provider_names():
    assert offending_templates() == []


def test_the_scan_sees_each_kind_of_identity_check():
    source = (
        "a = job.provider == THIS_MACHINE\n"
        "b = row['provider'] != 'openai'\n"
        "c = name == 'local'\n"
        "d = spec.provider != local.PROVIDER\n"
        "e = job.runs_here and spec.template == 'openai'\n"
        "f = [j for j in jobs if j.provider == name]\n"
    )
    assert identity_checks(source) == [1, 2, 3, 4]
    assert IDENTITY_IN_TEMPLATE.search("{% if job.provider == this_machine %}")
    assert IDENTITY_IN_TEMPLATE.search("{% if m.provider != 'local' %}")
    assert not IDENTITY_IN_TEMPLATE.search("{% if job.runs_here %}")
