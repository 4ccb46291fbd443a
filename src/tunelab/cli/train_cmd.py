"""`tunelab train`: fine-tune a local model in the foreground, with progress and Ctrl-C.

Every TrainConfig field is a flag (its docstring is the help); every one accepts `auto`,
meaning tunelab's default. The data is validated before the model is loaded, so a bad file
fails in seconds. Ctrl-C stops the run after the current step with a checkpoint, and
`--resume` continues it. Reinforcement training scores the model's answers with `--grader`
(an OpenAI grader definition), recorded in the run's metadata: `--resume` reuses it.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from tunelab.catalog import WEIGHTS_MARKER
from tunelab.cli import common
from tunelab.cli.cancel import EXIT_INTERRUPTED, ctrl_c_cancels
from tunelab.cli.options import (
    base_model_option,
    grader_option,
    json_option,
    output_option,
    training_files,
)
from tunelab.cli.progress import TrainingProgress, token_counting_progress
from tunelab.cli.render import (
    duration,
    findings_table,
    render_training_result,
    say_waiting,
)
from tunelab.cli.train_options import (
    SETTING_TYPES,
    UNSET,
    Setting,
    given_settings,
    nproc_option,
    setting_options,
)
from tunelab.data.method_scan import require_valid
from tunelab.data.reinforcement import grader_item_fields
from tunelab.engine.config import TrainConfig
from tunelab.errors import TunelabError, usage_error
from tunelab.evals.graders import parse_grader, read_grader_file
from tunelab.evals.graders.reward import reward_for
from tunelab.io import file_sha256
from tunelab.providers.local.jobs import model_spec_of
from tunelab.reporting import REPORTERS

if TYPE_CHECKING:  # the engine's models and trainer load torch: only commands that train do
    from tunelab.engine.models import ModelInfo


def build_config(settings: dict) -> TrainConfig:
    """The TrainConfig the flags describe; `auto` and unset flags keep the field's default."""
    return TrainConfig.from_settings(given_settings(settings))


@click.command("train")
@training_files
@base_model_option(
    "Base model: the bundled alias, a Hugging Face model directory, a tunelab training "
    "output (to train further) or a Hub id."
)
@output_option(
    "Directory for the adapter or weights, metrics.jsonl, loss.svg and checkpoints.",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
)
@setting_options
@click.option("--resume", is_flag=True, help="Continue the run in --output from its checkpoint.")
@click.option("--force", is_flag=True, help="Start over in an --output that holds a run.")
@click.option(
    "--report-to",
    multiple=True,
    type=click.Choice(REPORTERS),
    help="Also send the metrics to this experiment tracker (repeatable; its package must be "
    "installed).",
)
@grader_option(
    "Reinforcement: the grader (OpenAI's definition, JSON) whose score of each sampled "
    "answer is its reward; --resume reuses the run's."
)
@click.option("--dry-run", is_flag=True, help="Print the plan (examples, tokens, steps, time).")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Let --model run its own Python code (models transformers does not implement). "
    "Only for models whose code you trust.",
)
@nproc_option(
    "Train data-parallel in this many processes (one per GPU; on a CPU, gloo), started "
    "with torchrun."
)
@click.option(
    "--nnodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Machines taking part; run the same command on each (with --rdzv-endpoint).",
)
@click.option("--node-rank", type=click.IntRange(min=0), help="This machine's rank (0 first).")
@click.option(
    "--rdzv-endpoint",
    metavar="HOST:PORT",
    help="Where the machines of a multi-node run meet (machine 0's address and a free port).",
)
@json_option("Print the result (or plan) as JSON.")
@click.pass_context
def train_cmd(
    ctx: click.Context,
    train_file: Path,
    val_file: Path | None,
    model: str,
    output: Path,
    resume: bool,
    force: bool,
    dry_run: bool,
    trust_remote_code: bool,
    nproc_per_node: int,
    nnodes: int,
    node_rank: int | None,
    rdzv_endpoint: str | None,
    report_to: tuple[str, ...],
    grader_file: Path | None,
    as_json: bool,
    **settings,
) -> int:
    """Fine-tune a local model (LoRA or full) on chat JSONL from `tunelab format`, on
    preference pairs with --training-method dpo, or on prompts with --training-method
    reinforcement and a --grader."""
    # The run object imports torch only where it loads or trains: a bad flag, tracker, model
    # name or output fails in a moment.
    from tunelab.engine.run import Launch, TrainingRun

    progress = TrainingProgress(quiet=as_json)
    cancel = threading.Event()
    config = build_config(settings)
    grader = run_grader(grader_file, config.training_method, output, resume)
    run = TrainingRun(
        model,
        train_file,
        val_file,
        output,
        config,
        resume=resume,
        force=force,
        need_checkpoint=True,
        report_to=report_to,
        trust_remote_code=trust_remote_code,
        callback=progress,
        on_validation=progress.validating,
        on_sampling=progress.sampling,
        cancel=cancel,
        launch=Launch(nproc_per_node, nnodes, node_rank, rdzv_endpoint),
        reward=reward_for(grader) if grader is not None else None,
    )
    info = run.source  # before torch loads: a bad name fails at once
    if not dry_run:  # before minutes of loading (or the ranks starting), not after
        run.check_output()
    check_training_data(
        train_file, val_file, info, as_json, run.config.training_method, grader_item_fields(grader)
    )
    if dry_run:
        result = run.plan()
        if as_json:
            common.print_json(result)
        else:
            render_plan(result, info, auto=left_auto(config))
        return 0
    if run.needs_ranks:
        return run.start_ranks(rank_arguments(ctx))
    run.metadata = {
        "train_file": str(train_file),
        "train_file_sha256": file_sha256(train_file),
        "val_file": val_file and str(val_file),
        **({"grader": grader} if grader is not None else {}),
    }
    say_loading(info)
    with run, ctrl_c_cancels(cancel), progress:  # Ctrl-C while loading aborts at once
        result = run.train()
    if as_json:
        common.print_json({**result.to_dict(), "model": run.info.to_dict()})
    else:
        render_training_result(result, resume_command(ctx))
    return EXIT_INTERRUPTED if result.status == "cancelled" else 0


# Options of the launcher, not of each rank's `tunelab train`.
_LAUNCH_OPTIONS = {"nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "dry_run"}


def rank_arguments(ctx: click.Context) -> list[str]:
    """`train ...` with the options given, for each process torchrun starts."""
    names = {"train_file": "--train", "val_file": "--val", "as_json": "--json"}
    args = ["train"]
    for name, value in ctx.params.items():
        flag = names.get(name, "--" + name.replace("_", "-"))
        if name in _LAUNCH_OPTIONS or value is UNSET or (value is False and name in _FLAGS):
            continue
        if name in _FLAGS:
            args.append(flag)
        elif name == "report_to":  # repeatable: once per tracker
            args += [word for tracker in value for word in (flag, tracker)]
        elif value is None:
            if name in SETTING_TYPES:
                args += [flag, "none"]  # `--max-grad-norm none`
        else:
            args += [flag, _flag_value(value)]
    return args


_FLAGS = {"resume", "force", "trust_remote_code", "as_json"}


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def run_grader(grader_file: Path | None, method: str, output: Path, resume: bool) -> dict | None:
    """The grader definition of a reinforcement run: --grader's, or with --resume the one the
    run recorded (a different one is refused: the rewards would change mid-run)."""
    given = read_grader_file(grader_file) if grader_file is not None else None
    if method != "reinforcement":
        if given is not None:
            raise usage_error(
                "grader_unused", "--grader scores answers of --training-method reinforcement."
            )
        return None
    recorded = recorded_grader(output) if resume else None
    if given is not None and recorded is not None and given != recorded:
        raise usage_error(
            "resume_mismatch",
            f"--grader {grader_file} differs from the grader the run in {output} started with.",
            hint="resume without --grader (the run's is reused), or pass --force to start over",
        )
    grader = given if given is not None else recorded
    if grader is None:
        raise usage_error(
            "grader_missing",
            "--training-method reinforcement needs --grader GRADER.json to score the answers.",
        )
    parse_grader(grader)  # a bad definition fails before the model loads
    return grader


def recorded_grader(output: Path) -> dict | None:
    """The grader recorded in the latest checkpoint of the run in `output`, if any."""
    # imports torch: loaded where it is used, so a bad flag fails in a moment
    from tunelab.engine.checkpoint import latest_checkpoint, read_checkpoint_meta

    checkpoint = latest_checkpoint(output)
    if checkpoint is None:
        return None
    return read_checkpoint_meta(checkpoint)["metadata"]["metadata"].get("grader")


def check_training_data(
    train_file: Path,
    val_file: Path | None,
    info: ModelInfo,
    as_json: bool,
    method: str,
    required_fields: Sequence[str] = (),
):
    """Validate the files for the model and training method (the API's rule; reinforcement
    items need the fields the grader reads); on errors, show the findings."""
    with token_counting_progress(info.name) as progress:
        try:
            report = require_valid(
                train_file,
                method=method,
                val_path=val_file,
                model=model_spec_of(info),
                progress=progress,
                grader_fields=required_fields,
            )
        except TunelabError as error:
            # Only a failed validation has findings (not, say, a tokenizer that fails to load).
            report = getattr(error, "report", None)
            if report is None:
                raise
            if as_json:
                common.print_json({"error": error.to_dict(), "validation": report.to_dict()})
            elif (table := findings_table(report)) is not None:
                common.stderr.print(table)
            raise
    if report.n_warnings and not as_json:
        common.stderr.print(
            f"[yellow]{report.n_warnings:,} warning(s)[/] in the data "
            f"(see `tunelab validate {escape(str(train_file))}`)",
            highlight=False,
        )


def say_loading(info: ModelInfo) -> None:
    """What the minutes before the first step are spent on."""
    converting = info.kind == "bundled" and not (info.path / WEIGHTS_MARKER).exists()
    what = (
        "converting the bundled model to a Hugging Face directory (once, about 20 s)"
        if converting
        else f"loading {info.name}"
    )
    say_waiting(what)


def resume_command(ctx: click.Context) -> str:
    """The command that continues this run: the same flags, plus --resume."""
    parts = ["tunelab", "train"]
    skipped = {"resume", "force", "dry_run", "as_json"}
    # A torchrun rank was started without the launcher's --nproc-per-node: it is in torchrun's
    # environment (a sharded run's checkpoint resumes only in as many processes).
    launched = {"nproc_per_node": os.environ.get("LOCAL_WORLD_SIZE")}
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if launched.get(param.name):
            value = int(launched[param.name])
        if value is None and isinstance(param.type, Setting):
            value = "none"  # --max-grad-norm none
        if param.name in skipped or value is UNSET or value is None or value is False:
            continue
        if isinstance(value, tuple):  # a repeatable flag: once per value
            parts += [word for item in value for word in (param.opts[0], str(item))]
        else:
            parts += [param.opts[0]] if value is True else [param.opts[0], str(value)]
    return shlex.join([*parts, "--resume"])


def left_auto(config: TrainConfig) -> set[str]:
    """The settings of the plan that tunelab picks (left to `auto`)."""
    return {name for name in ("n_epochs", "batch_size") if getattr(config, name) == "auto"}


def render_plan(result: dict, info: ModelInfo, auto: set[str] = frozenset()) -> None:
    config, train_stats, val = result["config"], result["train"], result["val"]
    seconds = result["estimated_seconds"]
    short = result["total_steps"] < result["steps_per_epoch"] * config["n_epochs"]
    examples = f"{train_stats['n_examples']:,} training"
    if train_stats["n_truncated"]:
        examples += (
            f" ({train_stats['n_truncated']:,} truncated to {config['max_seq_len']:,} tokens)"
        )
    if val:
        examples += f", {val['n_examples']:,} validation"
    estimate = (
        f"about {duration(seconds)} at {result['throughput']['tokens_per_second']:,.0f} tokens/s "
        f"(measured {result['throughput']['measured_at'][:10]})"
        if seconds is not None
        else "unknown until a first run measures this model's speed here"
    )
    rows = [
        ("base model", f"{info.name} ({config['method']})"),
        ("examples", examples),
        (
            "tokens per epoch",
            f"{train_stats['total_tokens']:,} ({train_stats['trained_tokens']:,} trained)",
        ),
        (
            "epochs",
            f"{config['n_epochs']}"
            + (" (auto: by the number of examples)" if "n_epochs" in auto else "")
            + (" (cut short by --max-steps)" if short else ""),
        ),
        ("batch size", f"{config['batch_size']}" + (" (auto)" if "batch_size" in auto else "")),
        ("steps", f"{result['total_steps']:,} ({result['steps_per_epoch']:,} per epoch)"),
        (
            "learning rate",
            f"{config['learning_rate']:.2g} ({config['lr_scheduler']}, "
            f"{config['warmup_steps']} warm-up steps)",
        ),
        ("tokens to process", f"{result['tokens_to_process']:,}"),
        ("estimated time", estimate),
    ]
    table = Table(show_header=False, show_edge=False, pad_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, escape(value))
    common.stdout.print(table)
