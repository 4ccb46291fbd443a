"""`tunelab jobs`: create, watch and manage fine-tuning jobs on any provider.

A thin layer over `tunelab.providers.jobs`; `--json` prints OpenAI's `fine_tuning.job`
objects so scripts written against OpenAI's API read them unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.options import (
    base_model_option,
    choice_option,
    grader_option,
    json_option,
    training_files,
)
from tunelab.cli.progress import count_bar, reading_progress
from tunelab.cli.render import duration, findings_table, print_listing, short_name, when
from tunelab.cli.train_options import given_settings, nproc_option, setting_options
from tunelab.curves import terminal_curve
from tunelab.data.analyze import analyze_file
from tunelab.engine.config import AUTO
from tunelab.errors import TunelabError
from tunelab.evals.graders import read_grader_file
from tunelab.providers import jobs as api
from tunelab.providers.base import TERMINAL_STATUSES
from tunelab.providers.local.artifacts import on_this_machine
from tunelab.providers.local.jobs import JOB_LOG
from tunelab.providers.methods import describe_method
from tunelab.providers.registry import DEFAULT_PROVIDER
from tunelab.providers.wire import event_object, job_object, method_settings
from tunelab.registry import Event, Job

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "paused": "yellow",
    "running": "cyan",
    "queued": "blue",
    "validating_files": "blue",
}

# A reinforcement job's grader (a resumed job keeps the one it was created with).
job_grader_option = grader_option(
    "--training-method reinforcement: the grader (OpenAI's definition, JSON) that scores "
    "the answers."
)
# Whether to leave a local job queued for a worker started later (`create` and `resume`).
no_start_option = click.option(
    "--no-start", is_flag=True, help="Queue a local job without starting a worker."
)


@click.group("jobs")
def jobs_group() -> None:
    """Fine-tuning jobs on every provider: local (default), together, openai."""


@jobs_group.command("create")
@training_files
@choice_option(
    "--provider", choices=api.PROVIDERS, default=DEFAULT_PROVIDER, help="Where the job runs."
)
@base_model_option()
@setting_options
@click.option(
    "--suffix",
    help="Added to the fine-tuned model's name (up to 64 letters, digits, '-', '_', '.').",
)
@click.option("--name", help="A name for the job, shown in `jobs list`.")
@click.option("--base-url", help="The provider's endpoint (an OpenAI-compatible service).")
@click.option("--key-env", help="Variable holding the key for --base-url (never sent otherwise).")
@nproc_option(
    "Train a local job data-parallel in this many processes (one per GPU; on a CPU, "
    "gloo), started by the worker with torchrun."
)
@job_grader_option
@no_start_option
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job to finish (as `jobs wait`).")
@json_option("Print the job object as JSON.")
def create_cmd(
    train_file,
    val_file,
    provider,
    model,
    suffix,
    name,
    base_url,
    key_env,
    nproc_per_node,
    grader_file,
    no_start,
    wait_,
    as_json,
    **settings,
) -> int:
    """Validate the files, show the estimate, and create a job."""
    given = {k: v for k, v in given_settings(settings).items() if v != AUTO}
    seed = given.pop("seed", None)
    spec = api.JobSpec(
        training_file=train_file,
        validation_file=val_file,
        model=model,
        provider=provider,
        hyperparameters=given,
        suffix=suffix,
        name=name,
        seed=seed,
        base_url=base_url,
        key_variable=key_env,
        nproc_per_node=nproc_per_node,
        grader=read_grader_file(grader_file) if grader_file is not None else None,
    )
    report = validated(spec, as_json)
    if not as_json:
        show_estimate(spec)
    job = api.create_job(spec, start_worker=not no_start, report=report)
    if as_json and not wait_:
        common.print_json(job_object(job))
        return 0
    if not as_json:
        say_created(job, no_start)
    if wait_:
        return wait_for(job.id, as_json, timeout=None)
    return 0


def validated(spec: api.JobSpec, as_json: bool):
    with reading_progress() as progress:
        try:
            return api.validate_job_files(spec, progress=progress)
        except TunelabError as err:
            report = getattr(err, "report", None)
            if report is not None and not as_json:
                table = findings_table(report)
                if table is not None:
                    common.stderr.print(table)
            raise


def show_estimate(spec: api.JobSpec) -> None:
    """The cost (hosted) or time (local) of the job, when it can be estimated."""
    try:
        # An `ft:` model is estimated as its base (`resolve_model` reads the base from it).
        analysis = analyze_file(spec.training_file, val_path=spec.validation_file, model=spec.model)
    except TunelabError:
        return  # a model the catalog does not know: no estimate, the provider decides
    estimate = api.estimate_job(spec, analysis)
    if estimate.cost_usd is not None:
        common.stderr.print(
            f"estimated cost: about ${estimate.cost_usd:,.2f} for {estimate.n_epochs} epoch(s)",
            highlight=False,
        )
    elif estimate.seconds is not None:
        common.stderr.print(
            f"estimated training time: about {duration(estimate.seconds)} "
            f"for {estimate.total_steps:,} steps",
            highlight=False,
        )


def say_created(job: Job, no_start: bool) -> None:
    say = common.stdout.print
    where = job.provider
    say(
        f"[green]✓ created[/] {job.id} ({where}, {escape(job.model)}): {job.status}",
        highlight=False,
    )
    if no_start and api.runs_here(job):
        say("  not started: run `tunelab worker` to run queued jobs", highlight=False)
    say(f"  follow it: tunelab jobs wait {job.id}", highlight=False)


@jobs_group.command("list")
@choice_option("--provider", choices=api.PROVIDERS, help="Only this provider's jobs.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--after", help="Continue after this job id (pagination).")
@json_option("Print OpenAI-style job objects as JSON.")
def list_cmd(provider, limit, after, as_json) -> int:
    """The jobs tunelab knows, newest first."""
    jobs = api.list_jobs(limit=limit, after=after, provider=provider)
    if as_json:
        common.print_json(
            {
                "object": "list",
                "data": [job_object(j) for j in jobs],
                "has_more": len(jobs) == limit,
            }
        )
        return 0
    rows = [
        (
            job.id,
            job.provider,
            _status(job),
            escape(job.fine_tuned_model or short_name(job.model)),
            when(job.created_at, short=True),
            _progress_text(job),
        )
        for job in jobs
    ]
    columns = ("id", "provider", "status", "model", "created", "progress")
    return print_listing(
        columns, rows, "no jobs yet: `tunelab jobs create --train FILE` starts one"
    )


@jobs_group.command("show")
@click.argument("job_id")
@json_option("Print the job object as JSON.")
def show_cmd(job_id, as_json) -> int:
    """One job: status, model, hyperparameters, progress, error."""
    job = api.get_job(job_id)
    if as_json:
        common.print_json(job_object(job))
        return 0
    rows = [
        ("id", job.id + (f" ({job.provider_job_id})" if job.provider_job_id else "")),
        ("provider", job.provider),
        ("status", _status(job) + (f" ({job.raw_status})" if job.raw_status != job.status else "")),
        ("base model", escape(job.model)),
        ("fine-tuned model", escape(job.fine_tuned_model or "—")),
        ("method", describe_method(method_settings(job))),
        ("hyperparameters", _pairs(api.shown_hyperparameters(job))),
        ("given", _pairs(job.hyperparameters or {}) or "—"),
        ("created", when(job.created_at)),
        ("finished", when(job.finished_at)),
        ("progress", _progress_text(job) or escape(api.queue_note(job) or "—")),
        ("trained tokens", f"{job.trained_tokens:,}" if job.trained_tokens else "—"),
    ]
    if job.error_message:
        rows.append(
            ("error", f"[red]{escape(job.error_code or '')}[/]: {escape(job.error_message)}")
        )
    if job.output_dir:
        here = Path(on_this_machine(job).output_dir)  # outputs in a store: the copy here
        shared = "://" in job.output_dir or here.exists()
        rows.append(
            (
                "output",
                escape(job.output_dir)
                + ("" if shared else " [dim](on the machine that ran it, not on this one)[/]"),
            )
        )
        if (here / JOB_LOG).exists():
            rows.append(("log", escape(str(here / JOB_LOG))))
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    common.stdout.print(table)
    print_curve(api.list_metrics(job.id))
    return 0


def print_curve(metrics: list[dict]) -> None:
    """The loss curve as plain text (it reads the same in a terminal, a pipe or a log)."""
    lines = terminal_curve(metrics)
    if lines:
        common.stdout.out("\n" + "\n".join(lines), highlight=False)


@jobs_group.command("metrics")
@click.argument("job_id")
@json_option("Every step's metrics as JSON.")
def metrics_cmd(job_id, as_json) -> int:
    """The job's loss and validation-loss curve, and its last metrics.

    \b
    Examples:
      tunelab jobs metrics ftjob-abc123
      tunelab jobs metrics ftjob-abc123 --json | jq '.data[-1].val_loss'
    """
    metrics = api.list_metrics(job_id)
    if as_json:
        common.print_json({"object": "list", "job_id": job_id, "data": metrics})
        return 0
    if not metrics:
        common.stdout.print(f"{job_id}: no metrics yet", highlight=False)
        return 0
    print_curve(metrics)
    last = metrics[-1]
    val = [m for m in metrics if "val_loss" in m]
    text = f"step {last['step']}: training loss {last['loss']:.4f}"
    if val:
        text += f", validation loss {val[-1]['val_loss']:.4f} (step {val[-1]['step']})"
    common.stdout.out(text, highlight=False)
    return 0


def _pairs(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


@jobs_group.command("events")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until it ends.")
@json_option("One JSON event object per line.")
def events_cmd(job_id, follow, as_json) -> int:
    """The job's events, oldest first."""
    seen = 0
    while True:
        events = api.list_events(job_id, after_seq=seen)
        for event in events:
            print_event(event, as_json)
            seen = event.seq
        if not follow:
            return 0
        job = api.get_job(job_id)
        if job.status in TERMINAL_STATUSES or job.status == "paused":
            for event in api.list_events(job_id, after_seq=seen):
                print_event(event, as_json)
            return 0
        time.sleep(api.poll_seconds(job))


def print_event(event: Event, as_json: bool) -> None:
    if as_json:
        # The event as the API sends it, but with its data as stored (null when it has none).
        common.print_json({**event_object(event), "data": event.data})
        return
    style = {"error": "red", "warn": "yellow"}.get(event.level, "")
    text = escape(event.message)
    common.stdout.print(
        f"{when(event.created_at)}  " + (f"[{style}]{text}[/]" if style else text), highlight=False
    )


@jobs_group.command("checkpoints")
@click.argument("job_id")
@json_option()
def checkpoints_cmd(job_id, as_json) -> int:
    """The job's checkpoints, newest first."""
    points = api.list_checkpoints(job_id)
    if as_json:
        common.print_json(
            {"object": "list", "data": [p.to_dict() for p in points], "has_more": False}
        )
        return 0
    table = Table()
    for column in ("step", "created", "loss", "checkpoint"):
        table.add_column(column)
    for point in points:
        loss = point.metrics.get("loss", point.metrics.get("train_loss"))
        table.add_row(
            str(point.step),
            when(point.created_at),
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "—",
            escape(point.fine_tuned_model_checkpoint or ""),
        )
    common.stdout.print(table)
    return 0


@jobs_group.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@json_option("Print the final job object as JSON.")
def wait_cmd(job_id, timeout, as_json) -> int:
    """Wait for the job to finish, with progress; exit 0 only when it succeeded."""
    return wait_for(job_id, as_json, timeout)


def wait_for(job_id: str, as_json: bool, timeout: float | None) -> int:
    with JobProgress(quiet=as_json) as progress:
        job = api.wait_job(job_id, on_update=progress, timeout=timeout)
    if as_json:
        common.print_json(job_object(job))
    else:
        say_finished(job)
    return 0 if job.status == "succeeded" else 1


def say_finished(job: Job) -> None:
    say = common.stdout.print
    if job.status == "succeeded":
        say(f"[green]✓ succeeded[/]: {escape(job.fine_tuned_model or '')}", highlight=False)
        say(f"  chat with it: tunelab chat {escape(job.fine_tuned_model or '')}", highlight=False)
    elif job.status == "failed":
        say(
            f"[red]✗ failed[/] [{escape(job.error_code or '')}]: {escape(job.error_message or '')}",
            highlight=False,
        )
    else:
        say(f"[yellow]{job.status}[/] {job.id}", highlight=False)


class JobProgress:
    """A progress bar (step, loss, ETA) on stderr; when not a terminal, a line when the status
    changes and about every 5% of the steps (never one per poll: logs stay short)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet, self.bar, self.task = quiet, None, None
        self.last_status, self.last_step = None, None

    def __enter__(self) -> JobProgress:
        if common.stderr.is_terminal and not self.quiet:
            self.bar = count_bar("{task.fields[status]}", TextColumn("{task.fields[detail]}"))
            self.bar.start()
            self.task = self.bar.add_task("job", total=None, status="", detail="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, job: Job) -> None:
        progress = job.progress or {}
        detail = _progress_text(job) or api.queue_note(job) or ""
        if self.bar is not None:
            self.bar.update(
                self.task,
                completed=progress.get("step", 0),
                total=progress.get("total_steps"),
                status=job.status,
                detail=detail,
            )
        elif not self.quiet and self._worth_a_line(job.status, progress):
            common.stderr.print(f"{job.status}  {detail}".rstrip(), highlight=False)

    def _worth_a_line(self, status: str, progress: dict) -> bool:
        step, total = progress.get("step"), progress.get("total_steps") or 0
        changed = status != self.last_status
        if not changed and step is not None and step != self.last_step:
            every = max(1, total // 20)
            changed = (
                self.last_step is None or step == total or (step // every > self.last_step // every)
            )
        if changed:
            self.last_status, self.last_step = status, step
        return changed


@jobs_group.command("cancel")
@click.argument("job_id")
@json_option()
def cancel_cmd(job_id, as_json) -> int:
    """Cancel a job; a running local job stops after its current step."""
    job = api.cancel_job(job_id)
    return _after_change(job, as_json, "cancel")


@jobs_group.command("pause")
@click.argument("job_id")
@json_option()
def pause_cmd(job_id, as_json) -> int:
    """Pause a job (local or OpenAI); `jobs resume` continues it."""
    return _after_change(api.pause_job(job_id), as_json, "pause")


@jobs_group.command("resume")
@click.argument("job_id")
@no_start_option
@json_option()
def resume_cmd(job_id, no_start, as_json) -> int:
    """Continue a paused job, or a failed or cancelled local job from its last checkpoint."""
    return _after_change(api.resume_job(job_id, start_worker=not no_start), as_json, "resume")


def _after_change(job: Job, as_json: bool, action: str) -> int:
    if as_json:
        common.print_json(job_object(job))
    elif job.status == "running" and action != "resume":
        common.stdout.print(
            f"{job.id}: {action} requested; it stops after its current step", highlight=False
        )
    else:
        common.stdout.print(f"{job.id}: {_status(job)}", highlight=False)
    return 0


@jobs_group.command("delete")
@click.argument("job_id")
def delete_cmd(job_id) -> int:
    """Forget a finished job (the model it produced stays)."""
    api.delete_job(job_id)
    common.stdout.print(f"deleted {job_id}", highlight=False)
    return 0


def _status(job: Job) -> str:
    style = STATUS_STYLE.get(job.status, "")
    return f"[{style}]{job.status}[/]" if style else job.status


def _progress_text(job: Job) -> str:
    progress = job.progress or {}
    if not progress:
        return ""
    text = f"step {progress['step']}/{progress['total_steps']}  loss {progress['loss']:.4f}"
    if job.status == "running" and job.estimated_finish:
        text += f"  ETA {duration(max(0, job.estimated_finish - time.time()))}"
    return text
