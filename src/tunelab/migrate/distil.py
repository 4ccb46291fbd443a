"""Distil while it answers: the old `ft:` model answers its training and validation prompts.

Prompts are the messages before each example's last assistant answer. Answers are appended
to `answers.jsonl` as they arrive, one line per prompt keyed by the SHA-256 of its messages,
so an interrupted run resumes without asking the same prompt twice; a failed request is not
written and is asked again next time. At the end the results are committed atomically:
`train.jsonl` (the training prompts with the old model's answers: the
extra training file) and `validation.jsonl` (its answers to the validation prompts), with
`provenance.json` beside them saying where they came from (prompts whose request failed
are left out and counted; running again asks only those). Requests go a batch at a time, a
few in parallel, under a requests-per-minute limit; the provider retries 429s as asked.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from tunelab.errors import TunelabError
from tunelab.evals.items import load_items
from tunelab.io import atomic_write_text, file_sha256
from tunelab.migrate.dates import require_answering, utc_today
from tunelab.migrate.inventory import migrate_dir, openai_jobs, registered_file
from tunelab.providers.resolve import resolve_chat_model
from tunelab.registry import Job, Store

# OpenAI's prices for fine-tuned models' answers (USD per 1M tokens: input, output). Every
# estimate names the day they were checked at the source: update both together.
FT_INFERENCE_PRICES_SOURCE = "https://openai.com/api/pricing/"
FT_INFERENCE_PRICES_CHECKED = "2025-11-01"
FT_INFERENCE_PRICES = {
    "gpt-4o-mini": (0.30, 1.20),
    "gpt-4o": (3.75, 15.00),
    "gpt-4.1-nano": (0.20, 0.80),
    "gpt-4.1-mini": (0.80, 3.20),
    "gpt-4.1": (3.00, 12.00),
    "gpt-3.5-turbo": (3.00, 6.00),
}
TOKENS_PER_MESSAGE = 4  # OpenAI's framing of a chat message, for the estimate
BATCH_SIZE = 16
CONCURRENCY = 4
MAX_TOKENS = 1024


@dataclass(frozen=True)
class DistilPaths:
    directory: Path
    answers: Path  # appended as answers arrive
    train: Path  # committed at the end: the extra training file
    validation: Path
    provenance: Path


@dataclass(frozen=True)
class Prompt:
    key: str  # SHA-256 of the messages
    messages: list[dict]
    split: str  # "train" or "validation"
    gold: str  # the answer in the file (for the output-length estimate)


@dataclass
class Estimate:
    fine_tuned_model: str
    n_prompts: int
    n_answered: int  # already in answers.jsonl: not asked again
    input_tokens: int
    output_tokens: int  # estimated from the answers in the files
    cost_usd: float | None
    prices_checked: str | None = None  # when the prices behind cost_usd were checked
    prices_source: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def distilled_paths(fine_tuned_model: str) -> DistilPaths:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in fine_tuned_model)
    directory = migrate_dir() / "distil" / safe
    return DistilPaths(
        directory,
        directory / "answers.jsonl",
        directory / "train.jsonl",
        directory / "validation.jsonl",
        directory / "provenance.json",
    )


def prompt_key(messages: list[dict]) -> str:
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_prompts(train: Path, validation: Path | None) -> list[Prompt]:
    """Every distinct prompt of the files, training first, in file order."""
    prompts: dict[str, Prompt] = {}
    for path, split in ((train, "train"), (validation, "validation")):
        if path is None:
            continue
        for item in load_items(path, "chat").items:
            key = prompt_key(item.messages)
            prompts.setdefault(key, Prompt(key, item.messages, split, item.gold))
    return list(prompts.values())


def read_answers(path: Path) -> dict[str, dict]:
    """The answers persisted so far; a line cut short by a crash is ignored."""
    answers: dict[str, dict] = {}
    if not path.exists():
        return answers
    for line in path.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the last line of an interrupted write
        answers[record["key"]] = record
    return answers


def drop_partial_line(path: Path) -> None:
    """Cut a last line an interruption left unfinished, so the next answer starts clean."""
    if not path.exists():
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def estimate(
    fine_tuned_model: str, base_model: str, prompts: list[Prompt], answered: dict[str, dict]
) -> Estimate:
    import quicktok  # its encodings load in seconds: only for an estimate

    encoding = quicktok.get_encoding("o200k_base")
    todo = [p for p in prompts if p.key not in answered]
    count = lambda text: len(encoding.encode_ordinary(text))  # noqa: E731
    inputs = sum(
        TOKENS_PER_MESSAGE * len(p.messages) + sum(count(m["content"] or "") for m in p.messages)
        for p in todo
    )
    outputs = sum(count(p.gold) + 1 for p in todo)
    price = _price(base_model)
    cost = (inputs * price[0] + outputs * price[1]) / 1e6 if price else None
    return Estimate(
        fine_tuned_model,
        len(prompts),
        len(prompts) - len(todo),
        inputs,
        outputs,
        round(cost, 6) if cost is not None else None,
        FT_INFERENCE_PRICES_CHECKED if price else None,
        FT_INFERENCE_PRICES_SOURCE if price else None,
    )


def _price(base_model: str) -> tuple[float, float] | None:
    """The longest family name the base model starts with (gpt-4.1-mini before gpt-4.1)."""
    for family in sorted(FT_INFERENCE_PRICES, key=len, reverse=True):
        if base_model.startswith(family):
            return FT_INFERENCE_PRICES[family]
    return None


class RateLimit:
    """At most `per_minute` requests a minute, spaced evenly (shared by the threads)."""

    def __init__(self, per_minute: float | None, sleep=time.sleep, clock=time.monotonic):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._sleep, self._clock, self._next, self._lock = sleep, clock, 0.0, threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            delay, self._next = max(0.0, self._next - now), max(now, self._next) + self.interval
        if delay:
            self._sleep(delay)


@dataclass
class Distillation:
    """One model's distillation: what was asked, what is done, where the files are."""

    fine_tuned_model: str
    estimate: Estimate | None = None
    asked: int = 0
    failed: int = 0
    complete: bool = False
    train: str | None = None
    validation: str | None = None
    skipped: str | None = None

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["estimate"] = self.estimate.to_dict() if self.estimate else None
        return data


Confirm = Callable[[Estimate], bool]
Progress = Callable[[str, int, int], None]  # model, answers done, answers to do


def distil(
    models: list[str] | None = None,
    *,
    today: date | None = None,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    batch_size: int = BATCH_SIZE,
    concurrency: int = CONCURRENCY,
    requests_per_minute: float | None = None,
    max_tokens: int = MAX_TOKENS,
) -> list[Distillation]:
    """Distil every succeeded OpenAI fine-tune (or those named); see the module docstring.

    `confirm(estimate)` is asked before a model's first request; False skips the model.
    """
    today = today or utc_today()
    with Store() as store:
        jobs = [
            job
            for job in openai_jobs(store)
            if job.status == "succeeded"
            and job.fine_tuned_model
            and (not models or job.fine_tuned_model in models)
        ]
        files = {
            job.id: (
                registered_file(store, job.training_file),
                registered_file(store, job.validation_file),
            )
            for job in jobs
        }
    _check_named(models, jobs)
    limit = RateLimit(requests_per_minute)
    done = []
    for job in jobs:
        train, val = files[job.id]
        if train is None:
            done.append(Distillation(job.fine_tuned_model, skipped="no training file"))
            continue
        require_answering(today, f"distilling {job.fine_tuned_model}")
        run = _Run(job, Path(train.path), Path(val.path) if val else None, limit, cancel)
        done.append(run.go(confirm, progress, batch_size, concurrency, max_tokens))
    return done


def _check_named(models: list[str] | None, jobs: list[dict]) -> None:
    unknown = sorted(set(models or ()) - {job.fine_tuned_model for job in jobs})
    if unknown:
        raise TunelabError(
            "model_not_found",
            f"no succeeded OpenAI fine-tune named {', '.join(unknown)} in the registry.",
            hint="`tunelab migrate openai inventory` lists them",
        )


class _Run:
    """One model's distillation, resumable from its answers file."""

    def __init__(self, job: Job, train: Path, val: Path | None, limit: RateLimit, cancel):
        self.job, self.train, self.val, self.limit, self.cancel = job, train, val, limit, cancel
        self.name = job.fine_tuned_model
        self.paths = distilled_paths(self.name)
        self.prompts = load_prompts(train, val)
        self.answers = read_answers(self.paths.answers)
        self._lock = threading.Lock()

    def go(self, confirm, progress, batch_size, concurrency, max_tokens) -> Distillation:
        result = Distillation(self.name)
        result.estimate = estimate(self.name, self.job.model, self.prompts, self.answers)
        todo = [p for p in self.prompts if p.key not in self.answers]
        if todo and confirm is not None and not confirm(result.estimate):
            result.skipped = "not confirmed"
            return result
        if todo:
            self._ask_all(todo, result, progress, batch_size, concurrency, max_tokens)
        if any(p.key in self.answers for p in self.prompts):
            self._commit(result)
        return result

    def _ask_all(self, todo, result, progress, batch_size, concurrency, max_tokens) -> None:

        model = resolve_chat_model(self.name)
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        drop_partial_line(self.paths.answers)
        with self.paths.answers.open("ab") as out, ThreadPoolExecutor(concurrency) as pool:
            for begin in range(0, len(todo), batch_size):
                batch = todo[begin : begin + batch_size]
                asked = list(pool.map(lambda p: self._ask(model, p, out, max_tokens), batch))
                result.asked += len(batch)
                result.failed += asked.count(False)
                if progress is not None:
                    progress(self.name, begin + len(batch), len(todo))

    def _ask(self, model, prompt: Prompt, out, max_tokens: int) -> bool:
        """Ask one prompt and persist the answer at once; False when the request failed."""
        if self.cancel is not None and self.cancel.is_set():
            raise TunelabError(
                "cancelled",
                "the distillation was cancelled; run it again to resume (answers so far are kept).",
                exit_code=130,
            )
        self.limit.wait()
        try:
            answer = model.chat(prompt.messages, max_tokens=max_tokens, temperature=0.0)
        except TunelabError:
            return False  # asked again on the next run
        record = {
            "key": prompt.key,
            "split": prompt.split,
            "answer": answer.text,
            "finish_reason": answer.finish_reason,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "answered_at": int(time.time()),
        }
        with self._lock:
            out.write(orjson.dumps(record) + b"\n")
            out.flush()
            self.answers[prompt.key] = record
        return True

    def _commit(self, result: Distillation) -> None:
        """Write the distilled files and their provenance, each atomically.

        Prompts whose request failed are left out (and counted): one the old model refuses
        every time must not hold back the rest; running again asks only those.
        """
        for split, path in (("train", self.paths.train), ("validation", self.paths.validation)):
            rows = [
                {
                    "messages": [
                        *p.messages,
                        {"role": "assistant", "content": self.answers[p.key]["answer"]},
                    ]
                }
                for p in self.prompts
                if p.split == split and p.key in self.answers
            ]
            if rows:
                atomic_write_text(path, "".join(orjson.dumps(r).decode() + "\n" for r in rows))
        result.complete = result.failed == 0
        result.train = str(self.paths.train) if self.paths.train.exists() else None
        result.validation = str(self.paths.validation) if self.paths.validation.exists() else None
        self._write_provenance()

    def _write_provenance(self) -> None:
        def described(path: Path | None) -> dict | None:
            return (
                {"path": str(path), "sha256": file_sha256(path)} if path and path.exists() else None
            )

        provenance = {
            "fine_tuned_model": self.name,
            "base_model": self.job.model,
            "openai_job_id": self.job.provider_job_id,
            "job_id": self.job.id,
            "prompts_from": {
                "training_file": described(self.train),
                "validation_file": described(self.val),
            },
            "answers": len(self.answers),
            "temperature": 0.0,
            "committed_at": int(time.time()),
            "train": described(self.paths.train),
            "validation": described(self.paths.validation),
        }
        atomic_write_text(
            self.paths.provenance,
            orjson.dumps(provenance, option=orjson.OPT_INDENT_2).decode() + "\n",
        )
        with Store() as store:
            store.add_event(
                self.job.id,
                f"Distilled {len(self.answers)} answers of {self.name} into {self.paths.train}",
                data={"provenance": str(self.paths.provenance)},
            )
