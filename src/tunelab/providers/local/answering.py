"""The engine answering for the local provider: batches of chats, one streamed chat, and
fixed answers' log-likelihoods, all on models from the provider's `ModelCache`.

Structured outputs and tools (`Structure`, `structure`): a request's `response_format` and
forced tool calls become a grammar on the engine's generation; its tools are shown to the
model in its template's tool format, and calls are read back from the answers into
`Answer.tool_calls` (`finish_reason` "tool_calls"). A streamed answer that may call tools
holds its text back until it is whole, so no delta is ever a half-written call.

Every run holds its model's host (`LoadedModel.running`), so that LoRA adapters loaded into a
shared base, or evicted from it, never change the model in the middle of a run.

Batches run in chunks of a few engine batches, so that progress is reported and a cancel is
seen between chunks while each chunk still sorts its prompts by length for batching.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import tunelab.engine.generate as generation  # module attributes: tests stand in for them
import tunelab.engine.score as scoring
from tunelab.engine.grammar import Constraint
from tunelab.engine.tool_format import ToolFormat, grammar, parse
from tunelab.errors import check_cancel, usage_error
from tunelab.providers.base import ChatOptions, ChatStream
from tunelab.providers.local.model_cache import LoadedModel
from tunelab.types import Answer, AnswerScore

Progress = Callable[[int], None]  # called with the number of items just finished
# Rows per batched generation. On CPU larger batches keep paying off: 96 TREC prompts with
# SmolLM2 took 20.8 s at 16, 17.4 s at 32 and 16.5 s at 48 (2026-11-22, 2 cores, fp32).
BATCH_SIZE = 48
CHUNK_BATCHES = 4  # batches between progress reports and cancel checks


@dataclass(frozen=True)
class Structure:
    """A request's tools (as JSON text: hashable, so requests with the same tools batch
    together) and whether its answers are read for tool calls."""

    tools_json: str = ""
    reads_calls: bool = False

    @property
    def tools(self) -> list[dict] | None:
        return json.loads(self.tools_json) if self.tools_json else None

    def finish(self, tokenizer, answer: Answer) -> Answer:
        """`answer` with the tool calls it makes (its text then what it said besides)."""
        if not self.reads_calls or answer.finish_reason != "stop":
            return answer
        text, calls = parse(ToolFormat.of(tokenizer), answer.text)
        if not calls:
            return answer
        return replace(answer, text=text, tool_calls=tuple(calls), finish_reason="tool_calls")


NO_STRUCTURE = Structure()


def structure(options: ChatOptions, tokenizer) -> tuple[Structure, Constraint | None]:
    """The request's tools and the grammar its answers follow (None: free)."""
    if options.grammar is not None:
        if options.structured or options.tools:
            raise usage_error(
                "invalid_grammar", "a grammar cannot be combined with response_format or tools"
            )
        return Structure(), Constraint.lark(options.grammar)
    if options.structured:
        return Structure(), _format_constraint(options.response_format or {})
    if not options.tools:
        return Structure(), None
    tools = list(options.tools)
    choice = options.tool_choice or "auto"
    reads = Structure(json.dumps(tools), reads_calls=choice != "none")
    if choice in ("auto", "none"):
        return reads, None
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        tools = [t for t in tools if t.get("function", {}).get("name") == name]
    form = ToolFormat.of(tokenizer)
    return reads, grammar(form, tools, parallel=options.parallel_tool_calls is not False)


def _format_constraint(response_format: dict) -> Constraint:
    if response_format.get("type") == "json_object":
        return Constraint("json_object")
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise usage_error("invalid_response_format", "json_schema needs a `schema` object")
    return Constraint.json_schema(schema)


def engine_stream(
    loaded: LoadedModel, messages: list[dict], structure: Structure = NO_STRUCTURE, **sampling
) -> ChatStream:
    """The engine's answer to `messages` as a provider's `ChatStream` (`sampling`: the
    engine's `stream_chat` settings)."""
    chat = generation.stream_chat(
        loaded.model, loaded.tokenizer, messages, tools=structure.tools, **sampling
    )

    def events() -> Generator[str, None, Answer]:
        began = time.perf_counter()
        with loaded.running() as (model, adapter):  # adapters come and go between runs
            chat.run_on(model, adapter)
            if structure.reads_calls:
                for _ in chat:
                    pass  # held back: the text may turn into a tool call
            else:
                yield from chat
        done = chat.completion
        assert done is not None, "the engine's stream ended without its completion"
        answer = streamed_answer(loaded, structure, done, time.perf_counter() - began)
        if structure.reads_calls and answer.text:
            yield answer.text
        return answer

    return ChatStream(events())


def streamed_answer(
    loaded: LoadedModel, structure: Structure, done: Answer, seconds: float
) -> Answer:
    """A streamed choice's whole answer (`done`: the engine's) as the local provider ends its
    stream: timed, named after its model, its tool calls read back."""
    answer = Answer(
        done.text,
        done.finish_reason,
        done.usage,
        seconds,
        model=loaded.info.name,
        logprobs=done.logprobs,
    )
    return structure.finish(loaded.tokenizer, answer)


def answer_chats(
    loaded: LoadedModel,
    conversations: list[list[dict]],
    *,
    progress: Progress | None = None,
    cancel=None,
    batch_size: int = BATCH_SIZE,
    tools: list[dict] | None = None,
    **sampling,
) -> list[Answer]:
    """One answer per conversation, in order, batched through the engine; with `tools`,
    each answer's calls read back as a chat's are; a `constraint` list holds one grammar per
    conversation."""
    reading = Structure(json.dumps(tools), reads_calls=True) if tools else NO_STRUCTURE
    answers: list[Answer] = []
    chunk = batch_size * CHUNK_BATCHES
    constraint = sampling.pop("constraint", None)
    for begin in range(0, len(conversations), chunk):
        check_cancel(cancel, answers)
        part = conversations[begin : begin + chunk]
        rows = constraint[begin : begin + chunk] if isinstance(constraint, list) else constraint
        with loaded.running() as (model, adapter):
            found = generation.generate(
                model,
                loaded.tokenizer,
                part,
                batch_size=batch_size,
                tools=tools,
                adapters=adapter,
                constraint=rows,
                **sampling,
            )
        answers += [reading.finish(loaded.tokenizer, answer) for answer in found]
        if progress is not None:
            progress(len(part))
    return answers


def score_chats(
    loaded: LoadedModel,
    conversations: list[list[dict]],
    answers: list[str],
    *,
    progress: Progress | None = None,
    cancel=None,
    batch_size: int = BATCH_SIZE,
) -> list[list[AnswerScore]]:
    """Each of `answers`' log-likelihood after each conversation: `[conversation][answer]`."""
    scores: list[list[AnswerScore]] = []
    chunk = batch_size * CHUNK_BATCHES
    for begin in range(0, len(conversations), chunk):
        check_cancel(cancel, scores)
        part = conversations[begin : begin + chunk]
        with loaded.running() as (model, adapter):
            scores += scoring.score_answers(
                model, loaded.tokenizer, part, answers, batch_size=batch_size, adapter=adapter
            )
        if progress is not None:
            progress(len(part))
    return scores
