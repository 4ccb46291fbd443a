"""`tunelab format`: a source → OpenAI chat JSONL, split into training and validation files."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.common import INT32_MAX, print_json, stderr, stdout
from tunelab.data.formatter import FormatReport, format_dataset
from tunelab.data.prompts import (
    DEFAULT_INSTRUCTION,
    SHORT_INSTRUCTION,
    TEMPLATES,
    ClassificationPrompt,
)
from tunelab.data.sources import (
    KINDS,
    ConversationSchema,
    DatabasePreview,
    SourceOptions,
    preview_conversations,
)
from tunelab.data.sources.detect import is_sqlite
from tunelab.data.sources.query_pairs import DEFAULT_SYSTEM as QUERIES_SYSTEM
from tunelab.data.sources.tables import DEFAULT_SYSTEM as CLASSIFICATION_SYSTEM

FilePath = click.Path(path_type=Path, dir_okay=False)

PROMPT_FLAGS = ("instruction", "category_tag", "item_tag", "output_tag", "bare_label", "template")
SCHEMA_FLAGS = (
    "conversations_table",
    "conversation_key_column",
    "system_column",
    "messages_table",
    "conversation_id_column",
    "role_column",
    "content_column",
    "order_column",
)

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
"""


def source_flags(command):
    """The flags that say how to read a source: shared by `format` and `eval`."""
    options = [
        click.option(
            "--kind", type=click.Choice(KINDS), help="Source kind (detected when omitted)."
        ),
        common.system_option('System prompt ("" for none).'),
        click.option("--question-field", help="Queries: field holding the question."),
        click.option("--answer-field", help="Queries: field holding the query."),
        click.option("--context-field", help="Queries: field added as context (e.g. db_id)."),
        click.option(
            "--context-file",
            type=FilePath,
            help="Queries: collections.json (DocSpider) or JSON object mapping context value "
            "→ text.",
        ),
        click.option("--text-column", help="Classification: text column [default: text]."),
        click.option("--label-column", help="Classification: label column [default: label]."),
        click.option("--instruction", help="Classification: first line of the prompt (see above)."),
        click.option(
            "--category-tag",
            help="Classification: tag around the categories [default: categories].",
        ),
        click.option("--item-tag", help="Classification: tag around the text [default: text]."),
        click.option(
            "--output-tag", help="Classification: tag around the answer [default: category]."
        ),
        click.option(
            "--bare-label", is_flag=True, default=None, help="Classification: answer LABEL only."
        ),
        click.option(
            "--template",
            type=click.Choice(TEMPLATES),
            help="Classification: full lists the categories in each prompt, short leaves them "
            "out [default: full].",
        ),
        click.option(
            "--conversations-table",
            help="Conversations: conversations table [default: conversations].",
        ),
        click.option(
            "--conversation-key-column", help="Conversations: its key column [default: id]."
        ),
        click.option(
            "--system-column",
            help="Conversations: its stored system prompt column "
            '[default: system_prompt; "" for none].',
        ),
        click.option("--messages-table", help="Conversations: messages table [default: messages]."),
        click.option(
            "--conversation-id-column",
            help="Conversations: messages' conversation column [default: conversation_id].",
        ),
        click.option("--role-column", help="Conversations: role column [default: role]."),
        click.option("--content-column", help="Conversations: text column [default: content]."),
        click.option(
            "--order-column",
            help="Conversations: message order column [default: position, created_at or id].",
        ),
        click.option(
            "--max-conversations",
            type=click.IntRange(0, INT32_MAX),
            help="Conversations: at most N (0 = all).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("format", help=HELP)
@click.argument("source", type=FilePath)
@click.option("--train-output", "-o", "--output", "train_output", type=FilePath,
              cls=common.AliasedOption, aliases=("--output",),
              help="Training JSONL to write (required).")  # fmt: skip
@click.option("--val-output", type=FilePath, help="Validation JSONL to write.")
@click.option(
    "--train-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.8,
    show_default=True,
    help="Share of each label for training.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Shuffle seed.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
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
        )
    if flags["as_json"]:
        print_json(report.to_dict())
    else:
        render_format_report(report)
    return 0


def source_options(flags: dict) -> SourceOptions:
    prompt_given = {k: flags[k] for k in PROMPT_FLAGS if flags[k] is not None}
    schema_given = {k: flags[k] for k in SCHEMA_FLAGS if flags[k] is not None}
    return SourceOptions(
        system=flags["system"],
        question_field=flags["question_field"],
        answer_field=flags["answer_field"],
        context_field=flags["context_field"],
        context_file=flags["context_file"],
        text_column=flags["text_column"],
        label_column=flags["label_column"],
        prompt=ClassificationPrompt(**prompt_given) if prompt_given else None,
        schema=ConversationSchema(**schema_given) if schema_given else None,
        max_conversations=flags["max_conversations"],
    )


def _preview(source: Path, options: SourceOptions, as_json: bool) -> int:
    if not is_sqlite(source):
        raise click.UsageError("--preview applies to SQLite conversation databases only.")
    preview = preview_conversations(source, options.schema, options.system)
    if as_json:
        print_json(preview.to_dict())
    else:
        _render_preview(preview)
    return 0 if preview.schema_problem is None else 1


def render_format_report(report: FormatReport) -> None:
    how = f"detected: {report.detection}" if report.detection else "given"
    stdout.print(
        f"[bold]{escape(report.source)}[/]: {report.kind} ({escape(how)})", highlight=False
    )
    fields = ", ".join(
        f"{meaning}={name}" + (" (detected)" if meaning in report.detected_fields else "")
        for meaning, name in report.fields.items()
    )
    stdout.print(f"  fields: {escape(fields)}", highlight=False)
    stdout.print(f"  system prompt: {escape(report.system or '(none added)')}", highlight=False)
    stdout.print(f"  read {report.n_read:,} examples", highlight=False)
    if report.n_skipped:
        stdout.print(f"  skipped {report.n_skipped:,} without an assistant message")
    if report.n_duplicates:
        pairs = ", ".join(f"{d['line']} = {d['duplicate_of']}" for d in report.duplicates_sample)
        stdout.print(
            f"  removed {report.n_duplicates:,} exact duplicates (line = first copy: {pairs}"
            + (", ..." if report.n_duplicates > len(report.duplicates_sample) else "")
            + ")",
            highlight=False,
        )
    stdout.print(
        f"  [green]train[/] {report.n_train:,} → {escape(report.train_output)}", highlight=False
    )
    if report.val_output:
        stdout.print(
            f"  [green]val[/]   {report.n_val:,} → {escape(report.val_output)}", highlight=False
        )
    for path in report.label_set_outputs or []:
        stdout.print(f"  [green]labels[/] → {escape(path)}", highlight=False)
    if report.label_counts:
        table = Table("label", "train", "val", box=None, padding=(0, 2))
        for label, n in report.label_counts["train"].items():
            table.add_row(escape(label), f"{n:,}", f"{report.label_counts['val'].get(label, 0):,}")
        stdout.print(table)


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
