"""Token counts per chat example, in batches, for the model a dataset will train.

Two counters, one interface (`count(conversations) -> Counts`):

- `BpeCounter` (hosted models): a bundled BPE encoding (quicktok, ids identical to tiktoken)
  and the message framing of the model's chat format. For OpenAI this is exactly the
  cookbook's `num_tokens_from_messages`: 3 tokens per message, the tokens of each string value
  (role, content, name), 1 more per name, 3 to prime the reply; assistant tokens are the
  tokens of assistant contents. For Together's Llama/Qwen models the framing of their chat
  templates is estimated, so those counts are approximate (`exact` is False).
- `ChatTemplateCounter` (local models): the model's own tokenizer and chat template, counts
  equal to `len(apply_chat_template(messages, tokenize=True))`. Jinja per example is slow, so
  ChatML templates (SmolLM2, Qwen) are rendered by a Python renderer that is checked against
  the template on probe conversations at load time; examples it cannot render, and templates
  it does not match, go through `apply_chat_template`. Assistant tokens are what training on
  assistant tokens trains on: each assistant content and the end-of-turn token after it.

Examples with tools: the local counter counts the text training renders
(`data.tool_text.render_chat`: the template's own tool format, or tunelab's default with
the tools described in the system prompt and calls as `<tool_call>` blocks, which count as
assistant tokens). The BPE counter adds each example's tool definitions as OpenAI's cookbook
estimates them (a few tokens per function and property plus the tokens of their names,
types, descriptions and enum values); OpenAI does not publish the exact rendering, so those
counts are approximate (`approximated` is set).

In both, assistant messages with `weight: 0` are not counted as assistant (trained) tokens.
Texts are tokenized in parallel native batches; they release the GIL, so the scanner can
parse the next batch meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeAlias

import numpy as np
import orjson
import quicktok

from tunelab.catalog import ModelSpec, tokenizer_dir
from tunelab.data.tokenizer_files import open_tokenizer_files
from tunelab.data.tool_text import ToolFormat, prompt_messages, render_chat, uses_tools
from tunelab.errors import TunelabError

# Special tokens of the OpenAI encodings and of ChatML: text containing them is either
# rejected or read as structure by some tokenizer, never as the plain text it looks like.
RESERVED_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|endofprompt|>",
)
MESSAGE_ROLES = ("system", "user", "assistant", "tool", "function")
_THREADS = max(1, min(os.cpu_count() or 1, 8))
# Distinct system prompts whose token counts are remembered (bounded: memory stays flat).
SYSTEM_CACHE_SIZE = 1024
# Each conversation's tool definitions, None where it declares none (or no list: none at all).
Tools: TypeAlias = "list[list[dict] | None] | None"


@dataclass
class Counts:
    """Per-conversation totals; `failures` maps a batch index to why it could not be counted."""

    total: np.ndarray
    assistant: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Framing:
    """Tokens a chat format adds around the texts of a conversation."""

    per_message: int
    per_example: int
    # End-of-turn tokens that are trained with each assistant message.
    assistant_end: int = 0
    # Tokens of the system turn the template adds when the first message is not a system one.
    default_system: int = 0
    per_name: int = 1


def _framing(template: str, encoding) -> Framing:
    def n(text: str) -> int:
        return len(encoding.encode(text, allowed_special="all"))

    if template == "openai":
        return Framing(per_message=3, per_example=3)
    # Llama 3.x: <|start_header_id|>role<|end_header_id|>\n\n content <|eot_id|>; the template
    # always opens with a system turn carrying a knowledge-date preamble.
    if template == "llama3":
        preamble = n("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
        return Framing(4, 1 + preamble, 1, default_system=4 + n("system"))
    # ChatML: <|im_start|>role\n content <|im_end|>\n
    if template == "qwen2.5":
        default = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        return Framing(4, 0, 1, default_system=4 + n("system") + n(default))
    if template == "qwen3":  # the final answer carries an empty thinking block
        return Framing(4, n("<think>\n\n</think>\n\n"), 1)
    raise ValueError(f"no framing for chat template {template!r}")


class BpeCounter:
    """Counts with a quicktok encoding and a chat format's framing."""

    def __init__(self, encoding_name: str, template: str) -> None:
        self.encoding = quicktok.get_encoding(encoding_name)
        self.name = encoding_name
        self.framing = _framing(template, self.encoding)
        self.exact = template == "openai"
        specials = set(self.encoding.special_tokens_set) | set(RESERVED_SPECIAL_TOKENS)
        self.special_tokens = tuple(sorted(specials))
        # Fixed tokens per message: the framing plus the role's tokens.
        self._message_tokens = {role: self._per_message(role) for role in MESSAGE_ROLES}
        self._system_counts: dict[str, int] = {}
        self._tool_counts: dict[str, int] = {}
        # Set once tool calls (as JSON text) or tool definitions (by OpenAI's cookbook) were
        # counted: the counts are then estimates.
        self.approximated = False

    def _per_message(self, role: str) -> int:
        return self.framing.per_message + len(self.encoding.encode_ordinary(role))

    def count(self, conversations: list[list[dict]], tools: Tools = None) -> Counts:
        return self.prepare(conversations, tools)()

    def prepare(self, conversations: list[list[dict]], tools: Tools = None) -> Callable[[], Counts]:
        """Collect the texts to tokenize (Python, on the caller's thread); the returned call
        tokenizes them (native, GIL released) and may run on another thread. `tools`: each
        conversation's tool definitions (None: none declared)."""
        framing, cache, per_message = self.framing, self._system_counts, self._message_tokens
        other, other_owners, trained, trained_owners = [], [], [], []
        # System prompts repeat across a dataset: each distinct one is tokenized once.
        new_systems: dict[str, list[int]] = {}
        fixed = []
        for i, messages in enumerate(conversations):
            total = framing.per_example + self._tool_tokens(tools[i] if tools else None)
            if framing.default_system and messages[0]["role"] != "system":
                total += framing.default_system
            for message in messages:
                role = message["role"]
                total += per_message.get(role) or self._per_message(role)
                content = message.get("content")
                if role == "assistant":
                    if content is not None and (len(message) == 2 or message.get("weight") != 0):
                        trained.append(content)
                        trained_owners.append(i)
                    elif content:
                        other.append(content)
                        other_owners.append(i)
                elif role == "system" and content:
                    known = cache.get(content)
                    if known is None:
                        new_systems.setdefault(content, []).append(i)
                    else:
                        total += known
                elif content:
                    other.append(content)
                    other_owners.append(i)
                if len(message) > 2:
                    total += self._extras(message, i, other, other_owners)
            fixed.append(total)
        texts = (other, other_owners, trained, trained_owners)
        return partial(self._finish, texts, new_systems, np.array(fixed, dtype=np.int64))

    def _tool_tokens(self, tools: list[dict] | None) -> int:
        """Tokens of the tool definitions, as OpenAI's cookbook estimates them; the same
        tools repeat across a dataset, so each distinct list is counted once."""
        if not tools:
            return 0
        self.approximated = True
        key = orjson.dumps(tools, option=orjson.OPT_SORT_KEYS).decode()
        known = self._tool_counts.get(key)
        if known is None:
            known = openai_tool_tokens(tools, self.encoding.encode_ordinary, self.name)
            if len(self._tool_counts) < SYSTEM_CACHE_SIZE:
                self._tool_counts[key] = known
        return known

    def _extras(self, message: dict, i: int, texts: list, owners: list) -> int:
        """Queue the other string values of a message (name, tool calls); return fixed tokens."""
        added = 0
        for key in ("name", "tool_call_id", "tool_calls", "function_call"):
            value = message.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                # Tool calls are counted as their JSON text: OpenAI does not publish their framing.
                value = orjson.dumps(value).decode()
                self.approximated = True
            texts.append(value)
            owners.append(i)
            if key == "name":
                added += self.framing.per_name
        return added

    def _finish(self, texts: tuple, new_systems: dict[str, list[int]], fixed) -> Counts:
        other, other_owners, trained, trained_owners = texts
        prompts = list(new_systems)
        everything = other + prompts + trained
        counts = (
            quicktok.count_batch(self.encoding, everything, threads=_THREADS)
            if everything
            else np.zeros(0, dtype=np.int64)
        )
        n, n_other, n_prompts = len(fixed), len(other), len(prompts)
        prompt_counts = counts[n_other : n_other + n_prompts].tolist()
        for prompt, count in zip(prompts, prompt_counts, strict=True):
            np.add.at(fixed, new_systems[prompt], count)
            if len(self._system_counts) < SYSTEM_CACHE_SIZE:
                self._system_counts[prompt] = count
        owners = np.asarray(trained_owners, dtype=np.int64)
        content = _sum_by_owner(owners, counts[n_other + n_prompts :], n)
        others = _sum_by_owner(np.asarray(other_owners, dtype=np.int64), counts[:n_other], n)
        assistant = content + np.bincount(owners, minlength=n) * self.framing.assistant_end
        return Counts(fixed + others + content, assistant)


def openai_tool_tokens(tools: list[dict], encode: Callable[[str], list], encoding: str) -> int:
    """OpenAI's tool definitions in prompt tokens, by the OpenAI cookbook's estimate
    (`num_tokens_for_tools`): per function 7 tokens (10 for cl100k models) and its
    `name:description`; per property 3 and its `name:type:description`, its enum values 3
    each (less 3 for the list); 3 where a function has properties, 12 after all."""
    function_start = 10 if encoding == "cl100k_base" else 7
    total = 12
    for function in (tool.get("function") or {} for tool in tools):
        total += function_start + len(encode(_tool_line(function.get("name"), function)))
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            total += 3
        for name, schema in properties.items():
            schema = schema if isinstance(schema, dict) else {}
            total += 3 + len(encode(_tool_line(f"{name}:{schema.get('type', '')}", schema)))
            if isinstance(schema.get("enum"), list):
                total += -3 + sum(3 + len(encode(str(v))) for v in schema["enum"])
    return total


def _tool_line(head: object, schema: dict) -> str:
    description = str(schema.get("description") or "").removesuffix(".")
    return f"{head}:{description}"


def _sum_by_owner(owners: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(owners, weights=counts, minlength=n).astype(np.int64)


# ----- local models: the Hugging Face tokenizer and chat template ------------------------

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_PROBES = (
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": " Hello!\n"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "\nand 3 + 3? "},
        {"role": "assistant", "content": "6"},
    ],
)
_PLAIN_ROLES = ("system", "user", "assistant")


def render_chatml(messages: list[dict], default_system: str | None) -> tuple[str, list]:
    """ChatML text and the character spans training on assistant tokens covers.

    Each span runs from the start of an assistant content to the end of its <|im_end|>.
    """
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    if default_system is not None and messages[0]["role"] != "system":
        parts.append(f"{_IM_START}system\n{default_system}{_IM_END}\n")
        position = len(parts[0])
    for message in messages:
        head = f"{_IM_START}{message['role']}\n"
        content = message["content"]
        if message["role"] == "assistant" and message.get("weight") != 0:
            start = position + len(head)
            spans.append((start, start + len(content) + len(_IM_END)))
        piece = f"{head}{content}{_IM_END}\n"
        parts.append(piece)
        position += len(piece)
    return "".join(parts), spans


class ChatTemplateCounter:
    """Exact counts with a local model's tokenizer and chat template."""

    def __init__(self, tokenizer, name: str) -> None:
        if not getattr(tokenizer, "is_fast", False) or not tokenizer.chat_template:
            raise TunelabError(
                "unsupported_tokenizer",
                f"the tokenizer of {name} is not a fast tokenizer with a chat template.",
                hint="save the model's tokenizer with tokenizers>=0.14 and a chat_template",
            )
        self.tokenizer = tokenizer
        self.backend = tokenizer.backend_tokenizer
        self.name = name
        self.exact = True
        self.approximated = False
        added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
        specials = set(added) | set(tokenizer.all_special_tokens) | set(RESERVED_SPECIAL_TOKENS)
        self.special_tokens = tuple(sorted(specials))
        self._end_tokens = tuple(sorted(set(added) | set(tokenizer.all_special_tokens)))
        self.chatml, self.default_system = self._detect_chatml()

    def _template(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _detect_chatml(self) -> tuple[bool, str | None]:
        """Whether the Python ChatML renderer reproduces the template, and its system default."""
        try:
            rendered = self._template(_PROBES[0])
            default = None
            prefix = f"{_IM_START}system\n"
            if rendered.startswith(prefix):
                default = rendered[len(prefix) : rendered.index(_IM_END)]
            same = all(render_chatml(p, default)[0] == self._template(p) for p in _PROBES)
        except Exception:  # any template error means: not plain ChatML, use the template
            return False, None
        return same, default

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> tuple[str, list]:
        """The rendered conversation and its assistant spans (see `render_chatml`)."""
        if uses_tools(messages, tools):
            return self._render_with_tools(messages, tools)
        if self.chatml and all(_plain(m) for m in messages):
            return render_chatml(messages, self.default_system)
        return self._locate(self._template(messages), messages)

    def _render_with_tools(self, messages: list[dict], tools: list[dict] | None):
        """The text training renders (`render_chat`), its spans located on the messages as
        the template got them: with the default format, calls are assistant text."""
        text = render_chat(self.tokenizer, messages, tools)
        shown = prompt_messages(ToolFormat.of(self.tokenizer), messages, tools or ())
        added = len(shown) - len(messages)  # the system turn describing the tools
        weighted = shown[:added] + [
            {**seen, "weight": message["weight"]} if "weight" in message else seen
            for seen, message in zip(shown[added:], messages, strict=True)
        ]
        return self._locate(text, weighted)

    def _locate(self, text: str, messages: list[dict]) -> tuple[str, list]:
        """`text` and the spans of its trained assistant contents (each to its end of turn)."""
        spans, cursor = [], 0
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str) or not content:
                continue
            start = text.find(content, cursor)
            if start < 0:
                continue
            cursor = end = start + len(content)
            ends_turn = next((t for t in self._end_tokens if text.startswith(t, end)), "")
            if message.get("role") == "assistant" and message.get("weight") != 0:
                spans.append((start, end + len(ends_turn)))
        return text, spans

    def count(self, conversations: list[list[dict]], tools: Tools = None) -> Counts:
        return self.prepare(conversations, tools)()

    def prepare(self, conversations: list[list[dict]], tools: Tools = None) -> Callable[[], Counts]:
        """Render the conversations now (with each one's `tools`); the returned call
        tokenizes them."""
        texts, all_spans, failures = [], [], {}
        for i, messages in enumerate(conversations):
            try:
                text, spans = self.render(messages, tools[i] if tools else None)
            except Exception as err:  # jinja raise_exception(): the template rejects it
                failures[i] = f"the chat template of {self.name} rejects this example: {err}"
                text, spans = "", []
            texts.append(text)
            all_spans.append(spans)
        return partial(self._finish, texts, all_spans, failures)

    def _finish(self, texts: list[str], all_spans: list, failures: dict) -> Counts:
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        total = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(texts))
        assistant = np.fromiter(
            (_tokens_in_spans(e, s) for e, s in zip(encodings, all_spans, strict=True)),
            dtype=np.int64,
            count=len(texts),
        )
        return Counts(total, assistant, failures)


def _plain(message: dict) -> bool:
    return (
        message["role"] in _PLAIN_ROLES
        and isinstance(message.get("content"), str)
        and all(key in ("role", "content", "weight") for key in message)
    )


def _tokens_in_spans(encoding, spans: list) -> int:
    """Tokens overlapping the character spans (tokens are contiguous in character order)."""
    n = 0
    for start, end in spans:
        first = encoding.char_to_token(start) if end > start else None
        last = encoding.char_to_token(end - 1) if end > start else None
        if first is None or last is None:
            n += sum(1 for a, b in encoding.offsets if a < end and b > start and b > a)
        else:
            n += last - first + 1
    return n


def load_counter(spec: ModelSpec) -> BpeCounter | ChatTemplateCounter:
    """The token counter for a model (loads its tokenizer)."""
    if spec.template != "hf":
        return BpeCounter(spec.tokenizer or "", spec.template)
    directory = tokenizer_dir(spec)
    files = open_tokenizer_files(directory)  # without transformers, hence without torch
    if files is not None:
        return ChatTemplateCounter(files, spec.name)
    # heavy: only for a template tokenizer_files cannot render
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise TunelabError(
            "tokenizer_load_failed",
            f"could not load the tokenizer in {directory}: {err}",
            hint="check that the directory holds a tokenizer saved with save_pretrained",
            path=directory,
        ) from err
    return ChatTemplateCounter(tokenizer, spec.name)
