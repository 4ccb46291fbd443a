"""`plan` and `run`: a target for every fine-tuned model, its analysis, and the new jobs.

A target is the local default model (`local`), a comparable Together model (`together`), or
any model the user names (a catalog name or a local directory), for all models or per `ft:`
model. The analysis is `tunelab analyze`'s for the target on the downloaded training file;
epochs are the old job's, so tokens and cost are what the same training costs there.
Hyperparameters are mapped to what the target's provider accepts; the others are listed as
not carried. The old job's method goes with it: a DPO job's beta, a reinforcement job's grader
(kept with the imported job by `inventory`), where the target trains that method. `run`
creates the jobs through the job registry (`tunelab.providers.jobs`), once per model: a model
whose migration job exists (and has not failed) is skipped; with `--alias` an old model whose
job has succeeded becomes an alias of its replacement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from tunelab.catalog import DEFAULT_MODEL, resolve_model
from tunelab.data.analyze import analyze_file
from tunelab.data.pricing import load_prices, price_for
from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text, file_sha256
from tunelab.migrate.dates import countdown, require_new_jobs, utc_today
from tunelab.migrate.distil import distilled_paths
from tunelab.migrate.inventory import MIGRATED_FROM_KEY, PROVIDER, openai_jobs, registered_file
from tunelab.providers.jobs import JobSpec, create_job
from tunelab.providers.methods import SUPERVISED, method_of
from tunelab.providers.models import add_alias
from tunelab.providers.registry import provider_class, runs_here, this_machine
from tunelab.providers.wire import job_grader
from tunelab.registry import Job, Store

# Together's comparable base for each OpenAI family: small models → 8B, large → 70B.
TOGETHER_SMALL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
TOGETHER_LARGE = "meta-llama/Llama-3.3-70B-Instruct-Reference"
LARGE_FAMILIES = ("gpt-4o", "gpt-4.1")  # without -mini or -nano
# OpenAI's hyperparameters a target takes as they are: this machine and OpenAI-compatible
# trainers take all three; Together has its own learning rate and batch-size limits.
OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# The training method and its own settings go wherever that method trains (locally and on
# Together: supervised and DPO).
METHOD_SETTINGS = ("training_method", "dpo_beta")
CARRIED = {"together": ("n_epochs", *METHOD_SETTINGS)}
# Providers whose new jobs end on the shutdown date: a target there must start before it.
CLOSING_PROVIDERS = frozenset({PROVIDER})
DISTILLED_KEY = "tunelab_distilled_file"  # job metadata: the extra training file's path


@dataclass
class Targets:
    """`default` for every model (local, together or a model), `per_model` by ft: name."""

    default: str = field(default_factory=this_machine)  # `--target local`: trained here
    per_model: dict[str, str] = field(default_factory=dict)

    def for_model(self, fine_tuned_model: str) -> str:
        return self.per_model.get(fine_tuned_model, self.default)


def comparable_together_model(openai_model: str) -> str:
    name = openai_model.lower()
    small = "mini" in name or "nano" in name
    return TOGETHER_LARGE if name.startswith(LARGE_FAMILIES) and not small else TOGETHER_SMALL


def target_model(choice: str, openai_model: str) -> tuple[str, str]:
    """(model, provider) for a target choice and the old job's base model."""
    if runs_here(choice):  # this machine's provider: the default model, trained here
        return DEFAULT_MODEL, choice
    if choice == "together":
        return comparable_together_model(openai_model), "together"
    spec = resolve_model(choice)  # unknown names raise, listing the known ones
    return spec.name, spec.provider


def make_plan(
    targets: Targets | None = None, *, today: date | None = None, prices: str | Path | None = None
) -> dict:
    """Every succeeded OpenAI fine-tune with its target and analysis (JSON-ready)."""
    targets = targets or Targets()
    today = today or utc_today()
    with Store() as store:
        rows = [
            _plan_row(store, job, targets, prices)
            for job in openai_jobs(store)
            if job.status == "succeeded" and job.fine_tuned_model
        ]
    return {"countdown": countdown(today), "models": rows}


def _plan_row(store: Store, job: Job, targets: Targets, prices) -> dict:
    # A DPO job's preference pairs take no distilled chat answers beside them.
    method = method_of(job.resolved_hyperparameters or {})
    model, provider = target_model(targets.for_model(job.fine_tuned_model), job.model)
    train = registered_file(store, job.training_file)
    val = registered_file(store, job.validation_file)
    row = {
        "fine_tuned_model": job.fine_tuned_model,
        "job_id": job.id,
        "openai_job_id": job.provider_job_id,
        "base_model": job.model,
        "target": {"model": model, "provider": provider},
        "training_file": train.path if train else None,
        "validation_file": val.path if val else None,
        **map_hyperparameters(job.resolved_hyperparameters or {}, provider),
        "distilled_file": _distilled_file(job) if method == SUPERVISED else None,
        "grader": job_grader(job),
        "migration_job": migration_job(store, job),
        "problems": [],
    }
    problem = _method_problem(method, row["grader"], provider)
    if problem:
        row["problems"].append(problem)
        return row
    if train is None:
        row["problems"].append(
            f"training file {job.training_file} was not downloaded "
            "(deleted on OpenAI?): nothing to train on"
        )
        return row
    row["analysis"] = _analysis(row, prices)
    return row


def _method_problem(method: str, grader: dict | None, provider: str) -> str | None:
    """Why the old job's method cannot be trained on the target, if it cannot."""
    trained = provider_class(provider).training_methods
    if method not in trained:
        return (
            f"a {method} fine-tune: {provider} trains {' and '.join(trained)} "
            "(choose --target local for it, or train it with `tunelab train "
            "--training-method` on its data)"
        )
    if method == "reinforcement" and grader is None:
        return (
            "a reinforcement fine-tune whose grader was not recorded "
            "(run `tunelab migrate openai inventory` again to fetch it)"
        )
    return None


def map_hyperparameters(resolved: dict, provider: str) -> dict:
    """The old job's resolved values the target takes, and those it does not."""
    allowed = CARRIED.get(provider, (*OPENAI_HYPERPARAMETERS, *METHOD_SETTINGS))
    kept = {k: v for k, v in resolved.items() if k in allowed and v not in (None, "auto")}
    dropped = sorted(k for k in resolved if k not in kept and resolved[k] not in (None, "auto"))
    return {"hyperparameters": kept, "not_carried": dropped}


def _analysis(row: dict, prices) -> dict:
    """`tunelab analyze` for the target, at the old job's epochs."""
    target = row["target"]
    result = analyze_file(
        row["training_file"], val_path=row["validation_file"], model=target["model"], prices=prices
    )
    epochs = row["hyperparameters"].get("n_epochs") or result.n_epochs
    scale = epochs / result.n_epochs if result.n_epochs else 0
    billed = round(result.billed_tokens * scale)
    listed = load_prices(prices)
    own = price_for(listed, "together", target["model"])  # a Together target: itself
    together = target["model"] if own else comparable_together_model(row["base_model"])
    price = own or price_for(listed, "together", together)
    seconds = result.estimated_train_seconds
    return {
        "n_examples": result.n_examples,
        "n_validation_examples": result.val.n_examples if result.val else 0,
        "tokens_per_epoch": round(result.billed_tokens / result.n_epochs) if result.n_epochs else 0,
        "n_epochs": epochs,
        "billed_tokens": billed,
        "together_model": together,
        "together_cost_usd": price.cost(billed) if price else None,
        "together_prices_as_of": price.as_of if price else None,  # the price table's date
        "together_prices_source": price.source if price else None,
        "estimated_local_train_seconds": round(seconds * scale, 1) if seconds else None,
        "exact_counts": result.exact_counts,
        "n_errors": result.validation["n_errors"],
        "notes": result.notes,
    }


def _distilled_file(job: Job) -> str | None:

    path = distilled_paths(job.fine_tuned_model).train
    return str(path) if path.exists() else None


def migration_job(store: Store, job: Job) -> dict | None:
    """The newest job made to replace `job`'s model, unless it failed or was cancelled."""
    for other in store.list_jobs(limit=1_000_000):
        meta = other.metadata or {}
        if meta.get(MIGRATED_FROM_KEY) == job.fine_tuned_model and other.status not in (
            "failed",
            "cancelled",
        ):
            return {
                "id": other.id,
                "status": other.status,
                "provider": other.provider,
                "model": other.model,
                "fine_tuned_model": other.fine_tuned_model,
            }
    return None


def run_plan(
    plan: dict,
    *,
    today: date | None = None,
    distilled: bool = True,
    extra_hyperparameters: dict | None = None,
    start_worker: bool = True,
) -> list[dict]:
    """Create the jobs of `plan` (see `make_plan`); returns one outcome per model."""

    today = today or utc_today()
    outcomes = []
    for row in plan["models"]:
        if row["problems"] or row["migration_job"]:
            outcomes.append(
                {
                    "fine_tuned_model": row["fine_tuned_model"],
                    "job": row["migration_job"],
                    "skipped": "; ".join(row["problems"]) or "already migrated",
                }
            )
            continue
        target = row["target"]
        if target["provider"] in CLOSING_PROVIDERS:
            require_new_jobs(today, f"migrating {row['fine_tuned_model']} to {target['model']}")
        train = Path(row["training_file"])
        if distilled and row["distilled_file"]:
            train = _with_distilled(train, Path(row["distilled_file"]))
        metadata = {
            MIGRATED_FROM_KEY: row["fine_tuned_model"],
            "tunelab_openai_job": row["openai_job_id"],
        }
        if distilled and row["distilled_file"]:
            metadata[DISTILLED_KEY] = row["distilled_file"]
        spec = JobSpec(
            train,
            Path(row["validation_file"]) if row["validation_file"] else None,
            model=target["model"],
            provider=target["provider"],
            hyperparameters={**row["hyperparameters"], **(extra_hyperparameters or {})},
            suffix=_suffix(row["fine_tuned_model"]),
            metadata=metadata,
            grader=row.get("grader"),
        )
        job = create_job(spec, start_worker=start_worker)
        outcomes.append(
            {
                "fine_tuned_model": row["fine_tuned_model"],
                "skipped": None,
                "job": {
                    "id": job.id,
                    "status": job.status,
                    "provider": job.provider,
                    "model": job.model,
                },
            }
        )
    return outcomes


def _suffix(fine_tuned_model: str) -> str | None:
    """The old model's suffix (`ft:BASE:ORG:SUFFIX:ID`), so the new name says what it was."""
    parts = fine_tuned_model.split(":")
    return parts[3] if len(parts) >= 5 and parts[3] else None


def _with_distilled(train: Path, distilled: Path) -> Path:
    """The training file followed by the distilled answers (written once per pair)."""

    combined = distilled.parent / f"train+distilled-{file_sha256(distilled)[:12]}.jsonl"
    if not combined.exists():
        text = train.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            text += "\n"
        atomic_write_text(combined, text + distilled.read_text(encoding="utf-8"))
    return combined


def require_fine_tunes(plan: dict) -> None:
    if not plan["models"]:
        raise TunelabError(
            "nothing_to_migrate",
            "the registry holds no succeeded OpenAI fine-tune.",
            hint="run `tunelab migrate openai inventory` first",
        )


def alias_migrated(outcomes: list[dict]) -> list[dict]:
    """Each old model whose migration job has succeeded made an alias of its replacement
    (`tunelab models alias`), so an application naming it only changes its base URL; the
    outcomes gain `alias`: the model now answering the old name, or None (not done yet)."""
    aliased = []
    for outcome in outcomes:
        job = outcome["job"] or {}
        new = job.get("fine_tuned_model") if job.get("status") == "succeeded" else None
        if new:
            add_alias(outcome["fine_tuned_model"], new)
        aliased.append({**outcome, "alias": new})
    return aliased
