"""The registry store: schema, jobs and what they produce, claims, and many processes at once."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.registry import File, Job
from tunelab.registry.migrations import MIGRATIONS
from tunelab.registry.store import Store

WORKERS = Path(__file__).with_name("store_workers.py")
WORKER = {"worker_id": "worker-a", "worker_pid": 123, "worker_host": "host-a"}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "registry.db") as opened:
        yield opened


def make_job(store: Store, **fields) -> Job:
    return store.create_job(**{"provider": "local", "model": "base", "status": "queued", **fields})


TABLES = sorted(
    [
        "eval_outputs",
        "eval_runs",
        "files",
        "job_checkpoints",
        "job_events",
        "job_metrics",
        "jobs",
        "model_aliases",
        "models",
    ]
)


def query(path: Path, sql: str) -> list[tuple]:
    """Read the database file directly, bypassing `Store`."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def tables(path: Path) -> list[str]:
    rows = query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return sorted(name for (name,) in rows if not name.startswith("sqlite_"))


def user_version(path: Path) -> int:
    return query(path, "PRAGMA user_version")[0][0]


# -- schema -------------------------------------------------------------------------------------


def test_new_database_gets_every_migration_in_wal_mode(tmp_path):
    path = tmp_path / "registry.db"
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert tables(path) == TABLES


def test_default_path_is_under_tunelab_home(isolated_home):
    with Store() as store:
        assert store.path == isolated_home / "registry.db"
    assert (isolated_home / "registry.db").is_file()


def test_reopening_keeps_data_and_applies_nothing_again(tmp_path):
    path = tmp_path / "registry.db"
    with Store(path) as store:
        job = make_job(store, name="kept")
        store.add_event(job.id, "hello")
    version = user_version(path)
    with Store(path) as store:
        assert store.get_job(job.id).name == "kept"
        assert [event.message for event in store.list_events(job.id)] == ["hello"]
    assert user_version(path) == version == len(MIGRATIONS)


def test_opening_a_migrated_registry_does_not_wait_for_a_writer(tmp_path):
    """A CLI command opening the registry must not queue behind a worker's write."""
    path = tmp_path / "registry.db"
    Store(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    opened = threading.Event()

    def open_store():
        Store(path).close()
        opened.set()

    thread = threading.Thread(target=open_store)
    thread.start()
    try:
        # Waiting for the writer would take the whole 30 s busy timeout; 20 s leaves room for a
        # busy machine and still tells the two apart.
        assert opened.wait(timeout=20), "opening the registry waited for another writer"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        thread.join()


# -- jobs ---------------------------------------------------------------------------------------


def test_job_is_found_by_its_id_and_by_its_provider_id(store):
    job = make_job(store, provider="openai", provider_job_id="ftjob-remote")
    assert job.id.startswith("ftjob-")
    assert store.get_job(job.id) == job
    assert store.get_job("ftjob-remote") == job


def test_json_columns_round_trip_and_default_to_empty(store):
    hyper = {"n_epochs": 3, "learning_rate_multiplier": 0.5, "batch_size": "auto"}
    job = make_job(
        store,
        hyperparameters=hyper,
        metadata={"team": "search", "tags": ["a", "b"]},
        progress={"step": 2, "loss": 1.25},
    )
    again = store.get_job(job.id)
    assert again.hyperparameters == hyper
    assert again.metadata == {"team": "search", "tags": ["a", "b"]}
    assert again.progress == {"step": 2, "loss": 1.25}
    bare = make_job(store)
    assert (bare.hyperparameters, bare.metadata, bare.progress) == ({}, {}, None)


def test_unknown_job_fields_are_refused(store):
    with pytest.raises(TypeError, match="colour"):
        make_job(store, colour="red")
    assert store.list_jobs() == []
    job = make_job(store)
    with pytest.raises(TypeError, match="colour"):
        store.update_job(job.id, colour="red", status="failed")
    assert store.get_job(job.id).status == "queued"


def test_missing_job_raises_job_not_found(store):
    with pytest.raises(TunelabError) as caught:
        store.get_job("ftjob-missing")
    assert caught.value.code == "job_not_found"
    for action in (
        lambda: store.update_job("ftjob-missing", status="failed"),
        lambda: store.delete_job("ftjob-missing"),
    ):
        with pytest.raises(TunelabError) as caught:
            action()
        assert caught.value.code == "job_not_found"


def test_list_is_newest_first_and_pages_cover_every_job_once(store):
    # Several jobs share a second: the order among them is insertion order, newest first.
    stamps = [100, 100, 100, 200, 300, 300, 300, 300, 400]
    ids = [make_job(store, created_at=stamp).id for stamp in stamps]
    newest_first = ids[::-1]
    assert [job.id for job in store.list_jobs(limit=100)] == newest_first
    for size in (1, 2, 3, 4):
        seen, after = [], None
        while page := store.list_jobs(limit=size, after=after):
            assert len(page) <= size
            seen += [job.id for job in page]
            after = page[-1].id
        assert seen == newest_first


def test_jobs_created_within_one_second_page_without_gaps(store):
    ids = [make_job(store).id for _ in range(12)]
    seen, after = [], None
    while page := store.list_jobs(limit=5, after=after):
        seen += [job.id for job in page]
        after = page[-1].id
    assert seen == ids[::-1]


def test_list_filters_by_provider_and_status_and_pages_within_them(store):
    local_queued = [make_job(store, created_at=10 + i).id for i in range(3)]
    make_job(store, created_at=20, status="running")
    make_job(store, created_at=30, provider="openai", status="queued")
    local_failed = make_job(store, created_at=40, status="failed").id

    assert {job.provider for job in store.list_jobs(provider="openai")} == {"openai"}
    local = store.list_jobs(provider="local", statuses=("queued", "failed"))
    assert [job.id for job in local] == [local_failed, *local_queued[::-1]]
    page = store.list_jobs(provider="local", statuses=("queued",), limit=2)
    rest = store.list_jobs(provider="local", statuses=("queued",), after=page[-1].id)
    assert [job.id for job in page + rest] == local_queued[::-1]


def test_update_with_expect_is_a_compare_and_set(store):
    job = make_job(store)
    moved = store.update_job(job.id, expect=("queued",), status="cancelled", error_code="x")
    assert moved is not None
    assert (moved.status, moved.error_code) == ("cancelled", "x")

    before = store.get_job(job.id)
    missed = store.update_job(job.id, expect=("queued", "running"), status="succeeded")
    assert missed is None
    assert store.get_job(job.id) == before  # not even updated_at moved


def test_update_without_expect_sets_fields_and_keeps_the_rest(store):
    job = make_job(store, name="keep", metadata={"a": 1})
    updated = store.update_job(job.id, progress={"step": 5}, trained_tokens=640)
    assert updated.progress == {"step": 5}
    assert updated.trained_tokens == 640
    assert (updated.name, updated.metadata) == ("keep", {"a": 1})
    assert updated.updated_at >= job.updated_at


def test_deleting_a_job_removes_its_events_metrics_and_checkpoints(store):
    doomed, kept = make_job(store), make_job(store)
    for job in (doomed, kept):
        store.add_event(job.id, "started")
        store.add_metric(job.id, 1, {"train_loss": 2.0})
        store.add_checkpoint(job.id, 1, fine_tuned_model_checkpoint="ckpt")
    store.delete_job(doomed.id)

    with pytest.raises(TunelabError):
        store.get_job(doomed.id)
    assert store.list_events(doomed.id) == []
    assert store.list_metrics(doomed.id) == []
    assert store.list_checkpoints(doomed.id) == []
    assert len(store.list_events(kept.id)) == 1
    assert len(store.list_metrics(kept.id)) == 1
    assert len(store.list_checkpoints(kept.id)) == 1


# -- files --------------------------------------------------------------------------------------


def add_file(store: Store, **fields) -> File:
    defaults = {
        "provider": "openai",
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "bytes": 1234,
        "checksum": "sha256:aa",
        "status": "processed",
    }
    return store.add_file(**{**defaults, **fields})


def test_file_is_found_by_id_and_provider_id(store):
    file = add_file(store, provider_file_id="file-remote", validation={"ok": True, "lines": 3})
    assert file.id.startswith("file-")
    assert store.get_file(file.id) == file
    assert store.get_file("file-remote") == file
    assert file.validation == {"ok": True, "lines": 3}
    assert store.list_files() == [file]


def test_find_file_reuses_an_upload_with_the_same_bytes_but_not_an_errored_one(store):
    add_file(store, checksum="sha256:bad", status="error")
    assert store.find_file("openai", "sha256:bad", "fine-tune") is None

    good = add_file(store, checksum="sha256:good")
    assert store.find_file("openai", "sha256:good", "fine-tune") == good
    assert store.find_file("together", "sha256:good", "fine-tune") is None
    assert store.find_file("openai", "sha256:good", "batch") is None


def test_deleted_file_is_gone(store):
    file = add_file(store)
    store.delete_file(file.id)
    with pytest.raises(TunelabError) as caught:
        store.get_file(file.id)
    assert caught.value.code == "file_not_found"
    assert store.find_file("openai", "sha256:aa", "fine-tune") is None


# -- events, metrics, checkpoints ---------------------------------------------------------------


def test_events_are_oldest_first_and_continue_after_a_seq(store):
    job = make_job(store)
    for i in range(5):
        store.add_event(job.id, f"event {i}", data={"i": i})
    events = store.list_events(job.id)
    assert [event.message for event in events] == [f"event {i}" for i in range(5)]
    assert events[2].data == {"i": 2}
    later = store.list_events(job.id, after_seq=events[2].seq)
    assert [event.message for event in later] == ["event 3", "event 4"]
    first_two = store.list_events(job.id, limit=2)
    assert [event.message for event in first_two] == ["event 0", "event 1"]


def test_an_event_seen_again_is_stored_once_in_its_place(store):
    """A provider's events are re-synced on every poll: the copy must not reappear later."""
    job = make_job(store)
    store.add_event(job.id, "from the provider", event_id="ftevent-remote", created_at=50)
    store.add_event(job.id, "local note")
    first = store.list_events(job.id)
    store.add_event(job.id, "from the provider", event_id="ftevent-remote", created_at=50)
    assert store.list_events(job.id) == first
    assert store.list_events(job.id, after_seq=first[-1].seq) == []


def test_metrics_are_one_per_step_the_latest_winning(store):
    job = make_job(store)
    store.add_metric(job.id, 2, {"step": 2, "train_loss": 1.5})
    store.add_metric(job.id, 1, {"step": 1, "train_loss": 2.0})
    store.add_metric(job.id, 2, {"step": 2, "train_loss": 1.4})
    assert store.list_metrics(job.id) == [
        {"step": 1, "train_loss": 2.0},
        {"step": 2, "train_loss": 1.4},
    ]


def test_checkpoints_are_newest_first(store):
    job = make_job(store)
    for step in (10, 30, 20):
        store.add_checkpoint(
            job.id, step, fine_tuned_model_checkpoint=f"m:ckpt-{step}", metrics={"step": step}
        )
    checkpoints = store.list_checkpoints(job.id)
    assert [c.step for c in checkpoints] == [30, 20, 10]
    assert checkpoints[0].fine_tuned_model_checkpoint == "m:ckpt-30"
    assert checkpoints[0].metrics == {"step": 30}


# -- models -------------------------------------------------------------------------------------


def test_models_put_replace_list_and_delete(store):
    base = store.put_model("smollm2", provider="local", kind="base", path="/models/smollm2")
    store.put_model("gpt-4o-mini", provider="openai", kind="base")
    assert store.get_model("smollm2") == base
    assert base.details == {}

    tuned = store.put_model(
        "smollm2", provider="local", kind="base", path="/elsewhere", details={"gguf": True}
    )
    assert (tuned.path, tuned.details) == ("/elsewhere", {"gguf": True})
    assert [model.id for model in store.list_models(provider="local")] == ["smollm2"]
    assert {model.id for model in store.list_models()} == {"smollm2", "gpt-4o-mini"}

    store.delete_model("smollm2")
    assert store.find_model("smollm2") is None
    for action in (lambda: store.get_model("smollm2"), lambda: store.delete_model("smollm2")):
        with pytest.raises(TunelabError) as caught:
            action()
        assert caught.value.code == "model_not_found"


# -- claims and heartbeats ----------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_job_of_the_provider(store):
    newest = make_job(store, created_at=300).id
    oldest = make_job(store, created_at=100).id
    middle = make_job(store, created_at=200).id
    make_job(store, created_at=50, status="running")
    make_job(store, created_at=10, provider="openai")

    first = store.claim_next_job("local", WORKER)
    assert first.id == oldest
    assert (first.status, first.raw_status) == ("running", "running")
    assert (first.worker_id, first.worker_pid, first.worker_host) == (
        "worker-a",
        123,
        "host-a",
    )
    assert first.started_at is not None and first.heartbeat_at is not None
    claimed = [store.claim_next_job("local", WORKER).id for _ in range(2)]
    assert claimed == [middle, newest]
    assert store.claim_next_job("local", WORKER) is None
    assert store.list_jobs(provider="openai")[0].status == "queued"


def test_claim_clears_a_previous_error_but_keeps_the_first_start(store):
    job = make_job(store, started_at=42, error_code="worker_died", error_message="lost")
    claimed = store.claim_next_job("local", WORKER)
    assert claimed.id == job.id
    assert (claimed.started_at, claimed.error_code, claimed.error_message) == (
        42,
        None,
        None,
    )


def test_heartbeat_reports_cancel_and_stamps_only_for_the_owner(store):
    make_job(store)
    job = store.claim_next_job("local", WORKER)
    store.update_job(job.id, heartbeat_at=0.0)

    assert store.heartbeat(job.id, "someone-else") == 0
    assert store.get_job(job.id).heartbeat_at == 0.0
    assert store.heartbeat(job.id, "worker-a") == 0
    assert store.get_job(job.id).heartbeat_at > 0.0

    store.update_job(job.id, cancel_requested=1)
    assert store.heartbeat(job.id, "worker-a") == 1
    assert store.heartbeat(job.id, "someone-else") == 1


# -- many processes -----------------------------------------------------------------------------


def run_children(tmp_path: Path, mode: str, count: int, *args) -> list[dict]:
    """Start `count` worker processes together and return what each reported."""
    folder = tmp_path / f"{mode}-barrier"
    folder.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, str(WORKERS), mode, str(folder), str(me), str(count), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(count)
    ]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_eight_processes_writing_at_once_lose_nothing(tmp_path):
    processes, jobs, updates = 8, 25, 4
    path = tmp_path / "registry.db"
    with Store(path) as store:
        shared = make_job(store, name="shared").id

    started = time.perf_counter()
    reports = run_children(tmp_path, "fault", processes, path, shared, jobs, updates)
    elapsed = time.perf_counter() - started

    assert [report["errors"] for report in reports] == [[]] * processes, elapsed
    with Store(path) as store:
        for me, report in enumerate(reports):
            assert len(report["created"]) == jobs
            for job_id in report["created"]:
                job = store.get_job(job_id)
                assert job.status == "succeeded"
                assert job.progress == {"step": updates, "worker": me}
        events = store.list_events(shared, limit=10_000)
        assert len(events) == processes * jobs * updates
        assert {(e.data["worker"], e.data["i"], e.data["step"]) for e in events} == {
            (me, i, step)
            for me in range(processes)
            for i in range(jobs)
            for step in range(1, updates + 1)
        }
        assert len(store.list_metrics(shared)) == processes * jobs
        assert len(store.list_jobs(limit=10_000)) == processes * jobs + 1


def test_eight_processes_claiming_at_once_claim_each_job_exactly_once(tmp_path):
    path = tmp_path / "registry.db"
    with Store(path) as store:
        queued = {make_job(store).id for _ in range(40)}
        make_job(store, provider="openai")

    reports = run_children(tmp_path, "claim", 8, path)

    assert [report["errors"] for report in reports] == [[]] * 8
    claimed = [job_id for report in reports for job_id in report["claimed"]]
    assert sorted(claimed) == sorted(queued)
    with Store(path) as store:
        for report in reports:
            for job_id in report["claimed"]:
                job = store.get_job(job_id)
                assert (job.status, job.worker_id) == ("running", report["worker_id"])
        assert store.list_jobs(provider="openai")[0].status == "queued"


def test_processes_opening_a_new_database_together_migrate_it_once(tmp_path):
    processes, rounds = 6, 10
    reports = run_children(tmp_path, "migrate", processes, rounds)

    assert [report["errors"] for report in reports] == [[]] * processes
    expected_version = len(MIGRATIONS) + 1  # the children's extra counting migration
    assert {v for report in reports for v in report["versions"]} == {expected_version}
    for round_ in range(rounds):
        path = tmp_path / "migrate-barrier" / f"new-{round_}.db"
        assert user_version(path) == expected_version
        assert query(path, "SELECT COUNT(*) FROM race_marker") == [(1,)]
        assert query(path, "PRAGMA journal_mode") == [("wal",)]
        assert tables(path) == sorted([*TABLES, "race_marker"])


# -- records ------------------------------------------------------------------------------------


def test_records_are_typed_frozen_and_round_trip_through_to_dict(store):
    job = make_job(store, hyperparameters={"n_epochs": 2})
    assert isinstance(job, Job) and job.hyperparameters == {"n_epochs": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = "running"  # a change goes through the store
    assert Job.from_row(job.to_dict()) == job


def test_a_record_ignores_columns_a_later_schema_added():
    """Another backend (or a newer migration) may return columns this version does not know."""
    row = {
        "id": "file-1",
        "provider": "local",
        "filename": "t.jsonl",
        "purpose": "fine-tune",
        "bytes": 3,
        "checksum": "c",
        "status": "error",
        "created_at": 1,
        "validation": {"status_details": "1 error(s)"},
        "shard": 7,
    }
    file = File.from_row(row)
    assert file.status_details == "1 error(s)" and not hasattr(file, "shard")


# -- model aliases ------------------------------------------------------------------------------


def check_aliases(store: Store) -> None:
    """What any registry does with aliases (SQLite here, PostgreSQL in test_postgres)."""
    made = store.put_alias("ft:old:acme:x:1", "ft:new:local:x:2")
    assert (made.alias, made.target) == ("ft:old:acme:x:1", "ft:new:local:x:2")
    assert store.find_alias("ft:old:acme:x:1") == made
    store.put_alias("ft:old:acme:x:1", "smollm2")  # given again: it points elsewhere
    assert [(a.alias, a.target) for a in store.list_aliases()] == [("ft:old:acme:x:1", "smollm2")]
    assert store.delete_alias("ft:old:acme:x:1").target == "smollm2"
    assert store.find_alias("ft:old:acme:x:1") is None and store.list_aliases() == []
    with pytest.raises(TunelabError) as caught:
        store.delete_alias("ft:old:acme:x:1")
    assert caught.value.code == "alias_not_found"


def test_model_aliases_put_replace_list_and_delete(store):
    check_aliases(store)
