"""`tunelab migrate openai`: take every OpenAI fine-tune to a model you own.

A thin layer over `tunelab.migrate`: each command prints the days left before OpenAI's
dates first, then its table (or `--json`).
"""

from __future__ import annotations

import threading
from datetime import date

import click
from rich.markup import escape
from rich.progress import TimeRemainingColumn
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.cancel import ctrl_c_cancels
from tunelab.cli.options import json_option, judge_max_tokens_option, option_block
from tunelab.cli.progress import EvalProgress, count_bar
from tunelab.cli.render_eval import show_evaluation
from tunelab.migrate import dates
from tunelab.providers.registry import DEFAULT_PROVIDER

base_url_option = click.option(
    "--base-url", help="An OpenAI-compatible endpoint instead of OpenAI (e.g. `tunelab serve`)."
)
# Hidden: "today" for trying what happens after the dates (and for tests).
today_option = click.option(
    "--today",
    type=click.DateTime(["%Y-%m-%d"]),
    hidden=True,
    callback=lambda ctx, param, value: value.date() if value else dates.utc_today(),
)
# The last flags of every command: the day its countdown counts from, and --json.
dated_json_options = option_block(today_option, json_option("Print JSON."))
target_options = option_block(
    click.option(
        "--target",
        default=DEFAULT_PROVIDER,
        show_default=True,
        help="Where every model goes: local, together, or a model name or directory.",
    ),
    click.option(
        "--target-for",
        "target_for",
        multiple=True,
        metavar="FT_MODEL=TARGET",
        help="A target for one model (repeatable).",
    ),
    click.option("--prices", type=click.Path(dir_okay=False), help="A prices JSON override."),
)


@click.group("migrate")
def migrate_group() -> None:
    """Move fine-tunes off a closing platform."""


@migrate_group.group("openai")
def openai_group() -> None:
    """Leave OpenAI fine-tuning: inventory, plan, run (--distil), compare."""


def say_countdown(today: date) -> None:
    common.stderr.print(dates.countdown_line(today), highlight=False)


@openai_group.command("inventory")
@base_url_option
@dated_json_options
def inventory_cmd(base_url, today, as_json) -> int:
    """Record every fine-tuning job, its files (downloaded), models and checkpoints."""
    # loaded when this command runs: the others start without it
    from tunelab.migrate.inventory import take_inventory

    say_countdown(today)
    found = take_inventory(base_url=base_url, today=today)
    if as_json:
        common.print_json(found.to_dict())
        return 0
    table = Table(
        "job",
        "status",
        "base model",
        "fine-tuned model",
        "training file",
        "validation file",
        "hyperparameters",
        "checkpoints",
    )
    for job in found.jobs:
        table.add_row(
            job["openai_job_id"],
            job["status"],
            job["model"],
            escape(job["fine_tuned_model"] or "-"),
            _file(job["training_file"]),
            _file(job["validation_file"]),
            _hyper(job["hyperparameters"]),
            str(len(job["checkpoints"])),
        )
    common.stdout.print(table)
    common.stdout.print(
        f"{len(found.jobs)} job(s); new this run: {found.new_jobs} job(s), "
        f"{found.new_files} file(s) downloaded."
    )
    for gone in found.deleted_files:
        common.stderr.print(
            f"[yellow]deleted on OpenAI:[/] {gone['file']} (jobs "
            f"{', '.join(gone['jobs'])}): its data could not be kept."
        )
    return 0


def _file(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{row['id']} ({row['sha256'][:8]})" if row["sha256"] else f"{row['id']} (missing)"


def _hyper(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def _targets(target: str, target_for: tuple[str, ...]):
    # loaded when this command runs: the others start without it
    from tunelab.migrate.plan import Targets

    per_model = {}
    for pair in target_for:
        model, sep, choice = pair.rpartition("=")
        if not sep or not model or not choice:
            raise click.BadParameter(
                f"{pair!r}: expected FT_MODEL=TARGET", param_hint="--target-for"
            )
        per_model[model] = choice
    return Targets(target, per_model)


@openai_group.command("plan")
@target_options
@dated_json_options
def plan_cmd(target, target_for, prices, today, as_json) -> int:
    """A target for each fine-tuned model, with tokens, epochs, cost and training time."""
    # loaded when this command runs: the others start without it
    from tunelab.migrate.plan import make_plan, require_fine_tunes

    say_countdown(today)
    plan = make_plan(_targets(target, target_for), today=today, prices=prices)
    require_fine_tunes(plan)
    if as_json:
        common.print_json(plan)
    else:
        render_plan(plan)
    return 0


def render_plan(plan: dict) -> None:
    table = Table(
        "fine-tuned model",
        "target",
        "examples",
        "tokens/epoch",
        "epochs",
        "Together cost",
        "local time",
        "migration job",
    )
    for row in plan["models"]:
        got = row.get("analysis") or {}
        cost = got.get("together_cost_usd")
        seconds = got.get("estimated_local_train_seconds")
        job = row["migration_job"]
        table.add_row(
            escape(row["fine_tuned_model"]),
            f"{escape(row['target']['model'])} ({row['target']['provider']})",
            str(got.get("n_examples", "-")),
            f"{got.get('tokens_per_epoch', 0):,}",
            str(got.get("n_epochs", "-")),
            _cost(cost, got.get("together_prices_as_of")),
            f"{seconds:,.0f} s" if seconds else "-",
            f"{job['id']} ({job['status']})" if job else "-",
        )
    common.stdout.print(table)
    priced = {
        (got["together_prices_as_of"], got["together_prices_source"])
        for got in (row.get("analysis") or {} for row in plan["models"])
        if got.get("together_cost_usd") is not None and got.get("together_prices_source")
    }
    for as_of, source in sorted(priced, key=str):
        common.stdout.print(f"Together's prices as of {as_of}; current prices: {source}")
    for row in plan["models"]:
        for problem in row["problems"]:
            common.stderr.print(f"[yellow]{escape(row['fine_tuned_model'])}:[/] {problem}")
        if row["not_carried"]:
            common.stdout.print(
                f"{escape(row['fine_tuned_model'])}: not carried to "
                f"{row['target']['provider']}: {', '.join(row['not_carried'])}"
            )


def _cost(usd: float | None, as_of: str | None) -> str:
    """The Together cost and the date of the price table behind it."""
    if usd is None:
        return "-"
    return f"${usd:,.2f} (prices of {as_of})" if as_of else f"${usd:,.2f} (undated prices)"


distil_options = option_block(
    click.option("--model", "models", multiple=True, help="Only this ft: model (repeatable)."),
    click.option("--yes", is_flag=True, help="Do not ask before paying for the answers."),
    click.option(
        "--requests-per-minute",
        type=click.FloatRange(min=0, min_open=True),
        help="At most this many requests a minute.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=16,
        show_default=True,
        help="Prompts per batch (answers are saved as they arrive).",
    ),
)


@openai_group.command("distil")
@distil_options
@dated_json_options
def distil_cmd(models, yes, requests_per_minute, batch_size, today, as_json) -> int:
    """The old models answer their training and validation prompts (resumable)."""
    say_countdown(today)
    done = _distil(models, yes, requests_per_minute, batch_size, today)
    if as_json:
        common.print_json([d.to_dict() for d in done])
    return 0 if all(d.complete or d.skipped for d in done) else 1


def _distil(models, yes, requests_per_minute, batch_size, today):
    # loaded when this command runs: the others start without it
    from tunelab.migrate.distil import distil

    cancel = threading.Event()
    bars = DistilProgress()
    try:
        with ctrl_c_cancels(cancel):
            done = distil(
                list(models) or None,
                today=today,
                confirm=_say_estimate if yes else _confirm,
                progress=bars,
                cancel=cancel,
                batch_size=batch_size,
                requests_per_minute=requests_per_minute,
            )
    finally:
        bars.stop()
    for d in done:
        _say_distilled(d)
    return done


class DistilProgress:
    """A bar per model on stderr, started at the first answer (after any confirmation)."""

    def __init__(self) -> None:
        self.bar, self.tasks = None, {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if not common.stderr.is_terminal:
            return
        if self.bar is None:
            self.bar = count_bar("{task.description}", TimeRemainingColumn())
            self.bar.start()
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(escape(f"distilling {name}"), total=total)
        self.bar.update(self.tasks[name], completed=done)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _confirm(estimate) -> bool:
    _say_estimate(estimate)
    return click.confirm("Ask the old model?", default=False, err=True)


def _say_estimate(estimate) -> bool:
    """The cost before the first request (also with --yes), and how current its prices are."""
    cost = f"${estimate.cost_usd:,.2f}" if estimate.cost_usd is not None else "an unknown cost"
    if estimate.prices_checked:
        cost += f" at OpenAI's prices as checked on {estimate.prices_checked}"
    common.stderr.print(
        f"{escape(estimate.fine_tuned_model)}: {estimate.n_prompts - estimate.n_answered:,} "
        f"prompt(s) to ask ({estimate.n_answered:,} answered before), about "
        f"{estimate.input_tokens:,} input and {estimate.output_tokens:,} output tokens: {cost}.",
        highlight=False,
    )
    if estimate.prices_source:
        common.stderr.print(f"  (current prices: {estimate.prices_source})", highlight=False)
    return True


def _say_distilled(d) -> None:
    if d.skipped:
        common.stderr.print(f"{escape(d.fine_tuned_model)}: skipped ({d.skipped})")
    elif d.complete:
        common.stderr.print(f"{escape(d.fine_tuned_model)}: distilled into {d.train}")
    else:
        common.stderr.print(
            f"[yellow]{escape(d.fine_tuned_model)}:[/] {d.failed} request(s) failed and are "
            f"left out of {d.train}; run again to ask only those."
        )


@openai_group.command("run")
@target_options
@click.option(
    "--distil",
    "distil_first",
    is_flag=True,
    help="First have each old model answer its prompts, and train on those too.",
)
@distil_options
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A hyperparameter for every new job (e.g. lora_rank=8).",
)
@click.option("--no-start", is_flag=True, help="Queue local jobs without starting a worker.")
@click.option(
    "--alias",
    "make_aliases",
    is_flag=True,
    help="Make each old ft: name an alias of its replacement once its job has succeeded, so "
    "`tunelab serve` answers it (run again after `tunelab jobs wait JOB`).",
)
@dated_json_options
def run_cmd(
    target,
    target_for,
    prices,
    distil_first,
    models,
    yes,
    requests_per_minute,
    batch_size,
    settings,
    no_start,
    make_aliases,
    today,
    as_json,
) -> int:
    """Create the equivalent jobs on the targets, through the job registry."""
    # loaded when this command runs: the others start without it
    from tunelab.migrate.plan import alias_migrated, make_plan, require_fine_tunes, run_plan

    say_countdown(today)
    if distil_first:
        _distil(models, yes, requests_per_minute, batch_size, today)
    plan = make_plan(_targets(target, target_for), today=today, prices=prices)
    require_fine_tunes(plan)
    if models:
        plan["models"] = [row for row in plan["models"] if row["fine_tuned_model"] in models]
    outcomes = run_plan(
        plan,
        today=today,
        distilled=distil_first,
        extra_hyperparameters=_settings(settings),
        start_worker=not no_start,
    )
    if make_aliases:
        outcomes = alias_migrated(outcomes)
    if as_json:
        common.print_json(outcomes)
        return 0
    for outcome in outcomes:
        job = outcome["job"]
        what = f"{job['id']} ({job['status']}, {job['provider']})" if job else "-"
        why = f" — skipped: {outcome['skipped']}" if outcome["skipped"] else ""
        common.stdout.print(f"{escape(outcome['fine_tuned_model'])} → {what}{why}")
        _say_alias(outcome, make_aliases)
    common.stdout.print("`tunelab jobs wait JOB` follows a job.")
    return 0


def _say_alias(outcome: dict, asked: bool) -> None:
    if not asked:
        return
    if outcome["alias"]:
        line = f"  alias: {outcome['fine_tuned_model']} is answered by {outcome['alias']}"
    else:
        line = "  no alias yet: its job has not succeeded (run again with --alias once it has)"
    common.stdout.print(escape(line), highlight=False)


def _settings(pairs: tuple[str, ...]) -> dict:
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--set")
        values[key] = _number(text)
    return values


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue  # not this kind of number: try the next
    return text


@openai_group.command("compare")
@click.argument("fine_tuned_model")
@click.option(
    "--task",
    type=click.Choice(("classify", "queries", "judge")),
    help="How to score (default: chosen from the validation answers).",
)
@click.option("--judge", help="The judge model, for free-text answers.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N validation items.")
@judge_max_tokens_option()
@click.option(
    "--fresh",
    is_flag=True,
    help="Ask the old model again even when its distilled answers cover the validation "
    "prompts (it costs money; impossible once it has stopped answering).",
)
@dated_json_options
def compare_cmd(
    fine_tuned_model, task, judge, limit, judge_max_tokens, fresh, today, as_json
) -> int:
    """Evaluate the old model against its replacement on the validation file (recorded).

    The old model's side is its distilled answers when they cover the validation prompts
    (and after it stops answering, whatever of them was distilled); otherwise it is asked.
    """
    # loaded when this command runs: the others start without it
    from tunelab.migrate.compare import compare

    say_countdown(today)
    cancel = threading.Event()
    with ctrl_c_cancels(cancel), EvalProgress(quiet=as_json) as progress:
        result = compare(
            fine_tuned_model,
            task=task,
            judge=judge,
            today=today,
            limit=limit,
            judge_max_tokens=judge_max_tokens,
            fresh=fresh,
            progress=progress,
            cancel=cancel,
        )
    for note in result.options.get("notes", []):
        common.stderr.print(escape(note), highlight=False)
    return show_evaluation(result, as_json)
