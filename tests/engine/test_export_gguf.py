"""GGUF export: a merged Llama-shaped model that transformers' GGUF loader reads back with the
same logits, and an Ollama Modelfile carrying the chat template."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tiny import build_family_tokenizer, build_tokenizer, save_family_model
from tunelab.cli import main
from tunelab.engine import train
from tunelab.engine.export import export_model
from tunelab.engine.models import load_base, load_trained
from tunelab.engine.ollama import modelfile, role_wrappers
from tunelab.errors import TunelabError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]


def trained_run(tmp_path, base_dir, examples, fast_config, **changes):
    model, tokenizer, info = load_base(base_dir)
    output = tmp_path / "run"
    train(model, tokenizer, examples, None, fast_config(**changes), output, base_model=info.name)
    return output


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def check_gguf_matches_merged(run, export_dir, atol):
    merged, tokenizer, _ = load_trained(run, merge=True, device="cpu")
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])

    loaded = AutoModelForCausalLM.from_pretrained(export_dir, gguf_file="model.gguf")
    assert torch.allclose(logits(loaded, ids), logits(merged, ids), atol=atol)
    gguf_tokenizer = AutoTokenizer.from_pretrained(export_dir, gguf_file="model.gguf")
    assert gguf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert gguf_tokenizer.chat_template == tokenizer.chat_template


@pytest.fixture
def base_dir(tmp_path, tokenizer, make_model):
    directory = tmp_path / "tiny-base"
    make_model().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_lora_run_exports_to_gguf_that_loads_back_with_the_same_logits(
    tmp_path, base_dir, examples, fast_config
):
    run = trained_run(tmp_path, base_dir, examples, fast_config)

    result = export_model(run, tmp_path / "gguf", format="gguf", gguf_type="f32")

    assert result["format"] == "gguf" and result["merged"]
    # README: the model card, loss.svg: the curve it shows
    assert result["files"] == ["Modelfile", "README.md", "loss.svg", "model.gguf"]
    check_gguf_matches_merged(run, tmp_path / "gguf", atol=1e-4)


def test_an_f16_export_of_an_untied_llama3_model_with_its_template(tmp_path, examples, fast_config):
    base = save_family_model("llama3", tmp_path / "llama3")
    run = trained_run(tmp_path, base, examples, fast_config, method="full", n_epochs=1)

    assert main(["export", str(run), "--format", "gguf", "--output", str(tmp_path / "out")]) == 0

    check_gguf_matches_merged(run, tmp_path / "out", atol=2e-2)
    text = (tmp_path / "out/Modelfile").read_text()
    assert text.startswith('FROM ./model.gguf\nTEMPLATE """')
    assert "<|start_header_id|>user<|end_header_id|>\n\n{{ .Content }}<|eot_id|>" in text
    assert 'PARAMETER stop "<|eot_id|>"' in text


def test_the_modelfile_template_renders_like_the_jinja_template():
    tokenizer = build_tokenizer()
    wrappers = role_wrappers(tokenizer)
    conversation = [*CHAT, {"role": "assistant", "content": "Paris"}, CHAT[1]]

    for messages in (conversation, conversation[1:]):
        expected = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert wrappers.render(messages, True) == expected
    text = modelfile(tokenizer, "model.gguf")
    assert "{{ .Content }}<|im_end|>\n" in text and 'PARAMETER stop "<|im_end|>"' in text
    # No system message: the template's default system prompt is written first.
    assert "You are a helpful assistant." in wrappers.head


def test_a_template_that_is_not_role_by_role_leaves_the_template_to_the_gguf():
    tokenizer = build_family_tokenizer("gemma3")  # folds the system prompt into the first turn

    text = modelfile(tokenizer, "model.gguf")

    assert "TEMPLATE" not in text and "Ollama reads the one in the GGUF" in text
    assert 'PARAMETER stop "<end_of_turn>"' in text


def test_unsupported_gguf_exports_fail_with_a_hint(tmp_path, examples, fast_config):
    qwen = save_family_model("qwen3", tmp_path / "qwen3")
    run = trained_run(tmp_path, qwen, examples, fast_config, max_steps=1)

    with pytest.raises(TunelabError) as caught:
        export_model(run, tmp_path / "out", format="gguf")
    assert caught.value.code == "gguf_architecture_unsupported"
    assert "convert_hf_to_gguf" in caught.value.hint
    assert not (tmp_path / "out").exists()
    with pytest.raises(TunelabError) as caught:
        export_model(run, tmp_path / "out", format="gguf", merge=False)
    assert caught.value.code == "gguf_needs_merge"


def gguf_tensor_types(path) -> dict[str, set[str]]:
    """The GGUF's tensor types read back with the `gguf` package: matrices' and vectors'."""
    from gguf import GGUFReader

    tensors = GGUFReader(path).tensors
    kinds: dict[str, set[str]] = {"matrices": set(), "vectors": set()}
    for tensor in tensors:
        shape = [int(n) for n in tensor.shape if int(n) > 1]
        kinds["matrices" if len(shape) > 1 else "vectors"].add(tensor.tensor_type.name)
    return kinds


@pytest.mark.parametrize(("flags", "written"), [((), "F16"), (("--gguf-type", "f32"), "F32")])
def test_a_gguf_export_says_the_precision_it_writes(
    tmp_path, base_dir, examples, fast_config, capsys, flags, written
):
    run = trained_run(tmp_path, base_dir, examples, fast_config)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["export", str(run), "--format", "gguf", "-o", str(out), *flags]) == 0

    said = capsys.readouterr().out
    assert f"GGUF model (LoRA merged into the base weights), {written.lower()}," in said
    assert "fp32" not in said
    assert gguf_tensor_types(out / "model.gguf") == {"matrices": {written}, "vectors": {"F32"}}
    assert f"weights in {written.lower()}" in (out / "README.md").read_text()
