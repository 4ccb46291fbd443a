"""A merged Llama-architecture model as one GGUF file, for llama.cpp and Ollama.

Written with the `gguf` package's writer, following llama.cpp's `convert_hf_to_gguf.py` for
Llama models (`LlamaModel`): the same metadata keys, the same tensor names, and the same
permutation of the query and key projections (llama.cpp applies rotary embeddings to adjacent
pairs of dimensions, Hugging Face to the two halves of each head). Llama 3.x, SmolLM2 and
Mistral are Llama-architecture models; other architectures are refused with a hint rather
than written wrong. The tokenizer must be a byte-level BPE (GPT-2 style, as Llama 3, SmolLM2
and Qwen use); its vocabulary, merges, special tokens and chat template go into the file.
Matrices are written as f16 (the converter's default) or f32; norms stay f32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tunelab.errors import TunelabError, usage_error

if TYPE_CHECKING:
    from transformers import PreTrainedModel

GGUF_TYPES = ("f16", "f32")
LLAMA_MODEL_TYPES = ("llama", "mistral")
# Hugging Face module names inside a Llama decoder layer → llama.cpp tensor names.
_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def write_gguf(model: PreTrainedModel, tokenizer, path: Path, gguf_type: str = "f16") -> None:
    """Write `model` (a plain, merged transformers Llama) and its tokenizer to `path`."""
    # gguf: loaded where it is used, so engine.config and light commands stay light
    import gguf

    config = model.config
    _check_supported(config, tokenizer, gguf_type)
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_hyperparameters(writer, config, gguf_type)
    _write_tokenizer(writer, tokenizer, config.vocab_size)
    for name, array in _tensors(model, config):
        if gguf_type == "f16" and array.ndim > 1:
            array = array.astype(np.float16)
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_supported(config, tokenizer, gguf_type: str) -> None:
    if gguf_type not in GGUF_TYPES:
        raise usage_error(
            "invalid_gguf_type",
            f"--gguf-type must be one of {', '.join(GGUF_TYPES)} (got {gguf_type!r}).",
        )
    if config.model_type not in LLAMA_MODEL_TYPES:
        raise TunelabError(
            "gguf_architecture_unsupported",
            f"GGUF export supports Llama-architecture models ({', '.join(LLAMA_MODEL_TYPES)}); "
            f"this model is {config.model_type!r}.",
            hint="export the merged model (--format hf) and convert it with llama.cpp's "
            "convert_hf_to_gguf.py",
        )
    if _tokenizer_model(tokenizer).get("type") != "BPE" or not _is_byte_level(tokenizer):
        raise TunelabError(
            "gguf_tokenizer_unsupported",
            "GGUF export supports byte-level BPE tokenizers (Llama 3, SmolLM2, Qwen); this "
            "model's tokenizer is another kind (e.g. SentencePiece).",
            hint="export the merged model (--format hf) and convert it with llama.cpp's "
            "convert_hf_to_gguf.py",
        )


def _write_hyperparameters(writer, config, gguf_type: str) -> None:
    # gguf: loaded where it is used, so engine.config and light commands stay light
    import gguf

    n_head = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.num_key_value_heads or n_head)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    scaling = _rope_scaling(config)
    if scaling.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def _rope_scaling(config) -> dict:
    scaling = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    scaling = dict(scaling or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("default", "linear", "llama3"):
        raise TunelabError(
            "gguf_rope_unsupported",
            f"GGUF export does not support the model's {kind!r} rotary-embedding scaling.",
            hint="export the merged model (--format hf) and convert it with llama.cpp",
        )
    return {**scaling, "rope_type": kind}


def _tensors(model: torch.nn.Module, config):
    """(llama.cpp name, float32 array) for every weight; q and k permuted for llama.cpp."""
    n_head = config.num_attention_heads
    n_kv = config.num_key_value_heads or n_head
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        target = _gguf_name(name)
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if target.endswith("attn_q.weight"):
            array = _permute(array, n_head, n_head)
        elif target.endswith("attn_k.weight"):
            array = _permute(array, n_head, n_kv)
        yield target, array
    factors = _llama3_rope_factors(config)
    if factors is not None:
        yield "rope_freqs.weight", factors


def _gguf_name(hf_name: str) -> str:
    if hf_name in _TOP_TENSORS:
        return _TOP_TENSORS[hf_name]
    parts = hf_name.split(".")  # model.layers.{i}.{module...}.weight
    if parts[:2] == ["model", "layers"]:
        module = ".".join(parts[3:-1])
        if module in _LAYER_TENSORS:
            return f"blk.{parts[2]}.{_LAYER_TENSORS[module]}.{parts[-1]}"
    raise TunelabError(
        "gguf_tensor_unknown",
        f"GGUF export does not know where the tensor {hf_name} goes.",
        hint="export the merged model (--format hf) and convert it with llama.cpp",
    )


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: interleave the two rotary halves of each head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    return (
        weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:])
        .swapaxes(1, 2)
        .reshape(shape)
    )


def _llama3_rope_factors(config) -> np.ndarray | None:
    """Llama 3.1's frequency-dependent rope scaling, as llama.cpp's converter stores it."""
    scaling = _rope_scaling(config)
    if scaling["rope_type"] != "llama3":
        return None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (_rope_theta(config) ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _tokenizer_json(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _tokenizer_model(tokenizer) -> dict:
    if not getattr(tokenizer, "is_fast", False):
        return {}
    return _tokenizer_json(tokenizer).get("model") or {}


def _is_byte_level(tokenizer) -> bool:
    return "ByteLevel" in json.dumps(_tokenizer_json(tokenizer).get("pre_tokenizer"))


def _write_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    tokens, types = _vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = _tokenizer_model(tokenizer).get("merges") or []
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for role, add in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("unk_token_id", writer.add_unk_token_id),
        ("pad_token_id", writer.add_pad_token_id),
    ):
        value = getattr(tokenizer, role, None)
        if value is not None:
            add(value)
    # A template that writes the BOS itself (Llama 3) expects it: llama.cpp adds it instead.
    template_bos = "bos_token" in (tokenizer.chat_template or "")
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False) or template_bos))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id with llama.cpp's token types; padded to the embedding's rows."""
    # gguf: loaded where it is used, so engine.config and light commands stay light
    from gguf import TokenType

    special = set(tokenizer.all_special_ids)
    added = {i: token for i, token in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for index, token in enumerate(tokenizer.convert_ids_to_tokens(range(len(tokenizer)))):
        tokens.append(token)
        if index in added:
            is_control = index in special or added[index].special
            types.append(TokenType.CONTROL if is_control else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        types.append(TokenType.UNUSED)
    return tokens, [int(t) for t in types]


def _pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's name for the pre-tokenizer (it picks the splitting regex by this name)."""
    pre = json.dumps(_tokenizer_json(tokenizer).get("pre_tokenizer"))
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in pre:
        return "llama-bpe"  # Llama 3's split pattern
    if '"individual_digits": true' in pre:
        return "smollm"  # digits one by one, then GPT-2's byte-level split
    return "gpt2"
