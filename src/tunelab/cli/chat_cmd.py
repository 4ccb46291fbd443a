"""`tunelab chat`: one streamed answer, or an interactive session with history.

Without a PROMPT the session reads one message per line from stdin until EOF or `/exit`,
so it works typed at a terminal or with input piped in. Greedy by default (`--temperature
0`): the same question gets the same answer, as in evaluation. With `--labels` (a
classification model) nothing is generated: the answer is the label whose answer, as
`tunelab format` trains it, is most likely (label scoring, as `eval classify` does). With
`--constrain query|schema` a model on this machine answers under the MongoDB query grammar
(as `eval queries --constrain` does), limited in schema mode to `--schema`'s collections.
"""

from __future__ import annotations

import sys

import click

from tunelab.cli import common
from tunelab.cli.options import (
    SAMPLING_SEED,
    choice_option,
    label_set,
    max_tokens_option,
    system_option,
    temperature_option,
)
from tunelab.data.prompts import ClassificationPrompt
from tunelab.evals.classify import label_picker
from tunelab.evals.mongo.grammar import CONSTRAIN_MODES, chat_grammar
from tunelab.providers.resolve import ChatModel, check_chat_model
from tunelab.types import Answer

EXIT_WORDS = ("/exit", "/quit")
RESET_WORD = "/reset"


@click.command("chat")
@click.argument("model")
@click.argument("prompt", required=False)
@system_option("System prompt at the start of the conversation.")
@max_tokens_option(512, "Most tokens in one answer.")
@temperature_option()
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Sample from the smallest set of tokens holding this much probability.",
)
@click.option("--stop", multiple=True, help="Stop the answer before this text (repeatable).")
@click.option("--seed", type=SAMPLING_SEED, help="Seed for sampling (with --temperature above 0).")
@click.option(
    "--labels",
    "label_list",
    help="Classification: answer with the most likely of these labels (A,B,C or a .labels.json "
    "file from `format`) instead of generating; the sampling flags then do not apply.",
)
@click.option("--output-tag", help="With --labels: tag around the label [default: category].")
@click.option("--bare-label", is_flag=True, help="With --labels: the model answers LABEL only.")
@choice_option(
    "--constrain",
    choices=list(CONSTRAIN_MODES),
    default="off",
    help="Answer under the MongoDB query grammar, so every finished answer parses: `query` "
    "(any names) or `schema` (--schema's collections, and a find's fields among its "
    "collection's). Models on this machine only.",
)
@click.option(
    "--schema",
    help="With --constrain schema: the collections and fields, as the queries data writes them "
    '("Collections: head(age, name); department(id)"). It limits the answer only: put it in '
    "the message too if the model was trained to read it there.",
)
def chat_cmd(
    model: str,
    prompt: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: tuple[str, ...],
    seed: int | None,
    label_list: str | None,
    output_tag: str | None,
    bare_label: bool,
    constrain: str,
    schema: str | None,
) -> int:
    """Chat with MODEL: a base model alias, a Hugging Face directory, a training output, any
    model the registry knows (`ft:...` names from `tunelab jobs`, on any provider),
    PROVIDER/MODEL (`openai/gpt-4o-mini`, `anthropic/...`) or MODEL@URL."""
    labels = label_set(label_list)
    if labels is not None and constrain != "off":
        raise click.UsageError("Can't provide both --labels and --constrain. Choose one.")
    grammar = chat_grammar(constrain, schema)  # a bad --schema fails before anything loads
    chat_model = check_chat_model(model)  # a bad name fails before anything loads
    history = [{"role": "system", "content": system}] if system else []
    settings = dict(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=list(stop), seed=seed
    )
    if grammar is not None:
        settings["grammar"] = grammar
    if chat_model.weights_here:  # loading them takes a while
        common.stderr.print(f"loading {model}…", highlight=False)
    name = chat_model.describe()
    if labels is not None:
        tag = {"output_tag": output_tag} if output_tag else {}
        answer_format = ClassificationPrompt(**tag, bare_label=bare_label)
        answer = label_answerer(label_picker(model, labels, answer_format), chat_model.model)
    else:
        answer = streamed_answerer(chat_model, settings)
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


def streamed_answerer(chat_model: ChatModel, settings: dict):
    """Answers written to stdout as they arrive, from whichever provider answers the model."""

    def answer(messages: list[dict]) -> Answer:
        stream = chat_model.stream(messages, **settings)
        for delta in stream:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if stream.result.finish_reason == "length":
            common.stderr.print(f"[dim](stopped at --max-tokens {settings['max_tokens']})[/]")
        return stream.result

    return answer


def label_answerer(pick, model_id: str):
    """Answers that are always one of the labels: the most likely one, printed as the model
    was trained to answer."""

    def answer(messages: list[dict]) -> Answer:
        row = pick(messages)
        sys.stdout.write(row["answer"] + "\n")
        sys.stdout.flush()
        return Answer(row["answer"], model=model_id)

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
