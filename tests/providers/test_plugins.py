"""A third-party provider installed as a plugin: its models show in `models list`, and
`chat` and `eval` reach it, through the `tunelab.providers` entry-point group alone."""

from __future__ import annotations

import textwrap

import orjson
import pytest

from tunelab.cli import main
from tunelab.providers import registry

PLUGIN = """
from tunelab.types import Answer, Usage
from tunelab.providers.provider import CHAT, ModelEntry, Provider


class EchoProvider(Provider):
    name = "echo"
    title = "Echo"
    capabilities = frozenset({CHAT})

    @classmethod
    def models(cls):
        return [ModelEntry("echo-1", cls.name, description="says the question back")]

    @classmethod
    def owns(cls, name):
        return name if name.startswith("echo-") else None

    def chat(self, model, messages, **options):
        question = messages[-1]["content"]
        return Answer(f"{model} heard: {question}", "stop", Usage(len(question), 3), model=model)


def register_providers(register):
    register(EchoProvider)
"""


@pytest.fixture
def echo_plugin(tmp_path, monkeypatch):
    """A distribution on sys.path, declared the way `pip install` would declare it."""
    site = tmp_path / "site"
    (site / "tunelab_echo").mkdir(parents=True)
    (site / "tunelab_echo" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "tunelab_echo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tunelab-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tunelab.providers]\necho = tunelab_echo\n")
    monkeypatch.syspath_prepend(str(site))
    registry.reload_providers()
    yield
    registry.reload_providers()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_plugin_provider_is_listed_chats_and_is_evaluated(echo_plugin, tmp_path, capsys):
    code, out, err = cli(capsys, "models", "list", "--json")
    assert code == 0, err
    assert ("echo-1", "echo") in [(m["id"], m["provider"]) for m in orjson.loads(out)["data"]]
    code, out, _ = cli(capsys, "providers", "list", "--json")
    echo = next(p for p in orjson.loads(out)["providers"] if p["name"] == "echo")
    assert echo["capabilities"] == ["chat"]

    code, out, err = cli(capsys, "chat", "echo-1", "anyone there?")
    assert code == 0, err
    assert out == "echo-1 heard: anyone there?\n"
    assert cli(capsys, "chat", "echo/echo-2", "hi")[1] == "echo-2 heard: hi\n"

    table = tmp_path / "q.tsv"
    table.write_text("text\tlabel\nWho wrote Hamlet?\tHUM\nWhere is Lima?\tLOC\n")
    code, out, err = cli(
        capsys, "eval", "classify", "--data", str(table), "--model", "echo-1", "--json"
    )
    assert code == 0, err
    assert orjson.loads(out)["models"]["echo-1"]["n"] == 2


def test_a_broken_plugin_does_not_take_tunelab_down(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    info = site / "tunelab_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tunelab-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tunelab.providers]\nbroken = no_such_module\n")
    monkeypatch.syspath_prepend(str(site))
    registry.reload_providers()
    try:
        assert "local" in registry.provider_names()
        assert "broken" not in registry.provider_names()
    finally:
        registry.reload_providers()
