"""Batched chat generation with a KV cache: what chat, evaluation and the server run.

The tokens that every prompt of a call starts with (system prompt, instruction, label list)
are computed once (`PrefixCache`) and each batch starts from a copy of their KV cache.

Prompts are the model's chat template with the generation prompt. A batch is left-padded
(position ids count real tokens only, so a padded row computes what it would alone), and a
row that finishes (EOS, a stop string, its token limit) leaves the batch: its cache rows are
dropped, so a long answer does not make the short ones cost steps. Conversations are batched
by prompt length to keep padding small. Greedy decoding gives the same tokens batched or one
by one (tested); sampling is reproducible for a given seed and batch.

Each row may carry its own `logit_bias` (added to its logits before sampling, so one batch
holds requests with different biases), and answers may carry each token's log-probability
and the most likely tokens at its position (`tunelab.engine.logprobs`: the raw logits'
log-probabilities, before the bias, temperature and top-p). Each row may also follow a
grammar (`tunelab.engine.grammar`: a JSON Schema, any JSON object, a tool call): the tokens it
forbids are masked before sampling, so the answer always parses.

Each row may also name its LoRA adapter (`adapters`), for a peft model holding several: one
batch then runs many fine-tunes of one base over one copy of its weights, peft applying each
row's adapter to that row only (`adapter_names` on every forward pass; `BASE_ROW` for the base
alone). The shared prefix's KV cache depends on the adapter, so it is computed once per
adapter of the call.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

import torch
from transformers import DynamicCache

from tunelab import cores
from tunelab.data.tool_text import render_chat
from tunelab.engine.grammar import Constraint, RowGrammars, check_constraint
from tunelab.engine.kv_merge import decode_cache, join_caches, joinable, trim_unused
from tunelab.engine.logprobs import MAX_TOP_LOGPROBS, TokenTexts, bias_matrix, token_logprobs
from tunelab.errors import TunelabError, usage_error
from tunelab.types import Answer, TextDelta, TokenLogprob, Usage

Conversation = Sequence[dict]
LogitBias = Mapping[int, float]  # token id → what is added to its logit (-100 bans it)
# The peft adapter of every row, or one for all (None: the model as it is, no adapter named).
Adapters = str | Sequence[str] | None
BASE_ROW = "__base__"  # peft's name for a row that uses no adapter
MAX_LOGIT_BIAS = 100.0


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Each token's log-probability and this many most likely tokens (None: no log-probs).
    logprobs: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) for every row
    constraint: Constraint | None = None  # the grammar every row's answer follows

    def check(self) -> None:
        problems = []
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            problems.append(f"top logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
        if any(token < 0 or abs(bias) > MAX_LOGIT_BIAS for token, bias in self.logit_bias):
            problems.append("logit_bias takes token ids ≥ 0 and biases between -100 and 100")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            problems.append(f"max tokens must be an integer ≥ 1 (got {self.max_new_tokens!r})")
        if not 0 <= self.temperature <= 100:
            problems.append(f"temperature must be between 0 and 100 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be > 0 and ≤ 1 (got {self.top_p})")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append("stop sequences must be non-empty strings")
        if problems:
            raise usage_error("invalid_generation_settings", "; ".join(problems))
        if self.constraint is not None:
            check_constraint(self.constraint)


def generate(
    model: torch.nn.Module,
    tokenizer,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    batch_size: int = 16,
    prefix_cache: bool = True,
    logprobs: int | None = None,
    logit_bias: LogitBias | Sequence[LogitBias] | None = None,
    constraint: Constraint | Sequence[Constraint | None] | None = None,
    tools: Sequence[dict] | None = None,
    adapters: Adapters = None,
) -> list[Answer]:
    """One completion per conversation (a list of chat messages), in the given order.

    With `prefix_cache`, the tokens every prompt starts with (system prompt, instruction,
    label list) are computed once and their KV cache reused by every batch. `logprobs`:
    each answer carries its tokens' log-probabilities and that many most likely tokens at
    each position. `logit_bias`: one for every conversation, or a list of one each;
    `constraint` (the grammar an answer follows) likewise. `tools`: OpenAI's tool
    definitions, shown to the model as its chat template (or `data.tool_text`'s default) says.
    `adapters`: the LoRA adapter (loaded into a peft `model`) that answers each conversation,
    or one for all.
    """
    row_adapters = row_adapter_names(adapters, len(conversations))
    row_biases = _row_biases(logit_bias, len(conversations))
    row_constraints = _row_constraints(constraint, len(conversations))
    sampling = _sampling(max_new_tokens, temperature, top_p, stop, seed, logprobs)
    if batch_size < 1:
        raise usage_error("invalid_generation_settings", "batch_size must be ≥ 1")
    prompts = [encode_chat(tokenizer, conversation, tools) for conversation in conversations]
    generator = _generator(sampling.seed, model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    completions: dict[int, Answer] = {}
    with cores.computing():
        prefix = PrefixCache.of(model, prompts, row_adapters) if prefix_cache else None
        for begin in range(0, len(order), batch_size):
            group = order[begin : begin + batch_size]
            biases = [row_biases[i] for i in group]
            grammars = [row_constraints[i] for i in group]
            names = None if row_adapters is None else [row_adapters[i] for i in group]
            steps = _decode(
                model,
                tokenizer,
                [prompts[i] for i in group],
                sampling,
                generator,
                prefix,
                biases,
                grammars,
                adapters=names,
            )
            rows = deque(steps, maxlen=1)[0]  # the rows after the last step
            for index, row in zip(group, rows, strict=True):
                completions[index] = row.completion()
    return [completions[index] for index in range(len(prompts))]


@dataclass(frozen=True)
class SampledAnswer:
    """An answer as token ids, exactly as sampled (the end of turn included where the answer
    stopped on it), with its text: what reinforcement training trains on and grades."""

    tokens: tuple[int, ...]
    text: str
    finish_reason: str


def sample_answers(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_length: int | None = None,
    on_token: Callable[[int], None] | None = None,
) -> list[SampledAnswer]:
    """One answer per tokenized prompt, all decoded in one batch: rows that repeat a prompt
    (a group of samples) or share its beginning start from one prefix cache. `max_length`
    caps each row's prompt and answer together (default: the model's context).
    `on_token(finished)` is called after every token with the number of answers finished;
    what it raises (a cancelled training run's check) stops the sampling there."""
    sampling = _sampling(max_new_tokens, temperature, 1.0, None, seed)
    rows_in = [list(prompt) for prompt in prompts]
    generator = _generator(seed, model)
    with cores.computing():
        prefix = PrefixCache.of(model, rows_in)
        steps = _decode(
            model, tokenizer, rows_in, sampling, generator, prefix, max_length=max_length
        )
        # `_decode` is a generator: stopped early, it still puts the model back in training.
        with contextlib.closing(cast(Generator, steps)):
            for rows in steps:
                if on_token is not None:
                    on_token(sum(row.finish_reason is not None for row in rows))
    return [
        SampledAnswer(tuple(row.tokens), row.text, row.finish_reason or "length") for row in rows
    ]


class ChatStream:
    """Iterate for the answer's text deltas; `completion` holds the whole once iterated.

    Text that might be the start of a stop string, or half of a multi-byte character, is held
    back until the next tokens decide it, so no delta is ever taken back. With log-probs, each
    delta carries those of the tokens generated since the previous one (`TextDelta`), and a
    last delta with no text carries those of tokens that added none (the end of turn).
    """

    def __init__(
        self,
        model,
        tokenizer,
        messages: Conversation,
        sampling: Sampling,
        tools=None,
        adapter: str | None = None,
    ) -> None:
        self._model, self._tokenizer, self._sampling = model, tokenizer, sampling
        self._adapters = None if adapter is None else [adapter]
        self._prompt = encode_chat(tokenizer, messages, tools)
        self.completion: Answer | None = None

    def run_on(self, model: torch.nn.Module, adapter: str | None) -> ChatStream:
        """Run on `model` with `adapter` instead: for a model shared by several adapters,
        which model object and adapter name answer is only settled when the run starts."""
        self._model, self._adapters = model, None if adapter is None else [adapter]
        return self

    def __iter__(self) -> Iterator[str]:
        cursor = StreamCursor(self._sampling.stop)
        generator = _generator(self._sampling.seed, self._model)
        biases = [dict(self._sampling.logit_bias)]
        with cores.computing():
            for rows in _decode(
                self._model,
                self._tokenizer,
                [self._prompt],
                self._sampling,
                generator,
                None,
                biases,
                [self._sampling.constraint],
                adapters=self._adapters,
            ):
                row = rows[0]
                delta = cursor.delta(row)
                if delta is not None:
                    yield delta
        self.completion = row.completion()


class StreamCursor:
    """How much of a streamed row has been sent: each `delta` is what may be sent next.

    Text that might be the start of a stop string, or half of a multi-byte character, is held
    back until the next tokens decide it, so no delta is ever taken back."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = stop
        self.sent = self.given = 0  # characters sent; tokens whose log-probs were sent

    def delta(self, row: _Row) -> TextDelta | None:
        """The text (and log-probs) the row settled since the last delta, or None."""
        done = row.finish_reason is not None
        end = len(row.text) if done else _settled(row.text, self.stop)
        if end > self.sent or (done and row.logprobs is not None and self.given < len(row.tokens)):
            logprobs = None if row.logprobs is None else tuple(row.logprobs[self.given :])
            delta = TextDelta(row.text[self.sent : end], logprobs)
            self.sent, self.given = end, len(row.tokens)
            return delta
        return None


def stream_chat(
    model: torch.nn.Module,
    tokenizer,
    messages: Conversation,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    logprobs: int | None = None,
    logit_bias: LogitBias | Sequence[tuple[int, float]] | None = None,
    constraint: Constraint | None = None,
    tools: Sequence[dict] | None = None,
    adapter: str | None = None,
) -> ChatStream:
    """The answer to one conversation as it is generated (see `ChatStream`); `adapter`: the
    LoRA adapter of a peft `model` that answers."""
    sampling = _sampling(
        max_new_tokens, temperature, top_p, stop, seed, logprobs, logit_bias, constraint
    )
    return ChatStream(model, tokenizer, messages, sampling, tools, adapter)


def encode_chat(
    tokenizer, messages: Conversation, tools: Sequence[dict] | None = None
) -> list[int]:
    """Token ids of the chat-templated conversation, ending with the assistant's header.

    With `tools`, or messages with tool calls or results, the conversation is rendered in the
    template's tool format (`tunelab.data.tool_text`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunelabError(
            "no_chat_template",
            "the model's tokenizer has no chat template, so it cannot chat.",
            hint="use an instruct/chat model, or add a chat_template to its tokenizer_config.json",
        )
    try:
        text = render_chat(tokenizer, messages, tools, add_generation_prompt=True)
    except Exception as err:  # jinja2 errors, or templates that raise on purpose
        raise TunelabError(
            "chat_template_error",
            f"the model's chat template cannot render this conversation: {err}",
            hint="check the messages' roles and contents",
        ) from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _sampling(
    max_new_tokens, temperature, top_p, stop, seed, logprobs=None, logit_bias=None, constraint=None
) -> Sampling:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    # A mapping, or (token, bias) pairs as `Sampling` holds them.
    bias = tuple(
        sorted((int(token), float(value)) for token, value in dict(logit_bias or {}).items())
    )
    sampling = Sampling(
        max_new_tokens, float(temperature), float(top_p), stops, seed, logprobs, bias, constraint
    )
    sampling.check()
    return sampling


def row_adapter_names(adapters: Adapters, rows: int) -> list[str] | None:
    """Each conversation's adapter name, or None where no adapter is named."""
    if adapters is None:
        return None
    if isinstance(adapters, str):
        return [adapters] * rows
    names = list(adapters)
    if len(names) != rows:
        raise usage_error(
            "invalid_generation_settings", f"{len(names)} adapters for {rows} conversations"
        )
    return names


def _row_biases(
    logit_bias: LogitBias | Sequence[LogitBias] | None, rows: int
) -> list[dict[int, float]]:
    """Each conversation's logit bias (checked as `Sampling` checks one)."""
    if logit_bias is None or isinstance(logit_bias, Mapping):
        biases = [dict(logit_bias or {})] * rows
    else:
        biases = [dict(bias) for bias in logit_bias]
        if len(biases) != rows:
            raise usage_error(
                "invalid_generation_settings",
                f"{len(biases)} logit biases for {rows} conversations",
            )
    for bias in {tuple(sorted(b.items())) for b in biases}:
        Sampling(logit_bias=bias).check()
    return biases


def _row_constraints(
    constraint: Constraint | Sequence[Constraint | None] | None, rows: int
) -> list[Constraint | None]:
    """Each conversation's grammar (None: free), each checked to compile."""
    if constraint is None or isinstance(constraint, Constraint):
        constraints: list[Constraint | None] = [constraint] * rows
    else:
        constraints = list(constraint)
        if len(constraints) != rows:
            raise usage_error(
                "invalid_generation_settings",
                f"{len(constraints)} grammars for {rows} conversations",
            )
    for each in {c for c in constraints if c is not None}:
        check_constraint(each)
    return constraints


def _generator(seed: int | None, model: torch.nn.Module) -> torch.Generator:
    generator = torch.Generator(device=_device(model))
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Detokenizer(Protocol):
    """What a row being generated needs of its tokenizer: token ids back to text."""

    def decode(
        self, token_ids: list[int], *, skip_special_tokens: bool, clean_up_tokenization_spaces: bool
    ) -> str: ...


@runtime_checkable
class WrapsModel(Protocol):
    """A wrapper (peft's PeftModel) around the model whose forward computes the logits."""

    def get_base_model(self) -> torch.nn.Module: ...


@dataclass
class _Row:
    """One sequence being generated: its tokens, its text so far, why it stopped."""

    tokenizer: Detokenizer
    prompt_tokens: int
    limit: int
    eos_ids: frozenset[int]
    stop: tuple[str, ...]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None  # one per token, when asked for

    def add(self, token: int, logprob: TokenLogprob | None = None) -> None:
        self.tokens.append(token)
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        if token in self.eos_ids:
            self.finish_reason = "stop"
            return
        # No clean-up of spaces: it may rewrite text already streamed (" 's" → "'s").
        self.text = self.tokenizer.decode(
            self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        cuts = [at for at in (self.text.find(s) for s in self.stop) if at >= 0]
        if cuts:
            self.text = self.text[: min(cuts)]
            self.finish_reason = "stop"
        elif len(self.tokens) >= self.limit:
            self.finish_reason = "length"

    def completion(self) -> Answer:
        """The answer, its `finish_reason` "stop" (EOS or a stop string) or "length"."""
        usage = Usage(self.prompt_tokens, len(self.tokens))
        logprobs = None if self.logprobs is None else tuple(self.logprobs)
        return Answer(self.text, self.finish_reason or "length", usage, logprobs=logprobs)


def _settled(text: str, stops: tuple[str, ...]) -> int:
    """How much of an unfinished answer's text cannot change any more."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # a character whose last bytes are still to come
        end -= 1
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), held, -1):
            if text[end - size : end] == stop[:size]:
                held = size
                break
    return end - held


def _decode(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[list[int]],
    sampling: Sampling,
    generator: torch.Generator,
    prefix: PrefixCache | None = None,
    biases: list[dict[int, float]] | None = None,
    constraints: list[Constraint | None] | None = None,
    max_length: int | None = None,
    adapters: list[str] | None = None,
) -> Iterator[list[_Row]]:
    """Generate for a batch of prompts (`biases`: each row's logit bias; `constraints`: each
    row's grammar; `max_length`: a limit on prompt and answer below the model's context;
    `adapters`: each row's adapter); yields every row after each new token."""
    session = DecodeSession(model, tokenizer, max_length)
    group = session.add(prompts, sampling, generator, prefix, biases, constraints, adapters)
    was_training = model.training
    model.eval()  # no dropout while generating, even in the middle of a training run
    try:
        while not group.done:
            session.step()
            yield group.rows
    finally:
        model.train(was_training)


@dataclass(eq=False)
class DecodeGroup:
    """Rows that joined a `DecodeSession` together (one call, one request): their sampling
    settings, random generator, logit biases and grammars, and which of them still decode."""

    rows: list[_Row]
    sampling: Sampling
    generator: torch.Generator
    bias: torch.Tensor | None
    grammars: RowGrammars
    active: list[int]  # indices of the rows still decoding, in the batch's order
    owner: object = None  # whoever added the rows (a server's request)

    @property
    def done(self) -> bool:
        return not self.active

    def advance(self, logits: torch.Tensor, texts: TokenTexts | None) -> list[int]:
        """Choose and write each active row's next token from its line of `logits`."""
        biased = logits if self.bias is None else logits + self.bias[self.active]
        tokens = _pick(self.grammars.mask(biased, self.active), self.sampling, self.generator)
        tokens = self.grammars.settle(self.active, tokens)
        chosen: list[TokenLogprob | None] = [None] * len(tokens)
        if texts is not None and self.sampling.logprobs is not None:
            # From the raw logits: the model's own probabilities.
            chosen = list(token_logprobs(logits, tokens, self.sampling.logprobs, texts))
        for index, token, logprob in zip(self.active, tokens, chosen, strict=True):
            row = self.rows[index]
            row.add(token, logprob)
            self.grammars.advance(index, token)
            if self.grammars.finished(index) and row.finish_reason != "stop":
                row.finish_reason = "stop"  # complete, on its last token too
        return tokens


class DecodeSession:
    """One decode batch that rows join and leave between steps: every generation runs in one.

    `add` registers a group's prompts; the next `step` prefills every group added since the
    last one in one forward pass (from the cache of the tokens they all start with, when
    groups added apart share enough of them) and joins them to the running batch once
    (`KVBatch.join`). `step` then gives every active row its next token, each group sampling
    with its own settings and generator, and rows that finish leave at once. A call's rows
    form one group (`_decode`); a server adds each request as it arrives (iteration-level,
    or continuous, batching). Positions count each row's real tokens, so a row computes what
    it would alone, whoever its batch mates are.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        context = getattr(model.config, "max_position_embeddings", None)
        if max_length is not None:
            context = max_length if context is None else min(context, max_length)
        self.context = context
        self.eos_ids = _eos_ids(model, tokenizer)
        self.groups: list[DecodeGroup] = []  # those with active rows, in the batch's order
        self._texts: TokenTexts | None = None
        self._batch: KVBatch | None = None
        self._logits: torch.Tensor | None = None  # each active row's next-token logits
        self._pending: list[_Prefill] = []  # groups added since the last step, in order
        self._vocabulary: int | None = None

    @property
    def rows(self) -> int:
        """Active rows (those waiting for their prefill included)."""
        return sum(len(group.active) for group in self.groups)

    @property
    def vocabulary(self) -> int:
        """The width of the model's logits: the rows of its output embeddings."""
        if self._vocabulary is None:
            model = cast(Any, self.model)  # a transformers model (or a peft wrapper of one)
            weight = getattr(model.get_output_embeddings(), "weight", None)
            size = weight.shape[0] if weight is not None else model.config.vocab_size
            self._vocabulary = int(size)
        return self._vocabulary

    def joinable(self) -> bool:
        """Whether more rows can join now (a sliding-window cache cannot be joined)."""
        return self._batch is None or joinable(self._batch.cache)

    def use(self, model: torch.nn.Module, adapters: list[str] | None) -> None:
        """Run the next steps on `model`, the active rows naming `adapters` (in batch order):
        a shared base may have been wrapped by peft, or adapters loaded back, meanwhile."""
        self.model = model
        # The rows already in the batch come first, then those of the groups to prefill.
        start = 0 if self._logits is None else self._logits.shape[0]
        if self._batch is not None:
            self._batch.model = model
            self._batch.adapters = None if adapters is None else adapters[:start]
        for entry in self._pending:
            end = start + len(entry.prompts)
            entry.adapters = None if adapters is None else adapters[start:end]
            start = end

    def add(
        self,
        prompts: list[list[int]],
        sampling: Sampling,
        generator: torch.Generator | None = None,
        prefix: PrefixCache | None = None,
        biases: list[dict[int, float]] | None = None,
        constraints: list[Constraint | None] | None = None,
        adapters: list[str] | None = None,
        owner: object = None,
    ) -> DecodeGroup:
        """Add `prompts` as a group (`generator`: None for a new one from `sampling.seed`).
        They are prefilled at the next `step` (or `prefill`), in one forward pass with every
        group added since the last step, and get their first token in that step. Settings a
        request can get wrong (a prompt over the context, a bias or grammar that cannot apply)
        are refused here, for this group alone."""
        rows = [self._row(prompt, sampling) for prompt in prompts]
        limits = [row.limit for row in rows]
        grammars = RowGrammars(
            self.tokenizer, constraints or [None] * len(rows), self.vocabulary, limits
        )
        bias = _bias(biases or [{} for _ in rows], self.vocabulary, _device(self.model))
        generator = generator or _generator(sampling.seed, self.model)
        group = DecodeGroup(rows, sampling, generator, bias, grammars, list(range(len(rows))))
        group.owner = owner
        if sampling.logprobs is not None and self._texts is None:
            self._texts = TokenTexts(self.tokenizer)
        self.groups.append(group)
        self._pending.append(_Prefill(group, prompts, prefix, adapters))
        return group

    def prefill(self) -> None:
        """Run the prompts of the groups added since the last step, all in one forward pass,
        and join them to the batch: their next-token logits are then ready to sample."""
        if not self._pending:
            return
        prompts = [prompt for entry in self._pending for prompt in entry.prompts]
        adapters = _joined_adapters([entry.adapters for entry in self._pending])
        batch = KVBatch(self.model, _pad_id(self.tokenizer), adapters)
        was_training = self.model.training
        self.model.eval()  # no dropout: the cache must be what decoding would compute
        try:
            logits = batch.start(prompts, self._prefix(prompts, adapters))
        finally:
            self.model.train(was_training)
        self._pending = []
        if self._batch is None or self._logits is None:
            self._batch, self._logits = batch, logits
        else:
            self._batch.join(batch)
            self._logits = torch.cat([self._logits, logits])

    def _prefix(self, prompts: list[list[int]], adapters: list[str] | None) -> PrefixCache | None:
        """The prefix cache the pending rows start from: their call's own, or, for groups
        added apart (a server's requests), the one of the tokens they all start with."""
        first = self._pending[0].prefix
        shared = first is not None and all(entry.prefix is first for entry in self._pending)
        if len(self._pending) == 1 or shared:
            return first
        return PrefixCache.of(self.model, prompts, adapters)

    def step(self) -> list[DecodeGroup]:
        """Give every active row its next token; rows that finished leave the batch. Returns
        the groups stepped (those now `done` have left the session)."""
        self.prefill()
        assert self._logits is not None, "step() on a session with no active rows"
        stepped, tokens, keep, offset = self.groups, [], [], 0
        for group in stepped:
            count = len(group.active)
            chosen = group.advance(self._logits[offset : offset + count], self._texts)
            for k, (index, token) in enumerate(zip(group.active, chosen, strict=True)):
                if group.rows[index].finish_reason is None:
                    keep.append(offset + k)
                    tokens.append(token)
            group.active = [i for i in group.active if group.rows[i].finish_reason is None]
            offset += count
        self.groups = [group for group in stepped if group.active]
        if not keep:
            self._batch = self._logits = None
            return stepped
        _rebalance()
        assert self._batch is not None
        self._logits = self._batch.step(tokens, keep)
        return stepped

    def drop(self, group: DecodeGroup) -> None:
        """Stop decoding `group`'s rows (its client went away): they leave the batch now."""
        if group not in self.groups:
            return
        waiting = [entry for entry in self._pending if entry.group is not group]
        if len(waiting) < len(self._pending):  # not prefilled yet: nothing to take out
            self._pending = waiting
        elif self._batch is not None and self._logits is not None:
            offset = 0
            for other in self.groups:
                if other is group:
                    break
                offset += len(other.active)
            gone = range(offset, offset + len(group.active))
            keep = [k for k in range(self._logits.shape[0]) if k not in gone]
            if keep:
                self._batch.select(keep)
                self._logits = self._logits[keep]
            else:
                self._batch = self._logits = None
        group.active = []
        self.groups = [other for other in self.groups if other is not group]

    def _row(self, prompt: list[int], sampling: Sampling) -> _Row:
        room = sampling.max_new_tokens if self.context is None else self.context - len(prompt)
        if room < 1 or not prompt:
            raise TunelabError(
                "prompt_too_long",
                f"the prompt is {len(prompt)} tokens; the model's context is {self.context}.",
                hint="shorten the conversation or the system prompt",
            )
        limit = min(sampling.max_new_tokens, room)
        row = _Row(self.tokenizer, len(prompt), limit, self.eos_ids, sampling.stop)
        row.logprobs = None if sampling.logprobs is None else []
        return row


def _bias(
    biases: list[dict[int, float]], vocabulary: int, device: torch.device
) -> torch.Tensor | None:
    """The rows' logit biases as one matrix, refusing token ids outside the vocabulary."""
    wrong = sorted({token for bias in biases for token in bias if not 0 <= token < vocabulary})
    if wrong:
        raise usage_error(
            "invalid_generation_settings",
            f"logit_bias names token ids the model does not have: {wrong[:5]} "
            f"(its vocabulary is {vocabulary} tokens).",
        )
    return bias_matrix(biases, vocabulary, device)


@dataclass(eq=False)
class _Prefill:
    """A group added to a session and not yet prefilled: its prompts and how to start them."""

    group: DecodeGroup
    prompts: list[list[int]]
    prefix: PrefixCache | None
    adapters: list[str] | None


def _joined_adapters(adapters: list[list[str] | None]) -> list[str] | None:
    """The adapters of groups prefilled together, in order (None: no group names any)."""
    if all(names is None for names in adapters):
        return None
    if any(names is None for names in adapters):
        raise ValueError("rows naming adapters cannot join rows that name none")
    return [name for names in adapters if names is not None for name in names]


class PrefixCache:
    """The KV cache of the tokens that every prompt of a call starts with, computed once.

    Each batch gets its own copy, repeated to the batch's rows, so decoding never changes
    the original. Attention is causal, so a prefix's keys and values do not depend on what
    follows it: a batch that starts from them computes what it would compute whole. With
    `adapters`, the prefix is computed once for each of them (one row each), since an adapter
    changes the keys and values; a batch's rows then start from their own adapter's row.
    """

    MIN_TOKENS = 8  # below this, a separate forward pass costs more than it saves

    def __init__(
        self, model: torch.nn.Module, tokens: list[int], adapters: list[str] | None = None
    ) -> None:
        self.tokens = tokens
        self.adapters = None if adapters is None else sorted(set(adapters))
        self.cache, self.device = decode_cache(), _device(model)
        was_training = model.training
        model.eval()  # no dropout: the cache must be what decoding would compute
        try:
            with torch.inference_mode():
                ids = torch.tensor([tokens] * len(self.adapters or [None]), device=self.device)
                cache = {cache_keyword(model): self.cache}
                named = adapter_keywords(self.adapters)
                keep = last_position(ids)
                model(input_ids=ids, use_cache=True, logits_to_keep=keep, **cache, **named)
        finally:
            model.train(was_training)

    @classmethod
    def of(
        cls, model: torch.nn.Module, prompts: list[list[int]], adapters: list[str] | None = None
    ) -> PrefixCache | None:
        """The shared prefix of `prompts` (at least one token of each left out), or None;
        `adapters`: each prompt's adapter."""
        length = shared_prefix_length(prompts)
        if len(prompts) < 2 or length < cls.MIN_TOKENS:
            return None
        return cls(model, prompts[0][:length], adapters)

    def __len__(self) -> int:
        return len(self.tokens)

    def covers(self, adapters: list[str] | None) -> bool:
        """Whether rows of these adapters can start from this prefix."""
        if self.adapters is None or adapters is None:
            return self.adapters is None and adapters is None
        return set(adapters) <= set(self.adapters)

    def copy_for(self, rows: int, adapters: list[str] | None = None) -> DynamicCache:
        """A copy for a batch of `rows` rows (`adapters`: each row's, as the prefix has them)."""
        cache = copy.deepcopy(self.cache)
        if self.adapters is None or adapters is None:
            cache.batch_repeat_interleave(rows)
        else:
            where = [self.adapters.index(name) for name in adapters]
            cache.batch_select_indices(torch.tensor(where, device=self.device))
        return cache


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens that every prompt starts with, leaving each prompt at least one of its own."""
    if not prompts:
        return 0
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


class KVBatch:
    """The model's state for a batch of prompts: KV cache, attention mask, positions.

    Rows are left-padded; after a shared prefix the padding sits between the prefix and each
    row's own tokens. Positions count real tokens only, so a padded row computes what it
    would alone.
    """

    # Set by `start`, which every batch begins with: each row's attention mask and the
    # position ids of its last tokens.
    mask: torch.Tensor
    positions: torch.Tensor

    def __init__(
        self, model: torch.nn.Module, pad_id: int, adapters: list[str] | None = None
    ) -> None:
        self.model, self.pad_id, self.device = model, pad_id, _device(model)
        self.adapters = adapters  # each row's adapter (None: the model as it is)
        self.cache = decode_cache()
        self.cache_keyword = cache_keyword(model)

    @torch.inference_mode()
    def start(self, prompts: list[list[int]], prefix: PrefixCache | None = None) -> torch.Tensor:
        """Run the prompts; returns each row's next-token logits."""
        if prefix is not None and (
            any(p[: len(prefix)] != prefix.tokens for p in prompts)
            or not prefix.covers(self.adapters)
        ):
            prefix = None  # not these prompts' prefix (or it covers a whole prompt)
        shared = len(prefix) if prefix is not None else 0
        own = [prompt[shared:] for prompt in prompts]
        width = max(len(p) for p in own)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, tokens in enumerate(own):
            ids[row, width - len(tokens) :] = torch.tensor(tokens)
            mask[row, shared + width - len(tokens) :] = 1
        self.mask = mask.to(self.device)
        if prefix is not None:
            self.cache = prefix.copy_for(len(prompts), self.adapters)
        # Left padding must not shift positions: each row's first real token is position 0.
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        return self._forward(ids.to(self.device), self.positions)

    @torch.inference_mode()
    def step(self, tokens: list[int], keep: list[int]) -> torch.Tensor:
        """Feed each kept row (`keep`: indices of the rows staying) its token; returns each
        row's next-token logits."""
        if len(keep) < self.mask.shape[0]:
            self.select(keep)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(keep), 1))], dim=-1)
        self.positions = self.positions[:, -1:] + 1
        ids = torch.tensor(tokens, device=self.device)[:, None]
        return self._forward(ids, self.positions)

    @torch.inference_mode()
    def select(self, keep: list[int]) -> None:
        """Keep only the rows `keep` (indices), dropping the cache positions no row needs."""
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        self.mask = trim_unused(self.cache, self.mask)
        if self.adapters is not None:
            self.adapters = [self.adapters[k] for k in keep]

    def join(self, other: KVBatch) -> None:
        """Append `other`'s rows (started, not yet stepped past this batch) to this batch's,
        as if they had been started together: each row computes what it would alone."""
        if (self.adapters is None) != (other.adapters is None):
            raise ValueError("rows naming adapters cannot join rows that name none")
        self.mask = join_caches(self.cache, self.mask, other.cache, other.mask)
        self.positions = torch.cat([self.positions[:, -1:], other.positions[:, -1:]])
        if self.adapters is not None and other.adapters is not None:
            self.adapters = [*self.adapters, *other.adapters]

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        output = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            **{self.cache_keyword: self.cache},
            logits_to_keep=last_position(ids),  # the vocabulary is wide
            **adapter_keywords(self.adapters),
        )
        return output.logits[:, -1].float()


def last_position(ids: torch.Tensor) -> int | torch.Tensor:
    """`logits_to_keep` for only the last position's logits. Over several positions, an index
    tensor rather than the count 1: transformers slices the hidden states with it, and the
    last position sliced from a longer sequence is not contiguous, which under bf16 autocast
    on the CPU sends the output head through a batched matmul that copies its weight for
    every row (905 MB for 16 rows of SmolLM2: a third of sampling a group's answers); an
    index tensor gathers a contiguous copy of the hidden states instead."""
    width = ids.shape[1]
    return 1 if width == 1 else torch.tensor([width - 1], device=ids.device)


def adapter_keywords(adapters: list[str] | None) -> dict:
    """The forward pass's keyword naming each row's adapter (none when no adapter is named)."""
    return {} if adapters is None else {"adapter_names": list(adapters)}


def cache_keyword(model: torch.nn.Module) -> str:
    """`cache`, the keyword recent transformers take the KV cache by, or `past_key_values`
    where the model's forward has no `cache` (older transformers, where it is the only one)."""
    base = model.get_base_model() if isinstance(model, WrapsModel) else model
    parameters = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@torch.inference_mode()
def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> list[int]:
    """The next token of each row: argmax, or a sample from the top-p nucleus."""
    if sampling.temperature == 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest set of top tokens whose mass reaches top_p (always the first).
        outside = sorted_probs.cumsum(-1) - sorted_probs >= sampling.top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).tolist()


def _rebalance() -> None:
    """Keep to this process's share of the cores while generating (see tunelab/cores.py)."""
    share = cores.current_share()
    if share is not None:
        share.rebalance()


def _eos_ids(model: torch.nn.Module, tokenizer) -> frozenset[int]:
    ids = set()
    config = getattr(model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            return value
    return 0
