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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.format_cmd import source_flags, source_options
from tunelab.cli.train_cmd import ctrl_c_cancels
from tunelab.cli.validate_cmd import input_file
from tunelab.data.prompts import ClassificationPrompt
from tunelab.errors import TunelabError
from tunelab.evals import candidates, runs
from tunelab.evals.items import load_items
from tunelab.evals.result import EvaluationResult, partial_message

OutputDir = click.Path(path_type=Path, file_okay=False)
EXIT_INTERRUPTED = 130  # as a shell reports a command that Ctrl-C stopped
KEEPING = "stopping: the items scored so far are kept (Ctrl-C again: abort, keeping nothing)"
KEEPING_VERDICTS = ("stopping after the verdict being asked for: the verdicts so far are kept "
                    "(Ctrl-C again: abort, keeping nothing)")  # fmt: skip


@click.group("eval")
def eval_group() -> None:
    """Evaluate models: classification, NL→MongoDB queries, an LLM judge."""


class EvalProgress:
    """One progress bar per model (answers done, ETA) on stderr; quiet when not a terminal."""

    def __init__(self, quiet: bool = False, bars: bool = True) -> None:
        self.bar, self.quiet = None, quiet
        # `bars=False` prints one line per model instead: for callers that already show a
        # live display (rich allows one at a time).
        if common.stderr.is_terminal and not quiet and bars:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(),
                                console=common.stderr, transient=True)  # fmt: skip

    def __enter__(self) -> EvalProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, name: str, total: int):
        """A callback advancing the bar of model `name` by the answers just finished."""
        if self.bar is None:
            if not self.quiet:
                common.stderr.print(f"evaluating {name} on {total:,} items…", highlight=False)
            return None
        task = self.bar.add_task(escape(name), total=total)
        return lambda n: self.bar.advance(task, n)


def _run(kind: str, models, data, options: dict, compute, output_dir,
         as_json: bool) -> EvaluationResult:  # fmt: skip
    return _run_described(kind, models, data.describe(), options, compute, output_dir, as_json)


def _run_described(kind, models, described: dict, options, compute, output_dir,
                   as_json) -> EvaluationResult:  # fmt: skip
    cancel = threading.Event()
    saying = KEEPING_VERDICTS if kind in ("judge", "pairwise") else KEEPING
    with ctrl_c_cancels(cancel, saying), EvalProgress(quiet=as_json) as progress:
        return runs.record_run(
            kind,
            models=list(models),
            data=described,
            options=options,
            task=lambda: compute(progress, cancel),
            output_dir=output_dir,
        )


@eval_group.command("classify")
@click.option(
    "--data",
    "data_path",
    type=input_file,
    required=True,
    help="TSV/CSV table or chat JSONL (e.g. a validation file from `format`).",
)
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    required=True,
    help="A model to evaluate (repeat to compare; the first is the baseline).",
)
@click.option("--limit", type=common.COUNT, help="Only the first N items.")
@click.option(
    "--method",
    type=click.Choice(["score", "generate"]),
    default="score",
    show_default=True,
    help="score: pick the label with the highest log-likelihood after the prompt (no invalid "
    "answers; hosted models fall back to generate); generate: generate an answer and read "
    "the label from it.",
)
@click.option(
    "--length-norm",
    type=click.Choice(["sum", "mean"]),
    default="sum",
    show_default=True,
    help="With --method score: rank labels by their answer's total log-likelihood (sum) or "
    "its mean per token.",
)
@click.option(
    "--labels",
    "label_list",
    help="The label set: A,B,C or a .labels.json file [default: the table's labels, else the "
    "one `format --template short` wrote beside the file, else the gold answers'].",
)
@source_flags
@common.output_option(
    "Where to write result.json and report.html.",
    type=OutputDir,
    dest="output_dir",
    aliases=("--output-dir",),
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def classify_cmd(data_path, models, limit, method, length_norm, label_list, output_dir,
                 as_json, **flags) -> int:  # fmt: skip
    """Accuracy, macro-F1, per-class scores and the confusion matrix, models side by side."""
    from tunelab.evals.classify import evaluate_classification

    candidates.check_models(models)  # a mistyped --model fails before the data is read
    options = source_options(flags)
    data = load_items(data_path, flags["kind"], options, limit)
    prompt = options.prompt or ClassificationPrompt()
    labels = common.label_set(label_list)

    def compute(progress, cancel):
        return evaluate_classification(data, list(models), prompt=prompt, labels=labels,
                                       method=method, normalize=length_norm,
                                       progress=progress, cancel=cancel)  # fmt: skip

    run_options = {"limit": limit, "method": method, "length_norm": length_norm}
    result = _run("classify", models, data, run_options, compute, output_dir, as_json)
    if as_json:
        common.print_json(result.to_dict())
    else:
        render_classify(result)
    return exit_code_of(result)


def render_classify(result: EvaluationResult) -> None:
    table = Table(title=f"classification: {result.data['n_items']:,} items")
    for column in ("model", "method", "accuracy", "macro-F1", "invalid", "answers/s"):
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    for name, m in result.scores.items():
        low, high = m.get("accuracy_ci", (None, None))
        interval = f" [{low:.1%}–{high:.1%}]" if low is not None else ""
        method = m.get("method", "generate")
        method += f" ({m['normalize']})" if method == "score" else ""
        table.add_row(escape(name), method, f"{m['accuracy']:.1%}{interval}",
                      f"{m['macro_f1']:.3f}", f"{m['invalid_rate']:.1%}",
                      _num(m.get("answers_per_second")))  # fmt: skip
    common.stdout.print(table)
    for name, m in result.scores.items():
        if m.get("note"):
            common.stderr.print(f"note: {escape(name)}: {escape(m['note'])}", highlight=False)
    for comparison in result.metrics.get("comparisons", []):
        diff, (low, high) = comparison["difference"], comparison["difference_ci"]
        common.stdout.print(
            f"{escape(comparison['model'])} vs {escape(comparison['baseline'])}: accuracy "
            f"{diff:+.1%} [{low:+.1%}, {high:+.1%}], McNemar p = {comparison['p_value']:.3g}",
            highlight=False,
        )
    _say_files(result)


def _say_files(result: EvaluationResult) -> None:
    common.stdout.print(f"run {result.id}: {escape(result.html_path or '')}", highlight=False)


def _num(value) -> str:
    return "—" if value is None else f"{value:,.1f}"


@eval_group.command("queries")
@click.option(
    "--data",
    "data_path",
    type=input_file,
    required=True,
    help="Question → query pairs (JSON, JSONL, CSV) or chat JSONL.",
)
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    required=True,
    help="A model to evaluate (repeat to compare).",
)
@click.option("--limit", type=common.COUNT, help="Only the first N items.")
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
@source_flags
@common.output_option(
    "Where to write result.json and report.html.",
    type=OutputDir,
    dest="output_dir",
    aliases=("--output-dir",),
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def queries_cmd(data_path, models, limit, documents, mongo_uri, mongo_db, output_dir, as_json,
                **flags) -> int:  # fmt: skip
    """NL → MongoDB: parse failures, exact, structural and execution match."""
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
            from tunelab.evals.mongo.live import LiveDatabase

            executor = stack.enter_context(LiveDatabase.connect(mongo_uri, mongo_db)).execute

        def compute(progress, cancel):
            return evaluate_queries(data, list(models), executor=executor, progress=progress,
                                    cancel=cancel)  # fmt: skip

        where = str(documents) if documents else ("mongodb" if mongo_uri else None)
        settings = {"limit": limit, "executed_on": where}  # never the URI: it may hold a password
        result = _run("queries", models, data, settings, compute, output_dir, as_json)
    if as_json:
        common.print_json(result.to_dict())
    else:
        render_queries(result)
    return exit_code_of(result)


def render_queries(result: EvaluationResult) -> None:
    table = Table(title=f"NL → MongoDB: {result.data['n_items']:,} items")
    for column in ("model", "exact", "structural", "execution", "parse failures", "answers/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in result.scores.items():
        execution = "—" if m["execution_match"] is None else f"{m['execution_match']:.1%}"
        table.add_row(escape(name), f"{m['exact_match']:.1%}", f"{m['structural_match']:.1%}",
                      execution, f"{m['parse_failure_rate']:.1%}",
                      _num(m.get("answers_per_second")))  # fmt: skip
    common.stdout.print(table)
    for note in result.metrics.get("notes", [])[:5]:
        common.stderr.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    _say_files(result)


@eval_group.command("judge")
@click.option("--judge-model", required=True, help="The model that judges (any provider).")
@click.option(
    "--conversations",
    "databases",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A conversation database of one model's answers (repeatable).",
)
@click.option(
    "--data",
    "data_path",
    type=input_file,
    help="Prompts for --model candidates to answer first (any `format` source).",
)
@click.option("--model", "-m", "models", multiple=True,
              help="A model to answer --data (repeatable).")  # fmt: skip
@click.option(
    "--traits",
    multiple=True,
    help="Traits to score (repeatable or comma-separated) "
    "[default: consistency, helpfulness, authenticity].",
)
@click.option("--rubric", help="How to judge (replaces the default one-line rubric).")
@click.option(
    "--mode",
    type=click.Choice(["single", "pairwise"]),
    default="single",
    show_default=True,
    help="Scores per answer, or pairwise comparisons and ratings.",
)
@click.option("--limit", type=common.COUNT, help="Only the first N prompts.")
@click.option(
    "--max-tokens",
    type=common.COUNT,
    default=256,
    show_default=True,
    help="Longest answer a --model candidate writes.",
)
@source_flags
@common.output_option(
    "Where to write result.json and report.html.",
    type=OutputDir,
    dest="output_dir",
    aliases=("--output-dir",),
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def judge_cmd(judge_model, databases, data_path, models, traits, rubric, mode, limit,
              max_tokens, output_dir, as_json, **flags) -> int:  # fmt: skip
    """An LLM judge scores answers on traits (1–10), or ranks models by pairwise comparison."""
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
        sets += [judging.answers_from_model(m, data, max_tokens=max_tokens, progress=progress,
                                            cancel=cancel) for m in models]  # fmt: skip
        run = judging.judge_single if mode == "single" else judging.judge_pairwise
        return run(judge_model, sets, chosen, rubric, progress=progress, cancel=cancel)

    described = data.describe() if data else {"path": ", ".join(map(str, databases)),
                                              "n_items": None}  # fmt: skip
    names = [*(str(db) for db in databases), *models]
    options = {"judge": judge_model, "mode": mode, "traits": [t.name for t in chosen],
               "rubric": rubric, "limit": limit}  # fmt: skip
    result = _run_described("pairwise" if mode == "pairwise" else "judge", names, described,
                            options, compute, output_dir, as_json)  # fmt: skip
    if as_json:
        common.print_json(result.to_dict())
    else:
        render_judge(result)
    return exit_code_of(result)


def exit_code_of(result: EvaluationResult) -> int:
    """0; 130 when Ctrl-C stopped the run part-way (what was scored is kept and said); 1
    with the reason on stderr when the run produced no score at all."""
    if result.partial and not result.error:
        said = partial_message(result.partial)
        common.stderr.print(f"[yellow]interrupted:[/] {escape(said)}; the partial results are "
                            f"in {escape(result.json_path or '')}", highlight=False)  # fmt: skip
        return EXIT_INTERRUPTED
    if not result.error:
        return 0
    hint = f"the run and its reasons: {result.json_path}"
    common.print_error(TunelabError("nothing_scored", result.error, hint=hint))
    return 1


def trait_list(given: tuple[str, ...]):
    from tunelab.evals.judge.verdicts import traits_named

    names = [n.strip() for text in given for n in text.split(",") if n.strip()]
    try:
        return traits_named(names)
    except TunelabError as err:
        raise click.BadParameter(err.message.removeprefix("trait "), param_hint="--traits") from err


def render_judge(result: EvaluationResult, outputs: list[dict] | None = None) -> None:
    """Every rating or score with its 95% interval, then every parse failure with its reason.
    `outputs` are the run's stored rows (read from the registry when not given)."""
    if outputs is None:
        outputs = [row.to_dict() for row in runs.run_outputs(result.id)]
    m = result.metrics
    if "traits" not in m:  # cancelled while the candidates answered
        common.stdout.print("nothing judged: cancelled before the first verdict")
    elif result.kind == "pairwise" and not m.get("ratings"):
        common.stdout.print(f"pairwise: no ratings from {m['n_comparisons']} comparisons "
                            f"({m['n_verdicts']} decided)", highlight=False)  # fmt: skip
    else:
        common.stdout.print(_ratings_table(result) if result.kind == "pairwise"
                            else _scores_table(result))  # fmt: skip
    if m.get("note"):
        common.stdout.print(f"note: {escape(m['note'])}", highlight=False)
    print_parse_failures(outputs)
    _say_errors(result)
    _say_files(result)


def _ratings_table(result: EvaluationResult) -> Table:
    table = Table(title=f"pairwise ratings ({result.metrics['n_prompts']} prompts, judge "
                  f"{escape(result.metrics['judge'])})")  # fmt: skip
    for column in ("model", "rating", "95% interval", "wins / games"):
        table.add_column(column, justify="left" if column == "model" else "right")
    rated = [(name, s) for name, s in result.scores.items() if "rating" in s]
    for name, s in sorted(rated, key=lambda kv: -kv[1]["rating"]):
        table.add_row(escape(name), f"{s['rating']:.0f}", f"{s['low']:.0f} – {s['high']:.0f}",
                      f"{s['wins']:g} / {s['games']}")  # fmt: skip
    return table


def _scores_table(result: EvaluationResult) -> Table:
    traits = result.metrics["traits"]
    table = Table(title=f"judge {escape(result.metrics['judge'])}: scores 1–10 (95% interval)")
    table.add_column("model")
    table.add_column("items", justify="right")
    for trait in traits:
        table.add_column(trait, justify="right")
    for column in ("mean", "parse failures", "failed calls"):
        table.add_column(column, justify="right")
    for name, s in result.scores.items():
        intervals = s.get("intervals") or {}
        table.add_row(escape(name), f"{s['n_scored']}/{s['n']}",
                      *(_score(s["traits"].get(t), intervals.get(t)) for t in traits),
                      _score(s["mean_score"], s.get("mean_interval")),
                      str(s["n_parse_failures"]), str(s.get("n_call_failures", 0)))  # fmt: skip
    return table


def _say_errors(result: EvaluationResult) -> None:
    per_model = result.metrics.get("models") or {}
    errors = result.metrics.get("errors") or [e for s in per_model.values()
                                              for e in s.get("errors", [])]  # fmt: skip
    for error in errors:
        common.stderr.print(f"[yellow]judge failure:[/] {escape(error)}", highlight=False)


def print_parse_failures(outputs: list[dict]) -> None:
    """Each judge verdict that could not be read: the model, the item and why."""
    failed = [row for row in outputs if (row.get("output") or {}).get("parse_failure")]
    if not failed:
        return
    common.stdout.print(f"judge parse failures ({len(failed)}):", highlight=False)
    for row in failed:
        output = row["output"]
        where = (
            f"{row['model']}, item {row['item'] + 1}"
            if "a" not in output
            else (f"item {output.get('item', row['item']) + 1}, {output['a']} vs {output['b']}")
        )
        reason = output.get("error") or "the verdict could not be read"
        common.stdout.print(f"  {escape(where)}: {escape(reason)}", highlight=False)


def _score(value, interval=None) -> str:
    if value is None:
        return "—"
    if not interval:
        return f"{value:.2f}"
    return f"{value:.2f} ({interval[0]:.1f}–{interval[1]:.1f})"


@eval_group.command("list")
@click.option("--limit", type=common.COUNT, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(limit, as_json) -> int:
    """Evaluation runs, newest first."""
    found = runs.list_runs(limit=limit)
    if as_json:
        common.print_json({"object": "list", "data": [run.to_dict() for run in found]})
        return 0
    if not found:
        common.stdout.print("no evaluation runs yet: `tunelab eval classify --data F --model M`")
        return 0
    table = Table()
    table.add_column("id", no_wrap=True)
    for column in ("kind", "status", "models", "items", "headline"):
        table.add_column(column, overflow="fold")
    for run in found:
        table.add_row(run.id, run.kind, run.status, escape(", ".join(run.models)),
                      str(run.data.get("n_items", "")),
                      escape(runs.headline(run).text()))  # fmt: skip
    common.stdout.print(table)
    return 0


@eval_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run with every scored answer.")
def show_cmd(run_id, as_json) -> int:
    """One run: its data, metrics, and where its report is."""
    run = runs.get_run(run_id)
    if as_json:
        outputs = [out.to_dict() for out in runs.run_outputs(run_id)]
        common.print_json({**run.to_dict(), "outputs": outputs})
        return 0
    common.stdout.print(f"{run.id}  {run.kind}  {run.status}  "
                        f"{escape(run.data.get('path', ''))}", highlight=False)  # fmt: skip
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
@click.option("--json", "as_json", is_flag=True)
def compare_cmd(run_ids, as_json) -> int:
    """Runs side by side: each model's headline metrics in each run."""
    found = [EvaluationResult.from_run(runs.get_run(run_id)) for run_id in run_ids]
    rows = [
        {"run": run.id, "kind": run.kind, "data": run.data.get("path"), "model": name,
         **{k: v for k, v in scores.items() if isinstance(v, (int, float))}}
        for run in found
        for name, scores in run.scores.items()
    ]  # fmt: skip
    if as_json:
        common.print_json({"object": "list", "data": rows})
        return 0
    metric_names = [k for k in runs.METRICS if any(k in r for r in rows)]
    table = Table()
    for column in ("run", "model", *metric_names):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["run"], escape(row["model"]),
                      *(_fmt(row.get(name), name) for name in metric_names))  # fmt: skip
    common.stdout.print(table)
    return 0


def _fmt(value, metric: str) -> str:
    return "—" if value is None else runs.format_metric(metric, value)


@click.command("generate-conversations")
@click.option(
    "--ideas",
    type=input_file,
    required=True,
    help="Ideas: JSON array (strings or objects with an 'idea' key), JSONL, or text.",
)
@click.option("--model", "-m", required=True, help="The model that answers (any provider).")
@common.system_option("System prompt of every conversation.")
@click.option(
    "--user-message-template",
    default="{idea}",
    show_default=True,
    help="The user message, with {idea} and the ideas' other keys ({context_1}, …).",
)
@common.output_option(
    "The conversation database (SQLite) to write.",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
)
@click.option("--max-tokens", type=common.COUNT, default=512, show_default=True)
@click.option("--temperature", type=common.TEMPERATURE, default=0.0, show_default=True,
              help="Sampling temperature; 0 is greedy (deterministic).")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite an existing --output.")
@click.option("--json", "as_json", is_flag=True)
def generate_conversations_cmd(ideas, model, system, user_message_template, output,
                               max_tokens, temperature, force, as_json) -> int:  # fmt: skip
    """Have MODEL answer one message per idea; write a database `format` and `eval judge` read."""
    from tunelab.evals.conversations import generate_conversations

    candidates.check_models([model])
    cancel = threading.Event()
    with ctrl_c_cancels(cancel), EvalProgress(quiet=as_json) as progress:
        result = generate_conversations(
            ideas, output, model=model, template=user_message_template,
            system_prompt=system, max_tokens=max_tokens, temperature=temperature,
            force=force, progress=_ideas_progress(progress, model, ideas), cancel=cancel,
        )  # fmt: skip
    if as_json:
        common.print_json(result)
    else:
        common.stdout.print(f"[green]✓[/] {result['n_conversations']} conversation(s) from "
                            f"{escape(model)} → {escape(result['output'])}"
                            + (f" ({result['n_failed']} failed)" if result["n_failed"] else ""),
                            highlight=False)  # fmt: skip
    return 0 if not result["n_failed"] else 1


def _ideas_progress(progress: EvalProgress, model: str, ideas: Path):
    from tunelab.evals.conversations import read_ideas

    return progress(model, len(read_ideas(ideas)))
