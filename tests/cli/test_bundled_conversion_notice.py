"""`analyze`, `validate --model` and `train` say on stderr that the bundled tokenizer is being
converted before the silent half-minute it takes, and only when it has not happened yet."""

from __future__ import annotations

import orjson
import pytest

from tunelab import catalog
from tunelab.cli import main
from tunelab.errors import TunelabError

NOTICE = "converting the bundled model's tokenizer"
CHAT = {
    "messages": [
        {"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "content": "Lima."},
    ]
}


@pytest.fixture
def chat_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(orjson.dumps(CHAT) + b"\n")
    return path


@pytest.fixture
def conversion_stops(monkeypatch):
    """The conversion, when started, stops at once (the test needs its start, not its work)."""

    def stop(source, staging):
        raise TunelabError("conversion_stopped", "stopped by the test")

    monkeypatch.setattr(catalog, "_convert_bundled", stop)


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "{file}"],
        ["analyze", "{file}", "--json"],
        ["validate", "{file}", "-m", catalog.DEFAULT_MODEL],
        ["train", "--train", "{file}", "--output", "{file}.out"],
        ["train", "--train", "{file}", "--output", "{file}.out", "--dry-run"],
    ],
)
def test_the_conversion_is_announced_before_it_starts(capsys, chat_file, conversion_stops, argv):
    assert main([word.format(file=chat_file) for word in argv]) != 0
    err = capsys.readouterr().err
    assert NOTICE in err and "conversion_stopped" in err
    assert err.index(NOTICE) < err.index("conversion_stopped")


def test_nothing_is_announced_once_converted_or_for_other_models(isolated_home):
    assert catalog.converts_bundled_tokenizer(catalog.DEFAULT_MODEL)
    converted = isolated_home / "models" / catalog.DEFAULT_MODEL
    converted.mkdir(parents=True)
    (converted / "tokenizer_config.json").write_text("{}")
    assert not catalog.converts_bundled_tokenizer(catalog.DEFAULT_MODEL)
    assert not catalog.converts_bundled_tokenizer("gpt-4o-mini")
    assert not catalog.converts_bundled_tokenizer(None)
    assert not catalog.converts_bundled_tokenizer("no-such-model")
