"""One training run, set up → train → clean up: what `tunelab train` and the worker both drive.

`TrainingRun` owns what every caller of the trainer needs: the output directory checked before
minutes of loading, the base model and tokenizer loaded, the `--report-to` trackers opened on
rank 0 (and closed), `trainer.train` called with the caller's callback, cancel flag and resume,
and its result. Asked for several processes (`Launch`), it starts the torchrun ranks itself;
each rank then runs the same run. Callers keep only what is theirs: the CLI its progress display
and Ctrl-C, the worker its registry recording (the callback) and its job bookkeeping.

    with TrainingRun(model, train_path, val_path, output_dir, config) as run:  # set up
        result = run.train()                                                   # clean up on exit
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.engine.config import TrainConfig
from tunelab.engine.sources import ModelInfo, resolve_model_source
from tunelab.engine.steps import StepRecord
from tunelab.errors import usage_error
from tunelab.io import check_writable
from tunelab.reporting import Reporters, check_reporters

# The trainer, the model loaders and torch.distributed load torch (seconds): they are imported
# where a run checks, loads or trains, so that `tunelab train --help` and a bad model name or
# tracker stay fast.
if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tunelab.engine.distributed import Ranks
    from tunelab.engine.reinforcement import Reward
    from tunelab.engine.trainer import Cancel, TrainResult


@dataclass(frozen=True)
class Launch:
    """How many processes train: `nproc_per_node` on each of `nnodes` machines (torchrun)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None

    @property
    def several(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1

    def check(self) -> None:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise usage_error(
                "rdzv_endpoint_missing",
                "--nnodes above 1 needs --rdzv-endpoint HOST:PORT (where the machines meet).",
            )


@dataclass
class TrainingRun:
    """Fine-tune `model` (a name or path) on chat JSONL files into `output_dir`.

    `reward` scores the model's answers in reinforcement training (`config.training_method`
    "reinforcement"): the caller builds it, from a grader for instance.

    `need_checkpoint`: `resume` must find a checkpoint (the CLI's `--resume`; the worker
    resumes when it can). `callback` gets each step's `StepRecord` (on rank 0 only), as do the
    `report_to` trackers; `cancel` stops the run with a checkpoint of its last complete step
    (in one process also part-way through a step: `trainer.train`). `on_validation` and
    `on_sampling` hear of a validation pass's batches and of reinforcement's sampled answers.
    """

    model: str
    train_data: Path
    val_data: Path | None
    output_dir: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    metadata: dict = field(default_factory=dict)
    resume: bool = False
    force: bool = False
    need_checkpoint: bool = False
    report_to: tuple[str, ...] = ()
    trust_remote_code: bool = False
    callback: Callable[[StepRecord], None] | None = None
    on_validation: Callable[[int, int], None] | None = None
    on_sampling: Callable[[int, int], None] | None = None
    cancel: Cancel | None = None
    launch: Launch = field(default_factory=Launch)
    reward: Reward | None = None
    # What `setup` loads and opens; `cleanup` closes.
    base: PreTrainedModel | None = field(default=None, init=False, repr=False)
    tokenizer: PreTrainedTokenizerBase | None = field(default=None, init=False, repr=False)
    info: ModelInfo | None = field(default=None, init=False, repr=False)
    reporters: Reporters | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        check_reporters(self.report_to)  # a missing tracker fails before any work

    @cached_property
    def source(self) -> ModelInfo:
        """What `model` names, found without loading it: a bad name fails at once."""
        return resolve_model_source(self.model)

    @property
    def needs_ranks(self) -> bool:
        """Several processes asked for, and this is not one of them yet."""
        return self.launch.several and not _ranks().active

    def check_output(self) -> None:
        """Refuse an output that training would overwrite or cannot write, before loading.
        The launcher has checked it for its ranks."""
        # imports torch: loaded where it is used, so engine.config and light commands stay light
        from tunelab.engine.checkpoint import check_output_dir

        if _ranks().active:
            return
        check_output_dir(
            self.output_dir,
            resume=self.resume,
            force=self.force,
            need_checkpoint=self.need_checkpoint,
            inputs=(self.source.path,),
        )
        check_writable(self.output_dir, "--output directory")

    def plan(self) -> dict:
        """What the run would do (data, steps, time), from the tokenizer alone."""
        # imports torch: loaded where it is used, so engine.config and light commands stay light
        from tunelab.engine.models import load_tokenizer
        from tunelab.engine.trainer import plan

        tokenizer = load_tokenizer(self.source, trust_remote_code=self.trust_remote_code)
        source = self.source
        return plan(
            tokenizer,
            self.train_data,
            self.val_data,
            self.config,
            model_context=source.context_length,
            base_model=source.name,
        )

    def start_ranks(self, args: list[str]) -> int:
        """Run `tunelab ARGS` in the launch's torchrun processes; their exit code. Ctrl-C
        reaches torchrun and its ranks (which checkpoint), not this launcher."""
        # imports torch: loaded where it is used, so engine.config and light commands stay light
        from tunelab.engine.distributed import torchrun_command

        self.launch.check()
        launch = self.launch
        command = torchrun_command(
            args, launch.nproc_per_node, launch.nnodes, launch.node_rank, launch.rdzv_endpoint
        )
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            return subprocess.run(command, check=False).returncode
        finally:
            signal.signal(signal.SIGINT, previous)

    def setup(self) -> TrainingRun:
        """Check the output, load the base model and tokenizer, open the trackers."""
        # imports torch: loaded where it is used, so engine.config and light commands stay light
        from tunelab.engine.models import load_base

        self.check_output()
        self.base, self.tokenizer, self.info = load_base(
            self.model,
            trust_remote_code=self.trust_remote_code,
            load_in_4bit=self.config.load_in_4bit,
        )
        if self.report_to and _ranks().is_main:
            config = dataclasses.asdict(self.config)
            self.reporters = Reporters(self.report_to, self.output_dir, config)
        return self

    def train(self) -> TrainResult:
        """Run the trainer (after `setup`): until done, cancelled or failed."""
        # imports torch: loaded where it is used, so engine.config and light commands stay light
        from tunelab.engine.trainer import train

        if self.base is None or self.info is None:
            raise RuntimeError("TrainingRun.train() before setup()")
        return train(
            self.base,
            self.tokenizer,
            self.train_data,
            self.val_data,
            self.config,
            self.output_dir,
            base_model=self.info.name,
            metadata=self.metadata,
            callback=self._step,
            cancel=self.cancel,
            resume=self.resume,
            force=self.force,
            on_validation=self.on_validation,
            reward=self.reward,
            on_sampling=self.on_sampling,
        )

    def cleanup(self) -> None:
        """Close the trackers and let the model go."""
        if self.reporters is not None:
            self.reporters.close()
            self.reporters = None
        self.base = self.tokenizer = None

    def run(self) -> TrainResult:
        with self:
            return self.train()

    def __enter__(self) -> TrainingRun:
        try:
            return self.setup()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def _step(self, record: StepRecord) -> None:
        if self.callback is not None:
            self.callback(record)
        if self.reporters is not None:
            self.reporters(record.as_metrics())


def _ranks() -> Ranks:
    """The torchrun ranks this process is one of (one process outside torchrun)."""
    # imports torch: loaded where it is used, so engine.config and light commands stay light
    from tunelab.engine.distributed import Ranks

    return Ranks.from_env()
