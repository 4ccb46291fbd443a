"""The registry on a real PostgreSQL server: the store's behaviour, and one queue that
workers in separate processes (as on separate machines) drain."""

from __future__ import annotations

import threading

import psycopg
import pytest
from test_store import WORKER, check_aliases, make_job, run_children

from tunelab.registry.migrations import MIGRATIONS
from tunelab.registry.store import Store
from tunelab.settings import get_settings


def test_eight_workers_drain_forty_jobs_none_run_twice_none_lost(tmp_path, postgres_url):
    with Store(postgres_url) as store:
        queued = {make_job(store).id for _ in range(40)}
        other = make_job(store, provider="openai").id

    reports = run_children(tmp_path, "drain", 8, postgres_url)

    assert [report["errors"] for report in reports] == [[]] * 8
    claimed = [job_id for report in reports for job_id in report["claimed"]]
    assert len(claimed) == len(set(claimed)) == 40 and set(claimed) == queued
    with Store(postgres_url) as store:
        for report in reports:
            for job_id in report["claimed"]:
                job = store.get_job(job_id)
                assert (job.status, job.worker_id) == ("succeeded", report["worker_id"])
        assert store.get_job(other).status == "queued"
        assert store.list_jobs(statuses=("queued",), provider="local") == []


def test_eight_processes_writing_at_once_lose_nothing(tmp_path, postgres_url):
    with Store(postgres_url) as store:
        shared = make_job(store, name="shared").id

    reports = run_children(tmp_path, "fault", 8, postgres_url, shared, 10, 3)

    assert [report["errors"] for report in reports] == [[]] * 8
    with Store(postgres_url) as store:
        assert len(store.list_events(shared, limit=10_000)) == 8 * 10 * 3
        assert len(store.list_metrics(shared)) == 8 * 10
        assert {store.get_job(j).status for r in reports for j in r["created"]} == {"succeeded"}


def test_the_same_migrations_run_once_when_processes_open_a_new_database(postgres_url):
    versions, errors = [], []

    def open_store():
        try:
            with Store(postgres_url) as store:
                versions.append(store.schema_version)
        except Exception as err:  # reported below, never swallowed
            errors.append(err)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and versions == [len(MIGRATIONS)] * 6


def test_compare_and_set_and_ordering_match_sqlite(postgres_url):
    with Store(postgres_url) as store:
        first, second = make_job(store, created_at=5), make_job(store, created_at=5)
        assert [j.id for j in store.list_jobs()] == [second.id, first.id]
        assert [j.id for j in store.list_jobs(after=second.id)] == [first.id]
        assert store.update_job(first.id, expect=("queued",), status="running")
        assert store.update_job(first.id, expect=("queued",), status="cancelled") is None
        store.add_event(first.id, "synced", event_id="ev-1")
        store.add_event(first.id, "synced again", event_id="ev-1")  # ignored
        assert [e.message for e in store.list_events(first.id)] == ["synced"]
        store.add_checkpoint(first.id, 3, fine_tuned_model_checkpoint="a")
        store.add_checkpoint(first.id, 3, fine_tuned_model_checkpoint="b")  # replaces
        assert [c.fine_tuned_model_checkpoint for c in store.list_checkpoints(first.id)] == ["b"]


def test_the_database_url_setting_selects_postgres(postgres_url, monkeypatch):
    monkeypatch.setenv("TUNELAB_DATABASE_URL", postgres_url)
    with Store() as store:
        assert store.path == postgres_url
        make_job(store)
    assert not get_settings().registry_path.exists()  # SQLite untouched


def test_a_claim_skips_the_job_another_worker_holds_instead_of_waiting(postgres_url):
    with Store(postgres_url) as store:
        held, free = make_job(store, created_at=1), make_job(store, created_at=2)
    claimed = []

    def claim():
        with Store(postgres_url) as store:
            claimed.append(store.claim_next_job("local", WORKER))

    with psycopg.connect(postgres_url) as other:  # a worker in the middle of its claim
        other.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (held.id,))
        thread = threading.Thread(target=claim)
        thread.start()
        thread.join(timeout=60)  # a claim that waited would take `held` once this lock goes
        other.rollback()
    thread.join()
    assert [job.id for job in claimed] == [free.id]
    with Store(postgres_url) as store:
        assert store.get_job(held.id).status == "queued"


def test_an_unreachable_server_is_an_error_without_the_password():
    from tunelab.errors import TunelabError

    with pytest.raises(TunelabError) as caught:
        Store("postgresql://tunelab:s3cret-pw@127.0.0.1:1/none?connect_timeout=2")
    assert caught.value.code == "database_unreachable"
    assert "s3cret-pw" not in str(caught.value.message)


def test_model_aliases_on_postgresql(postgres_url):
    with Store(postgres_url) as store:
        assert store.schema_version == len(MIGRATIONS)
        check_aliases(store)
