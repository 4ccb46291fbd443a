"""Flags that several commands share: one name, one type and one help text for each idea.

Single options are functions that return a click decorator (`json_option(...)`); blocks of
options that travel together are decorators that apply them all (`source_flags`,
`evaluation_outputs`), so a command lists each block once.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from tunelab.catalog import DEFAULT_MODEL
from tunelab.data.methods import METHODS
from tunelab.data.prompts import TEMPLATES, ClassificationPrompt
from tunelab.data.sources import KINDS, ConversationSchema, SourceOptions

# Numbers are checked where they enter: a count past 32 bits is a typo, not a request, and
# would overflow torch's and numpy's integer arguments far from the flag that caused it.
INT32_MAX = 2**31 - 1
COUNT = click.IntRange(1, INT32_MAX)
SAMPLING_SEED = click.IntRange(-(2**63), 2**63 - 1)  # a 64-bit integer, as OpenAI's `seed`
# The same range for sampling temperature everywhere (OpenAI's: 0 to 2; 0 is greedy).
TEMPERATURE = click.FloatRange(0, 2)

input_file = click.Path(exists=True, dir_okay=False, path_type=Path)
FilePath = click.Path(path_type=Path, dir_okay=False)
OutputDir = click.Path(path_type=Path, file_okay=False)


def option_block(*options):
    """One decorator that applies `options` in order: the first is the first in --help."""

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


class AliasedOption(click.Option):
    """An option whose older spellings (`aliases`) still work but are not shown in --help:
    one name per idea in the help, and no script written against an old name breaks."""

    def __init__(self, *args, aliases: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = aliases

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def output_option(help: str, *, dest: str = "output", aliases: tuple[str, ...] = (), **kwargs):
    """`--output`/`-o`, the one name for where a command writes (old names kept hidden)."""
    return click.option(
        "--output", "-o", *aliases, dest, cls=AliasedOption, aliases=aliases, help=help, **kwargs
    )


def system_option(help: str = "System prompt at the start of every conversation."):
    """`--system`/`-s`, with `--system-prompt` as an alias."""
    return click.option(
        "--system",
        "-s",
        "--system-prompt",
        "system",
        cls=AliasedOption,
        aliases=("--system-prompt",),
        help=help,
    )


def json_option(help: str | None = None):
    """`--json`: print the result for programs instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def choice_option(*names: str, choices, default=None, help: str | None = None):
    """A flag taking one of `choices`; its default, when it has one, shown in --help."""
    return click.option(
        *names,
        type=click.Choice(choices),
        default=default,
        show_default=default is not None,
        help=help,
    )


def model_option(help: str, *dest: str, **kwargs):
    """`--model`/`-m`: the model a command works with."""
    return click.option("--model", "-m", *dest, help=help, **kwargs)


def base_model_option(help: str = "Base model."):
    """`--model`/`-m` for the model training starts from: the bundled one by default."""
    return model_option(help, default=DEFAULT_MODEL, show_default=True)


def val_option(help: str):
    """`--val`: a validation chat JSONL beside the main file."""
    return click.option("--val", "val_file", type=input_file, help=help)


# `--train` and `--val`: the files a training run or job learns from.
training_files = option_block(
    click.option(
        "--train", "train_file", type=input_file, required=True, help="Training chat JSONL."
    ),
    val_option("Validation chat JSONL."),
)


def max_tokens_option(default: int, help: str | None = None):
    """`--max-tokens`: the longest answer, in tokens."""
    return click.option("--max-tokens", type=COUNT, default=default, show_default=True, help=help)


def judge_max_tokens_option():
    """`--judge-max-tokens`: the longest reply of a judge (reasoning, then its verdict)."""
    return click.option(
        "--judge-max-tokens",
        type=COUNT,
        default=512,
        show_default=True,
        help="Longest reply the judge writes (its reasoning, then the JSON verdict).",
    )


def temperature_option():
    """`--temperature`, greedy by default: the same question gets the same answer."""
    return click.option(
        "--temperature",
        type=TEMPERATURE,
        default=0.0,
        show_default=True,
        help="Sampling temperature; 0 is greedy (deterministic).",
    )


def label_set(value: str | None) -> list[str] | None:
    """`--labels`: a `.labels.json` file from `tunelab format`, or labels separated by commas
    (blanks and repeats dropped); None when not given."""
    if value is None:
        return None
    if value.endswith(".json"):
        from tunelab.data.prompts import read_label_set_file  # only when a file is named

        labels = read_label_set_file(Path(value))
    else:
        labels = list(dict.fromkeys(x.strip() for x in value.split(",") if x.strip()))
    if len(set(labels)) < 2:
        raise click.BadParameter("give at least two distinct labels", param_hint="--labels")
    return labels


def data_option(help: str, required: bool = True):
    """`--data`: the items an evaluation reads (any source `tunelab format` reads)."""
    return click.option("--data", "data_path", type=input_file, required=required, help=help)


def models_option(help: str, required: bool = True):
    """`--model`/`-m`, repeatable: the models an evaluation compares."""
    return model_option(help, "models", multiple=True, required=required)


def limit_option(help: str = "Only the first N items."):
    """`--limit N`: a quick run on the start of the data."""
    return click.option("--limit", type=COUNT, help=help)


# How `tunelab format` (and `eval --data`) reads a source: the flags and their SourceOptions.
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

source_flags = option_block(
    click.option("--kind", type=click.Choice(KINDS), help="Source kind (detected when omitted)."),
    system_option('System prompt ("" for none).'),
    click.option("--question-field", help="Queries: field holding the question."),
    click.option("--answer-field", help="Queries: field holding the query."),
    click.option("--context-field", help="Queries: field added as context (e.g. db_id)."),
    click.option(
        "--context-file",
        type=FilePath,
        help="Queries: collections.json (DocSpider) or JSON object mapping context value → text.",
    ),
    click.option("--text-column", help="Classification: text column [default: text]."),
    click.option("--label-column", help="Classification: label column [default: label]."),
    click.option("--instruction", help="Classification: first line of the prompt (see above)."),
    click.option(
        "--category-tag", help="Classification: tag around the categories [default: categories]."
    ),
    click.option("--item-tag", help="Classification: tag around the text [default: text]."),
    click.option("--output-tag", help="Classification: tag around the answer [default: category]."),
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
        "--conversations-table", help="Conversations: conversations table [default: conversations]."
    ),
    click.option("--conversation-key-column", help="Conversations: its key column [default: id]."),
    click.option(
        "--system-column",
        help='Conversations: its stored system prompt column [default: system_prompt; "" for '
        "none].",
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
)


def source_options(flags: dict) -> SourceOptions:
    """The SourceOptions that `source_flags`' values describe."""
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


def evaluation_inputs(data_help: str, models_help: str):
    """The start of a `tunelab eval` run command: its --data, the --model(s) compared, --limit."""
    return option_block(data_option(data_help), models_option(models_help), limit_option())


# Where an evaluation run writes, and --json.
report_outputs = option_block(
    output_option(
        "Where to write result.json and report.html.",
        type=OutputDir,
        dest="output_dir",
        aliases=("--output-dir",),
    ),
    json_option("Print the result as JSON."),
)
# The end of a `tunelab eval` run command that reads any `format` source: how to read --data,
# where to write, --json.
evaluation_outputs = option_block(source_flags, report_outputs)


def training_method_option(help: str):
    """`--training-method`: which training data format a file holds, when detection cannot
    tell, in the word `tunelab train` and `jobs create` take. `--method`, its earlier name
    on `validate` and `analyze`, still works; --help shows one name, because `--method` on
    `train` picks lora or full."""

    def decorate(command):
        @functools.wraps(command)
        def with_one_method(*args, method_alias: str | None = None, **kwargs):
            given = kwargs.get("method")
            if given is not None and method_alias is not None and given != method_alias:
                raise click.UsageError(
                    "Can't provide both `--training-method` and `--method`. Choose one."
                )
            kwargs["method"] = given or method_alias
            return command(*args, **kwargs)

        return option_block(
            choice_option("--training-method", "method", choices=list(METHODS), help=help),
            click.option("--method", "method_alias", type=click.Choice(list(METHODS)), hidden=True),
        )(with_one_method)

    return decorate


def grader_option(help: str):
    """`--grader FILE`: a grader definition (OpenAI's, JSON) for reinforcement."""
    return click.option("--grader", "grader_file", type=input_file, help=help)


def grader_field_options(command):
    """`--grader-field NAME` (repeatable) and `--grader FILE`: the item fields a
    reinforcement grader reads, required of every item."""
    return option_block(
        click.option(
            "--grader-field",
            "grader_field_names",
            multiple=True,
            help="Reinforcement: an item field the grader reads as {{item.NAME}} (repeatable).",
        ),
        grader_option(
            "Reinforcement: a grader definition (JSON); every item needs the fields it reads."
        ),
    )(command)
