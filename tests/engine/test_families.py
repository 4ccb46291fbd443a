"""Any causal LM as base: Llama-3-, Qwen3- and Gemma-3-shaped models with their own templates.

The tiny models are built from configs and their tokenizers carry the families' real special
tokens and chat templates (tests/fixtures/chat_templates), none of which has `{% generation %}`
markers: assistant tokens are found by rendering prefixes and diffing.
"""

from __future__ import annotations

import json

import pytest

from tiny import END_OF_TURN, FAMILIES, QUESTIONS, save_family_model
from tunelab.data.analyze import analyze_file
from tunelab.data.example import ChatExample, chat
from tunelab.data.validate import validate_file
from tunelab.engine import TrainConfig, train
from tunelab.engine.dataset import IGNORE_INDEX, tokenize_examples
from tunelab.engine.models import load_base
from tunelab.errors import TunelabError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

CONVERSATION = ChatExample(
    (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Four"},
        {"role": "user", "content": "Who wrote Hamlet?"},
        {"role": "assistant", "content": "Shakespeare", "weight": 0},
        {"role": "user", "content": "What do bees make?"},
        {"role": "assistant", "content": "Honey"},
    )
)


@pytest.fixture(params=sorted(FAMILIES))
def family_dir(request, tmp_path):
    return request.param, save_family_model(request.param, tmp_path / request.param)


def trained_text(tokenizer, example) -> str:
    pairs = zip(example.input_ids, example.labels, strict=True)
    kept = [token for token, label in pairs if label != IGNORE_INDEX]
    return tokenizer.decode(kept)


def test_only_the_weighted_answers_and_their_end_of_turn_are_trained(family_dir):
    family, directory = family_dir
    _, tokenizer, _ = load_base(directory)
    [example] = tokenize_examples([CONVERSATION], tokenizer, 512).examples

    end = END_OF_TURN[family]
    # Qwen3's template gives the last answer an empty reasoning block, and so does its
    # generation at inference (enable_thinking=False): it is part of the answer.
    last = "<think>\n\n</think>\n\nHoney" if family == "qwen3" else "Honey"
    assert trained_text(tokenizer, example) == f"Four{end}{last}{end}"
    context = tokenizer.decode(example.input_ids)
    assert "Shakespeare" in context and "Be brief." in context


def test_each_family_trains_with_its_template_and_reloads(family_dir, tmp_path):
    family, directory = family_dir
    model, tokenizer, info = load_base(directory)
    examples = [chat(q, a) for q, a in QUESTIONS] + [CONVERSATION]
    settings = dict(
        n_epochs=4,
        batch_size=4,
        learning_rate=3e-2,
        lr_scheduler="constant",
        warmup_steps=0,
        precision="fp32",
        lora_rank=4,
        lora_dropout=0.0,
    )
    result = train(
        model,
        tokenizer,
        examples,
        None,
        TrainConfig(**settings),
        tmp_path / "run",
        base_model=info.name,
    )

    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/metrics.jsonl").open()]
    assert result.status == "succeeded" and result.dataset["train"]["n_examples"] == 13
    assert sum(losses[-3:]) < sum(losses[:3]), (family, losses)
    reloaded, _, trained_info = load_base(tmp_path / "run")
    assert reloaded.config.model_type == model.config.model_type
    assert trained_info.base_model == str(directory) and trained_info.context_length == 512


def test_context_length_comes_from_the_models_config(family_dir, tmp_path):
    _, directory = family_dir
    long_answer = " ".join(["capital of France"] * 200)
    data = tmp_path / "train.jsonl"
    rows = [chat(q, a) for q, a in QUESTIONS] + [chat("Say many words.", long_answer)]
    data.write_text("".join(json.dumps({"messages": list(e.messages)}) + "\n" for e in rows))

    analysis = analyze_file(data, model=str(directory))
    report = validate_file(data, model=str(directory))

    assert analysis.context_limit == 512 and analysis.n_over_context == 1
    assert "too_long" in {f.code for f in report.findings}


def test_a_multimodal_config_reads_its_text_models_context(tmp_path):
    from tunelab.catalog import model_context_length

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gemma3", "text_config": {"max_position_embeddings": 131072}})
    )
    assert model_context_length(tmp_path) == 131072


def test_remote_code_runs_only_when_trusted(tmp_path, monkeypatch):
    directory = save_family_model("llama3", tmp_path / "custom")
    config = json.loads((directory / "config.json").read_text())
    config.update(
        model_type="tunelab_custom",
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    )
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "configuration_custom.py").write_text(
        "from transformers import LlamaConfig\n\n\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'tunelab_custom'\n"
    )
    (directory / "modeling_custom.py").write_text(
        "from transformers import LlamaForCausalLM\n\n"
        "from .configuration_custom import CustomConfig\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )

    with pytest.raises(TunelabError) as refused:
        load_base(directory)
    assert refused.value.code == "remote_code_not_trusted"
    assert "--trust-remote-code" in refused.value.hint

    model, _, _ = load_base(directory, trust_remote_code=True)
    assert type(model).__name__ == "CustomForCausalLM"


def test_a_cached_hub_model_is_validated_against_its_own_context(family_dir, monkeypatch):
    from tunelab import catalog

    _, directory = family_dir
    monkeypatch.setattr(catalog, "cached_hub_snapshot", lambda name: directory)
    spec = catalog.resolve_model("someone/tiny-model")
    assert (spec.name, spec.context_limit) == ("someone/tiny-model", 512)
    monkeypatch.setattr(catalog, "cached_hub_snapshot", lambda name: None)
    with pytest.raises(TunelabError) as caught:
        catalog.resolve_model("someone/not-downloaded")
    assert caught.value.code == "unknown_model"


def test_a_shared_prompt_computed_once_gives_each_familys_own_loss(family_dir):
    """The batch's shared system prompt runs once through the family's attention (Gemma-3's
    sliding window included) and the loss is that of running every row whole."""
    from dataclasses import replace

    from tunelab.engine.dataset import collate
    from tunelab.engine.loss import token_loss

    _, directory = family_dir
    model, tokenizer, _ = load_base(directory)
    system = {"role": "system", "content": "Answer the question in one word only."}
    prompted = [
        ChatExample(
            (
                system,
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            )
        )
        for question, answer in QUESTIONS
    ]
    batch = collate(
        tokenize_examples(prompted, tokenizer, 512).examples, tokenizer.pad_token_id, "cpu"
    )
    assert batch.shared_prefix >= 8
    losses = []
    for each in (batch, replace(batch, shared_prefix=0)):
        model.zero_grad(set_to_none=True)
        loss, _ = token_loss(model, each)
        loss.backward()
        losses.append((float(loss.detach()), model.get_input_embeddings().weight.grad.clone()))
    (shared, shared_grad), (whole, whole_grad) = losses
    assert shared == pytest.approx(whole, rel=1e-5)
    scale = float(whole_grad.abs().max())
    # Up to summation order: the prefix's gradient is summed over the rows in another order.
    assert float((shared_grad - whole_grad).abs().max()) < 1e-4 * scale
