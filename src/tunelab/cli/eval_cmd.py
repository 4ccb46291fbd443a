"""`tunelab eval`: score base and fine-tuned models side by side, on any provider.

Each run is recorded in the registry and written as JSON and a self-contained HTML report;
`eval list/show/compare` read them back. `--data` takes the sources and field flags of
`tunelab format`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.cancel import KEEPING, ctrl_c_cancels
from tunelab.cli.options import (
    COUNT,
    choice_option,
    data_option,
    evaluation_inputs,
    evaluation_outputs,
    input_file,
    json_option,
    judge_max_tokens_option,
    label_set,
    limit_option,
    max_tokens_option,
    model_option,
    models_option,
    output_option,
    report_outputs,
    source_options,
    system_option,
    temperature_option,
)
from tunelab.cli.progress import EvalProgress
from tunelab.cli.render import print_listing
from tunelab.cli.render_eval import render_judge, show_evaluation
from tunelab.data.prompts import ClassificationPrompt
from tunelab.errors import TunelabError
from tunelab.evals import candidates, runs
from tunelab.evals.classify import evaluate_classification
from tunelab.evals.items import load_items
from tunelab.evals.result import EvaluationResult
from tunelab.evals.tools import evaluate_tool_calls, load_tool_items

KEEPING_VERDICTS = (
    "stopping after the verdict being asked for: the verdicts so far are kept "
    "(Ctrl-C again: abort, keeping nothing)"
)


@click.group("eval")
def eval_group() -> None:
    """Evaluate models: classification, NL→MongoDB queries, tool calls, an LLM judge, a
    grader."""


def _record_and_show(
    kind, models, described: dict, options: dict, compute, output_dir, as_json: bool
) -> int:
    """Run `compute` as a recorded evaluation of `kind` (Ctrl-C cancels, progress shows), then
    show its result; the exit code."""
    cancel = threading.Event()
    saying = KEEPING_VERDICTS if kind in ("judge", "pairwise") else KEEPING
    with ctrl_c_cancels(cancel, saying), EvalProgress(quiet=as_json) as progress:
        result = runs.record_run(
            kind,
            models=list(models),
            data=described,
            options=options,
            task=lambda: compute(progress, cancel),
            output_dir=output_dir,
        )
    return show_evaluation(result, as_json)


@eval_group.command("classify")
@evaluation_inputs(
    "TSV/CSV table or chat JSONL (e.g. a validation file from `format`).",
    "A model to evaluate (repeat to compare; the first is the baseline).",
)
@choice_option(
    "--method",
    choices=["score", "generate"],
    default="score",
    help="score: pick the label with the highest log-likelihood after the prompt (no invalid "
    "answers; hosted models fall back to generate); generate: generate an answer and read "
    "the label from it.",
)
@choice_option(
    "--length-norm",
    choices=["sum", "mean"],
    default="sum",
    help="With --method score: rank labels by their answer's total log-likelihood (sum) or "
    "its mean per token.",
)
@click.option(
    "--labels",
    "label_list",
    help="The label set: A,B,C or a .labels.json file [default: the table's labels, else the "
    "one `format --template short` wrote beside the file, else the gold answers'].",
)
@evaluation_outputs
def classify_cmd(
    data_path, models, limit, method, length_norm, label_list, output_dir, as_json, **flags
) -> int:
    """Accuracy, macro-F1, per-class scores and the confusion matrix, models side by side."""
    candidates.check_models(models)  # a mistyped --model fails before the data is read
    options = source_options(flags)
    data = load_items(data_path, flags["kind"], options, limit)
    prompt = options.prompt or ClassificationPrompt()
    labels = label_set(label_list)

    def compute(progress, cancel):
        return evaluate_classification(
            data,
            list(models),
            prompt=prompt,
            labels=labels,
            method=method,
            normalize=length_norm,
            progress=progress,
            cancel=cancel,
        )

    run_options = {"limit": limit, "method": method, "length_norm": length_norm}
    return _record_and_show(
        "classify", models, data.describe(), run_options, compute, output_dir, as_json
    )


@eval_group.command("queries")
@evaluation_inputs(
    "Question → query pairs (JSON, JSONL, CSV) or chat JSONL.",
    "A model to evaluate (repeat to compare).",
)
@click.option(
    "--documents",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory of <collection>.json files: also score by executing the queries.",
)
@click.option(
    "--mongo-uri",
    help="A MongoDB to execute the queries on, read-only (instead of --documents), e.g. "
    "mongodb://localhost:27017/dbname.",
)
@click.option("--mongo-db", help="The database for --mongo-uri (default: the URI's path).")
@choice_option(
    "--constrain",
    choices=["off", "query", "schema"],
    default="off",
    help="Decode under the query grammar, so every finished answer parses: `query` (any "
    "names) or `schema` (each item's collections, and a find's fields among its "
    "collection's). Models on this machine only.",
)
@evaluation_outputs
def queries_cmd(
    data_path,
    models,
    limit,
    documents,
    mongo_uri,
    mongo_db,
    constrain,
    output_dir,
    as_json,
    **flags,
) -> int:
    """NL → MongoDB: parse failures, exact, structural and execution match."""
    # loaded when this command runs: the others start without it
    from tunelab.evals.mongo.task import embedded_executor, evaluate_queries, load_documents

    if documents and mongo_uri:
        raise click.UsageError("Can't provide both --documents and --mongo-uri. Choose one.")
    candidates.check_models(models)
    data = load_items(data_path, flags["kind"], source_options(flags), limit)
    with contextlib.ExitStack() as stack:
        executor = None
        if documents:
            executor = embedded_executor(load_documents(documents))
        elif mongo_uri:
            # loaded when this command runs: the others start without it
            from tunelab.evals.mongo.live import LiveDatabase

            executor = stack.enter_context(LiveDatabase.connect(mongo_uri, mongo_db)).execute

        def compute(progress, cancel):
            return evaluate_queries(
                data,
                list(models),
                executor=executor,
                progress=progress,
                cancel=cancel,
                constrain=constrain,
            )

        where = str(documents) if documents else ("mongodb" if mongo_uri else None)
        # never the URI: it may hold a password
        settings = {"limit": limit, "executed_on": where, "constrain": constrain}
        return _record_and_show(
            "queries", models, data.describe(), settings, compute, output_dir, as_json
        )


@eval_group.command("tools")
@evaluation_inputs(
    "Chat JSONL with `tools`: each example whose last answer makes tool calls.",
    "A model to evaluate (repeat to compare; the first is the baseline).",
)
@report_outputs
def tools_cmd(data_path, models, limit, output_dir, as_json) -> int:
    """Tool calls: the right function, arguments valid against its schema, exact arguments."""
    candidates.check_models(models)
    data = load_tool_items(data_path, limit)

    def compute(progress, cancel):
        return evaluate_tool_calls(data, list(models), progress=progress, cancel=cancel)

    return _record_and_show(
        "tools", models, data.describe(), {"limit": limit}, compute, output_dir, as_json
    )


@eval_group.command("judge")
@click.option("--judge-model", required=True, help="The model that judges (any provider).")
@click.option(
    "--conversations",
    "databases",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A conversation database of one model's answers (repeatable).",
)
@data_option(
    "Prompts for --model candidates to answer first (any `format` source).", required=False
)
@models_option("A model to answer --data (repeatable).", required=False)
@click.option(
    "--traits",
    multiple=True,
    help="Traits to score (repeatable or comma-separated) "
    "[default: consistency, helpfulness, authenticity].",
)
@click.option("--rubric", help="How to judge (replaces the default one-line rubric).")
@choice_option(
    "--mode",
    choices=["single", "pairwise"],
    default="single",
    help="Scores per answer, or pairwise comparisons and ratings.",
)
@limit_option("Only the first N prompts.")
@max_tokens_option(256, "Longest answer a --model candidate writes.")
@judge_max_tokens_option()
@evaluation_outputs
def judge_cmd(
    judge_model,
    databases,
    data_path,
    models,
    traits,
    rubric,
    mode,
    limit,
    max_tokens,
    judge_max_tokens,
    output_dir,
    as_json,
    **flags,
) -> int:
    """An LLM judge scores answers on traits (1–10), or ranks models by pairwise comparison."""
    # loaded when this command runs: the others start without it
    from tunelab.evals.judge import task as judging

    if models and data_path is None:
        raise click.UsageError("--model needs --data (the prompts to answer).")
    if not databases and not models:
        raise click.UsageError("Give --conversations DB or --data F with --model M.")
    chosen = trait_list(traits)
    candidates.check_models([judge_model, *models])
    data = load_items(data_path, flags["kind"], source_options(flags), limit) if models else None

    def compute(progress, cancel):
        sets = [judging.answers_from_database(db, limit) for db in databases]
        sets += [
            judging.answers_from_model(
                m, data, max_tokens=max_tokens, progress=progress, cancel=cancel
            )
            for m in models
        ]
        run = judging.judge_single if mode == "single" else judging.judge_pairwise
        setup = judging.JudgeSetup(judge_model, chosen, rubric, judge_max_tokens)
        return run(setup, sets, progress=progress, cancel=cancel)

    described = (
        data.describe() if data else {"path": ", ".join(map(str, databases)), "n_items": None}
    )
    names = [*(str(db) for db in databases), *models]
    options = {
        "judge": judge_model,
        "mode": mode,
        "traits": [t.name for t in chosen],
        "rubric": rubric,
        "limit": limit,
        "judge_max_tokens": judge_max_tokens,
    }
    kind = "pairwise" if mode == "pairwise" else "judge"
    return _record_and_show(kind, names, described, options, compute, output_dir, as_json)


def trait_list(given: tuple[str, ...]):
    # loaded when this command runs: the others start without it
    from tunelab.evals.judge.verdicts import traits_named

    names = [n.strip() for text in given for n in text.split(",") if n.strip()]
    try:
        return traits_named(names)
    except TunelabError as err:
        raise click.BadParameter(err.message.removeprefix("trait "), param_hint="--traits") from err


@eval_group.command("list")
@click.option("--limit", type=COUNT, default=20, show_default=True)
@json_option()
def list_cmd(limit, as_json) -> int:
    """Evaluation runs, newest first."""
    found = runs.list_runs(limit=limit)
    if as_json:
        common.print_json({"object": "list", "data": [run.to_dict() for run in found]})
        return 0
    rows = [
        (
            run.id,
            run.kind,
            run.status,
            escape(", ".join(run.models)),
            _count(run.data.get("n_items")),
            escape(runs.headline(run).text()),
        )
        for run in found
    ]
    columns = ("id", "kind", "status", "models", "items", "headline")
    return print_listing(
        columns, rows, "no evaluation runs yet: `tunelab eval classify --data F --model M`"
    )


@eval_group.command("show")
@click.argument("run_id")
@json_option("The run with every scored answer.")
def show_cmd(run_id, as_json) -> int:
    """One run: its data, metrics, and where its report is."""
    run = runs.get_run(run_id)
    if as_json:
        outputs = [out.to_dict() for out in runs.run_outputs(run_id)]
        common.print_json({**run.to_dict(), "outputs": outputs})
        return 0
    common.stdout.print(
        f"{run.id}  {run.kind}  {run.status}  {escape(run.data.get('path', ''))}", highlight=False
    )
    if run.status == "failed":
        common.stdout.print(f"[red]failed[/]: {escape(run.error_message or '')}")
    if run.status == "partial":
        common.stdout.print(f"[yellow]partial[/]: {escape(run.error_message or '')}")
    common.stdout.print(escape(runs.headline(run).text()) or "—", highlight=False)
    if run.kind in ("judge", "pairwise") and run.status in ("succeeded", "partial"):
        render_judge(EvaluationResult.from_run(run))
        return 0
    if run.html_path:
        common.stdout.print(f"report: {escape(run.html_path)}", highlight=False)
    return 0


@eval_group.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@json_option()
def compare_cmd(run_ids, as_json) -> int:
    """Runs side by side: each model's headline metrics in each run."""
    found = [EvaluationResult.from_run(runs.get_run(run_id)) for run_id in run_ids]
    rows = [
        {
            "run": run.id,
            "kind": run.kind,
            "data": run.data.get("path"),
            "model": name,
            **{k: v for k, v in scores.items() if isinstance(v, (int, float))},
        }
        for run in found
        for name, scores in run.scores.items()
    ]
    if as_json:
        common.print_json({"object": "list", "data": rows})
        return 0
    metric_names = [k for k in runs.METRICS if any(k in r for r in rows)]
    table = Table()
    for column in ("run", "model", *metric_names):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["run"], escape(row["model"]), *(_fmt(row.get(name), name) for name in metric_names)
        )
    common.stdout.print(table)
    return 0


def _count(n_items) -> str:
    """An item count, or "—" where the run has none (a judge run that failed before reading)."""
    return f"{n_items:,}" if isinstance(n_items, int) else "—"


def _fmt(value, metric: str) -> str:
    return "—" if value is None else runs.format_metric(metric, value)


@click.command("generate-conversations")
@click.option(
    "--ideas",
    type=input_file,
    required=True,
    help="Ideas: JSON array (strings or objects with an 'idea' key), JSONL, or text.",
)
@model_option("The model that answers (any provider).", required=True)
@system_option("System prompt of every conversation.")
@click.option(
    "--user-message-template",
    default="{idea}",
    show_default=True,
    help="The user message, with {idea} and the ideas' other keys ({context_1}, …).",
)
@output_option(
    "The conversation database (SQLite) to write.",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
)
@max_tokens_option(512)
@temperature_option()
@click.option("--force", is_flag=True, help="Overwrite an existing --output.")
@json_option()
def generate_conversations_cmd(
    ideas, model, system, user_message_template, output, max_tokens, temperature, force, as_json
) -> int:
    """Have MODEL answer one message per idea; write a database `format` and `eval judge` read."""
    # loaded when this command runs: the others start without it
    from tunelab.evals.conversations import ConversationRecipe, generate_conversations

    candidates.check_models([model])
    recipe = ConversationRecipe(model, user_message_template, system, max_tokens, temperature)
    cancel = threading.Event()
    with ctrl_c_cancels(cancel), EvalProgress(quiet=as_json) as progress:
        result = generate_conversations(
            ideas,
            output,
            recipe,
            force=force,
            progress=_ideas_progress(progress, model, ideas),
            cancel=cancel,
        )
    if as_json:
        common.print_json(result)
    else:
        common.stdout.print(
            f"[green]✓[/] {result['n_conversations']} conversation(s) from "
            f"{escape(model)} → {escape(result['output'])}"
            + (f" ({result['n_failed']} failed)" if result["n_failed"] else ""),
            highlight=False,
        )
    return 0 if not result["n_failed"] else 1


def _ideas_progress(progress: EvalProgress, model: str, ideas: Path):
    # loaded when this command runs: the others start without it
    from tunelab.evals.conversations import read_ideas

    return progress(model, len(read_ideas(ideas)))
