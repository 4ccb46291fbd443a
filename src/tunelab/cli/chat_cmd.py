"""`tunelab chat`: one streamed answer, or an interactive session with history.

Without a PROMPT the session reads one message per line from stdin until EOF or `/exit`,
so it works typed at a terminal or with input piped in. Greedy by default (`--temperature
0`): the same question gets the same answer, as in evaluation.
"""

from __future__ import annotations

import sys

import click

from tunelab.cli import common
from tunelab.engine.generate import Completion, stream_chat
from tunelab.engine.models import load_base
from tunelab.providers.jobs import get_provider
from tunelab.providers.models import chat_target

EXIT_WORDS = ("/exit", "/quit")
RESET_WORD = "/reset"


@click.command("chat")
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("--system", help="System prompt at the start of the conversation.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Most tokens in one answer.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Sampling temperature; 0 is greedy (deterministic).",
)
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Sample from the smallest set of tokens holding this much probability.",
)
@click.option("--stop", multiple=True, help="Stop the answer before this text (repeatable).")
@click.option("--seed", type=int, help="Seed for sampling (with --temperature above 0).")
def chat_cmd(
    model: str,
    prompt: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: tuple[str, ...],
    seed: int | None,
) -> int:
    """Chat with MODEL: a base model alias, a Hugging Face directory, a training output, or
    any model the registry knows (`ft:...` names from `tunelab jobs`, on any provider)."""
    target = chat_target(model)
    history = [{"role": "system", "content": system}] if system else []
    settings = dict(
        max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed
    )
    if target.provider == "local":
        common.stderr.print(f"loading {model}…", highlight=False)
        loaded, tokenizer, info = load_base(target.model)
        name = info.name
        answer = local_answerer(loaded, tokenizer, settings, max_tokens)
    else:
        name = f"{target.model} ({target.provider})"
        answer = hosted_answerer(target, settings)
    if prompt is not None:
        answer([*history, {"role": "user", "content": prompt}])
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        common.stderr.print(
            f"chatting with {name}: /exit or Ctrl-D to quit, {RESET_WORD} to start over",
            highlight=False,
        )
    run_session(history, answer, interactive)
    return 0


def local_answerer(loaded, tokenizer, settings: dict, max_tokens: int):
    """Answers from the engine, streamed to stdout as they are generated."""

    def answer(messages: list[dict]) -> Completion:
        stream = stream_chat(loaded, tokenizer, messages, **settings)
        for delta in stream:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if stream.completion.finish_reason == "length":
            common.stderr.print(f"[dim](stopped at --max-tokens {max_tokens})[/]")
        return stream.completion

    return answer


def hosted_answerer(target, settings: dict):
    """Answers from a hosted provider (Together, OpenAI or an OpenAI-compatible URL)."""
    provider = get_provider(target.provider, base_url=target.base_url)

    def answer(messages: list[dict]):
        result = provider.chat(
            target.model,
            messages,
            max_tokens=settings["max_new_tokens"],
            temperature=settings["temperature"],
            top_p=settings["top_p"],
            stop=list(settings["stop"]) or None,
            seed=settings["seed"],
        )
        sys.stdout.write(result.text + "\n")
        sys.stdout.flush()
        return result

    return answer


def run_session(history: list[dict], answer, interactive: bool) -> None:
    """Read messages line by line; each answer joins the history the next one sees."""
    start = list(history)
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            return
        text = line.strip()
        if text in EXIT_WORDS:
            return
        if text == RESET_WORD:
            history[:] = start
            continue
        if not text:
            continue
        asked = [*history, {"role": "user", "content": line}]
        try:
            completion = answer(asked)
        except KeyboardInterrupt:  # stop this answer, keep the session
            common.stderr.print("\n(interrupted)")
            continue
        history[:] = [*asked, {"role": "assistant", "content": completion.text}]
