"""Child processes for the registry's concurrency tests: `python store_workers.py MODE ...`.

Each child opens its own `Store` on the shared file (as separate `tunelab` processes do),
waits at a file barrier so all of them hit the database at the same moment, and prints one
JSON line: what it did and every exception it saw (an exception must never be swallowed,
so the parent can assert that "database is locked" never reached a caller).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def barrier(folder: Path, name: str, me: int, count: int) -> None:
    """Wait until all `count` children have arrived at barrier `name`."""
    (folder / f"{name}-{me}").touch()
    while sum((folder / f"{name}-{i}").exists() for i in range(count)) < count:
        time.sleep(0.001)


def fault(folder: Path, me: int, count: int, db: str, shared: str, jobs: int, updates: int):
    """Create jobs, then update their progress, appending an event to one shared job each time."""
    from tunelab.registry.store import Store

    errors: list[str] = []
    created: list[str] = []
    store = Store(db)
    barrier(folder, "start", me, count)
    for i in range(jobs):
        try:
            created.append(store.create_job(provider="local", model="m", status="queued").id)
            store.add_metric(shared, me * 1000 + i, {"worker": me, "i": i})
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    for step in range(1, updates + 1):
        for i, job_id in enumerate(created):
            try:
                moved = step > 1 or store.update_job(job_id, expect=("queued",), status="running")
                if not moved:
                    errors.append(f"compare-and-set on own job {job_id} did not apply")
                store.update_job(
                    job_id,
                    status="succeeded" if step == updates else "running",
                    progress={"step": step, "worker": me},
                )
                store.add_event(shared, f"worker {me}", data={"worker": me, "i": i, "step": step})
                if store.get_job(job_id).progress["step"] != step:
                    errors.append(f"{job_id}: own write of step {step} not visible")
                time.sleep(0.001)  # a worker does work between writes: let the others in
            except Exception as err:
                errors.append(f"{type(err).__name__}: {err}")
    store.close()
    return {"errors": errors, "created": created}


def claim(folder: Path, me: int, count: int, db: str):
    """Claim queued local jobs until none is left."""
    from tunelab.registry.store import Store

    errors: list[str] = []
    claimed: list[str] = []
    worker = {"worker_id": f"worker-{me}", "worker_pid": me, "worker_host": "test"}
    store = Store(db)
    barrier(folder, "start", me, count)
    while True:
        try:
            job = store.claim_next_job("local", worker)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
            continue
        if job is None:
            break
        claimed.append(job.id)
        time.sleep(0.001)  # a worker runs the job before claiming the next
    store.close()
    return {"errors": errors, "claimed": claimed, "worker_id": worker["worker_id"]}


def drain(folder: Path, me: int, count: int, db: str):
    """Claim queued local jobs, "run" each and mark it succeeded, until the queue is empty.

    The completion is a compare-and-set from `running` owned by this worker: a job claimed
    twice would be completed twice, or fail to complete here.
    """
    from tunelab.registry.store import Store

    errors: list[str] = []
    done: list[str] = []
    worker = {"worker_id": f"worker-{me}", "worker_pid": me, "worker_host": f"machine-{me}"}
    store = Store(db)
    barrier(folder, "start", me, count)
    while True:
        try:
            job = store.claim_next_job("local", worker)
            if job is None:
                break
            time.sleep(0.002)  # the run
            if store.get_job(job.id).worker_id != worker["worker_id"]:
                errors.append(f"{job.id} was claimed by another worker meanwhile")
            finished = store.update_job(job.id, expect=("running",), status="succeeded")
            if finished is None:
                errors.append(f"{job.id} was no longer running when finished")
            done.append(job.id)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    store.close()
    return {"errors": errors, "claimed": done, "worker_id": worker["worker_id"]}


def migrate(folder: Path, me: int, count: int, rounds: int):
    """Open brand-new databases together, with one extra migration that counts its runs."""
    from sqlalchemy import text

    from tunelab.registry import migrations

    migrations.MIGRATIONS.append(
        [text("CREATE TABLE race_marker (n INTEGER)"), text("INSERT INTO race_marker VALUES (1)")]
    )
    from tunelab.registry.store import Store

    errors: list[str] = []
    versions: list[int] = []
    for round_ in range(rounds):
        barrier(folder, f"round{round_}", me, count)
        try:
            with Store(folder / f"new-{round_}.db") as store:
                versions.append(store.schema_version)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    return {"errors": errors, "versions": versions}


if __name__ == "__main__":
    mode, folder, me, count, *rest = sys.argv[1:]
    args = [int(value) if value.isdigit() else value for value in rest]
    run = {"fault": fault, "claim": claim, "drain": drain, "migrate": migrate}[mode]
    print(json.dumps(run(Path(folder), int(me), int(count), *args)))
