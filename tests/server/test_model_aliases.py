"""Model aliases: after a migration, an application that still names the old OpenAI `ft:`
model is answered by its replacement once the user says so (`tunelab models alias OLD NEW`),
through the unmodified `openai` SDK against the served app; the alias is listed by
`models list`, `/v1/models` and the studio, and refused when it names no model."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi.testclient import TestClient

from server.conftest import sdk
from tiny import save_tiny_model
from tunelab.cli import main
from tunelab.providers.resolve import resolve_chat_model
from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app

OLD = "ft:gpt-4o-mini-2024-07-18:acme:tickets:abc123"
NEW = "ft:tiny:local:tickets:def456"
BUNDLED = "smollm2-135m-instruct"


@pytest.fixture
def models(tmp_path):
    """The old OpenAI fine-tune (as `migrate openai inventory` records it) and its local
    replacement (as a migration job leaves it)."""
    directory = save_tiny_model(tmp_path / "tiny")
    with Store() as store:
        store.put_model(OLD, provider="openai", kind="fine-tuned", base_model="gpt-4o-mini")
        store.put_model(NEW, provider="local", kind="fine-tuned", path=str(directory))
    return directory


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def served() -> TestClient:
    """`tunelab serve` as it starts by default: only known models are served."""
    app = create_app(ServerConfig(allowed_hosts=("testserver",), start_worker=False))
    return TestClient(app)


def ask(api: openai.OpenAI, model: str) -> str:
    answer = api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    return answer.choices[0].message.content


def test_the_old_ft_name_is_answered_by_its_replacement_through_the_sdk(models, capsys):
    assert resolve_chat_model(OLD).provider == "openai"  # before: OpenAI would be asked
    code, out, _ = cli(capsys, "models", "alias", OLD, NEW)
    assert code == 0 and OLD in out and NEW in out

    with served() as client:
        api = sdk(client)
        assert ask(api, OLD) == ask(api, NEW)
        listed = {model.id: model for model in api.models.list()}
        assert listed[OLD].model_extra["tunelab"]["alias_of"] == NEW
        assert listed[OLD].owned_by == "local"
        assert [m.id for m in api.models.list()].count(OLD) == 1
        assert api.models.retrieve(OLD).id == OLD
        with pytest.raises(openai.PermissionDeniedError, match="alias"):
            api.models.delete(OLD)

    chat = resolve_chat_model(OLD)
    assert (chat.name, chat.provider, chat.model) == (OLD, "local", str(models))
    assert resolve_chat_model(OLD, follow_alias=False).provider == "openai"


def test_aliases_are_listed_replaced_and_removed(models, capsys):
    assert cli(capsys, "models", "alias", OLD, NEW)[0] == 0
    code, out, _ = cli(capsys, "models", "list", "--json")
    shown = {m["id"]: m for m in json.loads(out)["data"] if m["kind"] == "alias"}
    assert shown[OLD]["alias_of"] == NEW and shown[OLD]["provider"] == "local"
    code, out, _ = cli(capsys, "models", "list")
    assert "alias → " + NEW in out.replace("\n", "")

    assert cli(capsys, "models", "alias", OLD, BUNDLED)[0] == 0  # given again: replaced
    code, out, _ = cli(capsys, "models", "alias", "--json")
    assert [(a["alias"], a["target"]) for a in json.loads(out)["data"]] == [(OLD, BUNDLED)]
    assert resolve_chat_model(OLD).provider == "local"

    assert cli(capsys, "models", "alias", "--remove", OLD)[0] == 0
    code, out, _ = cli(capsys, "models", "alias")
    assert "no aliases" in out
    assert resolve_chat_model(OLD).provider == "openai"
    code, _, err = cli(capsys, "models", "alias", "--remove", OLD)
    assert code != 0 and "no alias" in err


def test_an_alias_to_an_unknown_model_or_of_a_base_model_is_refused(models, capsys):
    code, _, err = cli(capsys, "models", "alias", OLD, "ft:nothing:local:x:y")
    assert code == 2 and "no such model" in err
    code, _, err = cli(capsys, "models", "alias", BUNDLED, NEW)
    assert code == 2 and "base model" in err
    code, out, _ = cli(capsys, "models", "alias", "--json")
    assert json.loads(out)["data"] == []


def test_the_studio_shows_aliases(models, capsys):
    cli(capsys, "models", "alias", OLD, NEW)
    app = create_app(ServerConfig(start_worker=False))
    with TestClient(app, base_url="http://localhost") as client:
        page = client.get("/models").text
    assert 'id="model-aliases"' in page
    assert f"<code>{OLD}</code>" in page and f"<code>{NEW}</code>" in page
