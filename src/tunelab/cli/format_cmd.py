"""`tunelab format`: a source → OpenAI chat JSONL, split into training and validation files."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from tunelab.cli.common import print_json, stderr, stdout
from tunelab.cli.options import (
    AliasedOption,
    FilePath,
    json_option,
    source_flags,
    source_options,
)
from tunelab.cli.render import render_format_report
from tunelab.data.formatter import TARGETS, format_dataset
from tunelab.data.prompts import DEFAULT_INSTRUCTION, SHORT_INSTRUCTION
from tunelab.data.reinforcement import REFERENCE_FIELD
from tunelab.data.sources import DatabasePreview, SourceOptions, preview_conversations
from tunelab.data.sources.detect import is_sqlite
from tunelab.data.sources.query_pairs import DEFAULT_SYSTEM as QUERIES_SYSTEM
from tunelab.data.sources.tables import DEFAULT_SYSTEM as CLASSIFICATION_SYSTEM
from tunelab.evals.preference_pairs import pairs_from_run, write_pairs
from tunelab.io import check_output_path

HELP = f"""Convert SOURCE into OpenAI chat JSONL and split it into training and validation files.

\b
Kinds (--kind; detected from the file when omitted, and the detection is printed):
  queries         question → query pairs (JSON array, JSONL, CSV); fields from
                  --question-field/--answer-field or detected (question/query, nl/mql,
                  input/output, text/sql, ...). Object answers become compact JSON.
  classification  CSV/TSV with --text-column (text) and --label-column (label)
  conversations   SQLite database of conversations and messages (see below)
  chat            {{"messages": [...]}} lines, normalised
  alpaca          instruction / input / output
  sharegpt        conversations: [{{from, value}}, ...]
  completion      prompt / completion

\b
System prompt (--system, "" for none). Defaults:
  queries         "{QUERIES_SYSTEM}"
                  (the SQL wording when the answer field is named *sql*)
  classification  "{CLASSIFICATION_SYSTEM}"
  others          the source's own system messages, if any

\b
Classification user message: the instruction ("{DEFAULT_INSTRUCTION}"),
how to answer, the sorted categories inside <categories>, the text inside <text>;
the answer is <category>LABEL</category>, or LABEL with --bare-label.
--template short leaves the categories out (instruction "{SHORT_INSTRUCTION}" unless given):
shorter prompts when the label list is long; the label set is written beside each output
(train.jsonl → train.labels.json), where `tunelab eval classify` finds it.

\b
Conversation databases, default schema (map other names with the flags below):
  conversations(id, system_prompt, created_at)
  messages(id, conversation_id, role, content, position)
Messages are ordered by --order-column (default: position, else created_at, else id).
Conversations without an assistant message are skipped. The database is opened read-only.

\b
Split: exact duplicates are removed; --train-ratio of each label goes to training (every
label with 2+ examples appears in both files; a single example goes to training).
--val-output defaults to the train name with "train" replaced by "val" (train.jsonl →
val.jsonl), or with ".val" added (out.jsonl → out.val.jsonl). --train-ratio 1.0 writes no
validation file. Nothing is written when any record is bad.

\b
--to reinforcement writes reinforcement items instead: the messages before each answer,
and the answer as the item field --reference-field (reference_answer), plus `label` for
classification, for a grader to read as {{{{item.reference_answer}}}}.

\b
--to preference --from-eval RUN_ID writes preference (DPO) pairs instead, with no SOURCE
and no split: each item a model of an `eval classify` or `eval queries` run got wrong, its
gold answer preferred and the model's answer not, the prompt re-read from the run's data
file (which must be unchanged).
"""


@click.command("format", help=HELP)
@click.argument("source", type=FilePath, required=False)
@click.option(
    "--train-output",
    "-o",
    "--output",
    "train_output",
    type=FilePath,
    cls=AliasedOption,
    aliases=("--output",),
    help="Training JSONL to write (required).",
)
@click.option("--val-output", type=FilePath, help="Validation JSONL to write.")
@click.option(
    "--train-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.8,
    show_default=True,
    help="Share of each label for training.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Shuffle seed.")
@click.option(
    "--to",
    "to",
    type=click.Choice((*TARGETS, "preference")),
    default="chat",
    show_default=True,
    help="chat: supervised examples; reinforcement: each prompt, its answer kept as an item "
    "field for the grader (--reference-field); preference: pairs from an evaluation run's "
    "wrong answers (--from-eval).",
)
@click.option(
    "--from-eval",
    "eval_run",
    help="--to preference: the evaluation run (classify or queries) whose wrong answers "
    "become non-preferred, each under its item's gold answer.",
)
@click.option(
    "--reference-field",
    default=REFERENCE_FIELD,
    show_default=True,
    help="--to reinforcement: the item field that keeps the answer ({{item.NAME}}).",
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@json_option("Print the report as JSON.")
@source_flags
@click.option(
    "--preview", is_flag=True, help="Conversations: show what the database holds; write nothing."
)
def format_cmd(source: Path, **flags) -> int:
    options = source_options(flags)
    if flags["preview"]:
        return _preview(source, options, flags["as_json"])
    if flags["train_output"] is None:
        raise click.UsageError("Missing option '--train-output'.")
    if flags["to"] == "preference" or flags["eval_run"]:
        return _pairs_from_eval(source, flags)
    if source is None:
        raise click.UsageError("Missing argument 'SOURCE'.")
    columns = (SpinnerColumn(), TextColumn("read {task.completed:,} examples"))
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("format", total=None)
        report = format_dataset(
            source,
            flags["train_output"],
            flags["val_output"],
            kind=flags["kind"],
            options=options,
            train_ratio=flags["train_ratio"],
            seed=flags["seed"],
            force=flags["force"],
            progress=lambda n: bar.update(task, completed=n),
            to=flags["to"],
            reference_field=flags["reference_field"],
        )
    if flags["as_json"]:
        print_json(report.to_dict())
    else:
        render_format_report(report)
    return 0


def _pairs_from_eval(source: Path | None, flags: dict) -> int:
    """`--to preference --from-eval RUN_ID`: one file of pairs, no split."""
    if flags["to"] != "preference" or not flags["eval_run"]:
        raise click.UsageError("--to preference and --from-eval RUN_ID go together.")
    if source is not None:
        raise click.UsageError("Can't provide both SOURCE and --from-eval. Choose one.")
    if flags["val_output"] is not None:
        raise click.UsageError("--from-eval writes one file (--output): drop --val-output.")
    output = flags["train_output"]
    check_output_path(output, force=flags["force"])
    found = pairs_from_run(flags["eval_run"])
    write_pairs(output, found.pairs, force=flags["force"])
    summary = {
        "run": found.run_id,
        "output": str(output),
        "n_pairs": len(found.pairs),
        "n_answers": found.n_answers,
        "n_wrong": found.n_wrong,
        "n_left_out": found.n_left_out,
    }
    if flags["as_json"]:
        print_json(summary)
        return 0
    stdout.print(
        f"[green]✓[/] {len(found.pairs):,} preference pair(s) from {found.n_wrong:,} wrong "
        f"answer(s) of {found.n_answers:,} in {escape(found.run_id)} → {escape(str(output))}",
        highlight=False,
    )
    if found.n_left_out:
        stdout.print(f"{found.n_left_out:,} left out: empty, or the gold answer itself")
    return 0


def _preview(source: Path, options: SourceOptions, as_json: bool) -> int:
    if not is_sqlite(source):
        raise click.UsageError("--preview applies to SQLite conversation databases only.")
    preview = preview_conversations(source, options.schema, options.system)
    if as_json:
        print_json(preview.to_dict())
    else:
        _render_preview(preview)
    return 0 if preview.schema_problem is None else 1


def _render_preview(preview: DatabasePreview) -> None:
    tables = Table("table", "rows", "columns", title=escape(preview.path), title_justify="left")
    for table in preview.tables:
        tables.add_row(
            escape(table["name"]), f"{table['rows']:,}", escape(", ".join(table["columns"]))
        )
    stdout.print(tables)
    if preview.schema_problem:
        stdout.print(f"[yellow]schema:[/] {escape(preview.schema_problem)}", highlight=False)
        stdout.print("  map the tables and columns with --messages-table, --role-column, ...")
        return
    per = preview.messages_per_conversation
    stdout.print(
        f"{preview.n_conversations:,} conversations, {preview.n_messages:,} messages "
        f"(per conversation: min {per.get('min', 0)}, mean {per.get('mean', 0)}, "
        f"max {per.get('max', 0)})",
        highlight=False,
    )
    roles = ", ".join(f"{role} {n:,}" for role, n in preview.roles.items())
    stdout.print(f"roles: {escape(roles)}", highlight=False)
    if preview.sample:
        stdout.print("[bold]first conversation, as it would be written:[/]")
        for message in preview.sample:
            content = str(message["content"])
            short = content if len(content) <= 200 else content[:200] + "…"
            stdout.print(f"  [cyan]{message['role']}[/]: {escape(short)}", highlight=False)
