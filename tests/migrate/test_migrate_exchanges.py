"""`tunelab migrate openai` against hand-built OpenAI HTTP exchanges in OpenAI's shapes.

The account has three jobs over two pages (the second answered 429 with Retry-After
first), one of whose training files OpenAI has deleted; its fine-tuned model answers chats
(each ticket's label, in capitals; wrongly once it has `drifted`). A Together account, on
its own host, takes the job a plan run to Together creates.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from datetime import date, datetime, timezone
from html import escape as escape_html
from pathlib import Path

import httpx
import orjson
import pytest

from tiny import save_tiny_model
from tunelab.cli import main
from tunelab.data.pricing import load_prices, price_for
from tunelab.errors import TunelabError
from tunelab.evals.candidates import Answer, Candidate, answering_from
from tunelab.migrate import dates
from tunelab.migrate.compare import compare
from tunelab.migrate.distil import (
    FT_INFERENCE_PRICES_CHECKED,
    distil,
    distilled_paths,
    estimate,
)
from tunelab.migrate.inventory import take_inventory
from tunelab.migrate.plan import Targets, alias_migrated, make_plan, run_plan
from tunelab.providers import jobs as jobs_api
from tunelab.providers.hosted.openai import OpenAIProvider
from tunelab.providers.hosted.retry import RetryPolicy
from tunelab.providers.local import worker
from tunelab.providers.resolve import resolve_chat_model
from tunelab.registry import Store

OPENAI = "https://api.openai.com/v1"
KEY = "sk-migrate-DO-NOT-LEAK-0123456789"
FT = "ft:gpt-4o-mini-2024-07-18:acme:tickets:AAA111"
OLD_FT = "ft:gpt-4o-mini-2024-07-18:acme:old:CCC333"
TODAY = date(2026, 12, 1)
TRAIN = [
    ("Reset my password", "account"),
    ("Card was charged twice", "billing"),
    ("App crashes on start", "bug"),
]
VAL = [("Refund please", "billing"), ("Cannot log in", "account")]


def chat_lines(pairs) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Route the ticket."},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
            }
        )
        + b"\n"
        for q, a in pairs
    )


def job(id_, status, training_file, fine_tuned_model=None, created_at=1, **extra) -> dict:
    return {
        "object": "fine_tuning.job",
        "id": id_,
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": created_at,
        "finished_at": created_at + 100 if fine_tuned_model else None,
        "fine_tuned_model": fine_tuned_model,
        "organization_id": "org-1",
        "result_files": [],
        "status": status,
        "training_file": training_file,
        "validation_file": None,
        "hyperparameters": {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8},
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8}
            },
        },
        "trained_tokens": 500,
        "seed": 1,
        "estimated_finish": None,
        "metadata": None,
        "error": None,
        "integrations": [],
        **extra,
    }


def page(items, has_more=False) -> dict:
    return {"object": "list", "data": items, "has_more": has_more}


def file_object(id_, name, size) -> dict:
    return {
        "object": "file",
        "id": id_,
        "bytes": size,
        "created_at": 1,
        "filename": name,
        "purpose": "fine-tune",
        "status": "processed",
        "status_details": None,
    }


class Account:
    """The fake account's routes; records what was asked of it."""

    def __init__(self, api) -> None:
        self.asked: list[str] = []
        self.refused: set[str] = set()  # questions the old model answers with a 400
        self.drifted = False  # answers "BUG" to everything (to tell fresh answers from old)
        self.calls: dict[str, int] = {}
        self.first = [
            job(
                "ftjob-a", "succeeded", "file-train", FT, created_at=30, validation_file="file-val"
            ),
            job("ftjob-b", "failed", "file-gone", created_at=20),
        ]
        self.second = [job("ftjob-c", "succeeded", "file-gone", OLD_FT, created_at=10)]
        self.rate_limited_once = False
        api.get(f"{OPENAI}/fine_tuning/jobs").mock(side_effect=self.list_jobs)
        api.get(url__regex=rf"{OPENAI}/fine_tuning/jobs/ftjob-[abc]$").mock(
            side_effect=self.retrieve
        )
        api.get(url__regex=rf"{OPENAI}/fine_tuning/jobs/[^/]+/events").respond(200, json=page([]))
        api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-a/checkpoints").respond(
            200,
            json=page(
                [
                    {
                        "object": "fine_tuning.job.checkpoint",
                        "id": "ftckpt-1",
                        "created_at": 5,
                        "fine_tuned_model_checkpoint": f"{FT}:ckpt-step-3",
                        "step_number": 3,
                        "metrics": {"train_loss": 0.5},
                        "fine_tuning_job_id": "ftjob-a",
                    }
                ]
            ),
        )
        api.get(url__regex=rf"{OPENAI}/fine_tuning/jobs/ftjob-[bc]/checkpoints").respond(
            200, json=page([])
        )
        for id_, name, body in (
            ("file-train", "train.jsonl", chat_lines(TRAIN)),
            ("file-val", "val.jsonl", chat_lines(VAL)),
        ):
            api.get(f"{OPENAI}/files/{id_}").respond(200, json=file_object(id_, name, len(body)))
            api.get(f"{OPENAI}/files/{id_}/content").mock(side_effect=self.counted(id_, body))
        gone = {
            "error": {
                "message": "No such File object: file-gone",
                "type": "invalid_request_error",
                "param": "id",
                "code": None,
            }
        }
        api.get(f"{OPENAI}/files/file-gone").respond(404, json=gone)
        api.post(f"{OPENAI}/chat/completions").mock(side_effect=self.chat)

    def counted(self, name: str, body: bytes):
        def respond(request):
            self.calls[name] = self.calls.get(name, 0) + 1
            return httpx.Response(200, content=body)

        return respond

    def list_jobs(self, request):
        assert request.headers["authorization"] == f"Bearer {KEY}"
        if request.url.params.get("after") == "ftjob-b":
            if not self.rate_limited_once:
                self.rate_limited_once = True
                return httpx.Response(
                    429,
                    headers={"retry-after": "2"},
                    json={
                        "error": {"message": "Rate limit reached", "type": "requests", "code": None}
                    },
                )
            return httpx.Response(200, json=page(self.second))
        return httpx.Response(200, json=page(self.first, has_more=True))

    def label(self, question: str) -> str:
        return "BUG" if self.drifted else dict(TRAIN + VAL)[question].upper()

    def retrieve(self, request):
        wanted = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(
            200, json=next(j for j in self.first + self.second if j["id"] == wanted)
        )

    def chat(self, request):
        body = json.loads(request.content)
        assert body["model"] == FT
        question = body["messages"][-1]["content"]
        self.asked.append(question)
        if question in self.refused:
            error = {"message": "Invalid prompt", "type": "invalid_request_error", "code": None}
            return httpx.Response(400, json={"error": error})
        answer = {
            "object": "chat.completion",
            "id": "chatcmpl-1",
            "created": 1,
            "model": FT,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": self.label(question)},
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
        }
        return httpx.Response(200, json=answer)


@pytest.fixture
def account(api, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return Account(api)


def provider(sleeps: list) -> OpenAIProvider:
    return OpenAIProvider(policy=RetryPolicy(sleep=sleeps.append))


def test_inventory_reads_every_page_keeps_files_and_reports_the_deleted_one(account, capsys):
    sleeps: list[float] = []
    found = take_inventory(provider=provider(sleeps), today=TODAY)
    assert sleeps == [2.0]  # the 429's Retry-After, then the second page
    assert [j["openai_job_id"] for j in found.jobs] == ["ftjob-c", "ftjob-b", "ftjob-a"]
    assert (found.new_jobs, found.new_files) == (3, 2)
    assert found.deleted_files == [
        {
            "file": "file-gone",
            "jobs": [found.jobs[0]["id"], found.jobs[1]["id"]],
            "message": found.deleted_files[0]["message"],
        }
    ]
    row = found.jobs[2]
    assert row["fine_tuned_model"] == FT and row["checkpoints"] == [f"{FT}:ckpt-step-3"]
    assert row["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 1,
        "learning_rate_multiplier": 1.8,
    }
    with open(row["training_file"]["path"], "rb") as handle:
        assert handle.read() == chat_lines(TRAIN)
    import hashlib

    assert row["training_file"]["sha256"] == hashlib.sha256(chat_lines(TRAIN)).hexdigest()
    listed = {j.provider_job_id: j for j in jobs_api.list_jobs(limit=10)}
    assert listed["ftjob-a"].metadata["tunelab_imported"] == "true"
    assert listed["ftjob-a"].fine_tuned_model == FT

    again = take_inventory(provider=provider([]), today=TODAY)
    assert (again.new_jobs, again.new_files) == (0, 0)
    capsys.readouterr()
    assert main(["migrate", "openai", "inventory", "--today", "2026-12-01"]) == 0
    out, err = capsys.readouterr()
    assert "3 job(s); new this run: 0 job(s), 0 file(s) downloaded." in out
    assert "deleted on OpenAI: file-gone" in err and KEY not in out + err
    assert account.calls == {"file-train": 1, "file-val": 1}  # not downloaded twice
    assert len(jobs_api.list_jobs(limit=10)) == 3


def test_plan_run_and_an_interrupted_distillation_that_resumes(account, tmp_path, capsys):
    take_inventory(provider=provider([]), today=TODAY)
    plan = make_plan(Targets("together"), today=TODAY)
    rows = {row["fine_tuned_model"]: row for row in plan["models"]}
    assert rows[OLD_FT]["problems"] and "analysis" not in rows[OLD_FT]
    row = rows[FT]
    assert row["target"] == {
        "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
        "provider": "together",
    }
    got = row["analysis"]
    assert (got["n_examples"], got["n_validation_examples"], got["n_epochs"]) == (3, 2, 2)
    assert got["billed_tokens"] == 2 * got["tokens_per_epoch"] > 0
    assert got["together_cost_usd"] == pytest.approx(got["billed_tokens"] * 0.48 / 1e6, abs=1e-6)
    together_price = price_for(load_prices(), "together", row["target"]["model"])
    assert got["together_prices_as_of"] == together_price.as_of == "2025-11-01"
    assert got["together_prices_source"] == "https://www.together.ai/pricing"
    assert row["hyperparameters"] == {"n_epochs": 2}
    assert row["not_carried"] == ["batch_size", "learning_rate_multiplier"]

    # Distillation, cancelled after its first batch of two prompts, then resumed.
    cancel = threading.Event()
    estimates = []
    with pytest.raises(TunelabError) as stopped:
        distil(
            [FT],
            today=TODAY,
            confirm=lambda e: estimates.append(e) or True,
            progress=lambda *_: cancel.set(),
            cancel=cancel,
            batch_size=2,
            concurrency=1,
        )
    assert stopped.value.code == "cancelled"
    [first] = estimates
    assert (first.n_prompts, first.n_answered) == (5, 0)
    assert first.cost_usd == pytest.approx(
        (first.input_tokens * 0.30 + first.output_tokens * 1.20) / 1e6, abs=1e-6
    )
    assert first.input_tokens > 5 * 8 and first.output_tokens > 0
    assert first.prices_checked == FT_INFERENCE_PRICES_CHECKED
    assert len(account.asked) == 2
    paths = distilled_paths(FT)
    with paths.answers.open("ab") as out:
        out.write(b'{"key": "cut sh')  # a write the interruption cut short
    [done] = distil([FT], today=TODAY, batch_size=2, concurrency=2)
    assert done.complete and done.estimate.n_answered == 2
    assert sorted(account.asked) == sorted(q for q, _ in TRAIN + VAL)  # each asked once
    distilled = [orjson.loads(line) for line in paths.train.read_bytes().splitlines()]
    assert [d["messages"][-1]["content"] for d in distilled] == ["ACCOUNT", "BILLING", "BUG"]
    provenance = orjson.loads(paths.provenance.read_bytes())
    assert provenance["fine_tuned_model"] == FT and provenance["openai_job_id"] == "ftjob-a"
    [again] = distil([FT], today=TODAY)
    assert again.complete and len(account.asked) == 5  # nothing left to ask

    # Run to a local target: queued through the job registry, once.
    tiny = save_tiny_model(tmp_path / "tiny")
    local_plan = make_plan(Targets("local", {FT: str(tiny)}), today=TODAY)
    outcomes = run_plan(local_plan, today=TODAY, start_worker=False)
    made = {o["fine_tuned_model"]: o for o in outcomes}
    assert made[OLD_FT]["skipped"] and made[FT]["skipped"] is None
    new = jobs_api.get_job(made[FT]["job"]["id"])
    assert (new.provider, new.status, new.model) == ("local", "queued", str(tiny))
    assert new.metadata["tunelab_migrated_from"] == FT
    assert new.hyperparameters["n_epochs"] == 2
    assert new.suffix == "tickets"
    with Store() as store:
        trained_on = store.get_file(new.training_file).path
    first_line = Path(trained_on).read_bytes().splitlines()[0]
    assert orjson.loads(first_line)["messages"][-1]["content"] == "account"
    second = run_plan(make_plan(Targets("local", {FT: str(tiny)}), today=TODAY), today=TODAY)
    assert {o["fine_tuned_model"]: o["skipped"] for o in second}[FT] == "already migrated"

    capsys.readouterr()
    assert (
        main(
            ["migrate", "openai", "plan", "--target", "together", "--today", "2026-12-01", "--json"]
        )
        == 0
    )
    out, err = capsys.readouterr()
    planned = orjson.loads(out)["models"][1]
    assert planned["migration_job"]["id"] == new.id
    assert planned["analysis"]["together_prices_as_of"] == "2025-11-01"
    assert "36 days until OpenAI takes no new fine-tuning jobs" in err
    assert "44 days until fine-tuned models stop answering" in err
    assert main(["migrate", "openai", "plan", "--target", "together"]) == 0
    table, problems = capsys.readouterr()
    assert "not carried to together: batch_size, learning_rate_multiplier" in table
    assert "(prices of 2025-11-01)" in table  # the Together cost column says how current
    assert "Together's prices as of 2025-11-01; current prices: https://www.together.ai" in table
    assert "nothing to train on" in problems
    registry = (Store().path).read_bytes()
    for text in (out, err, registry, paths.answers.read_bytes()):
        assert (KEY.encode() if isinstance(text, bytes) else KEY) not in text


def test_distillation_asks_before_paying_and_a_no_asks_nothing(account, capsys, monkeypatch):
    take_inventory(provider=provider([]), today=TODAY)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    capsys.readouterr()
    code = main(["migrate", "openai", "distil", "--today", "2026-12-01"])
    _, err = capsys.readouterr()
    assert code == 0 and not account.asked
    assert f"{FT}: 5 prompt(s) to ask (0 answered before)" in err and "$0.00" in err
    assert f"at OpenAI's prices as checked on {FT_INFERENCE_PRICES_CHECKED}" in err
    assert "current prices: https://openai.com/api/pricing/" in err
    assert "skipped (not confirmed)" in err

    code = main(["migrate", "openai", "distil", "--yes", "--json", "--today", "2026-12-01"])
    out, err = capsys.readouterr()
    assert code == 0 and len(account.asked) == 5  # --yes asks no question, still says the cost
    assert f"{FT}: 5 prompt(s) to ask" in err and FT_INFERENCE_PRICES_CHECKED in err
    [done] = [d for d in orjson.loads(out) if d["fine_tuned_model"] == FT]
    assert done["estimate"]["prices_checked"] == FT_INFERENCE_PRICES_CHECKED


def test_the_distillation_price_table_carries_a_real_checked_date():
    checked = date.fromisoformat(FT_INFERENCE_PRICES_CHECKED)
    assert date(2024, 7, 18) <= checked <= dates.utc_today()  # after gpt-4o-mini's release
    unpriced = estimate("ft:some-model:acme::X", "some-model", [], {})
    assert unpriced.cost_usd is None and unpriced.prices_checked is None


def test_a_prompt_the_old_model_refuses_does_not_hold_back_the_others(account):
    take_inventory(provider=provider([]), today=TODAY)
    account.refused = {"Card was charged twice"}
    [partial] = distil([FT], today=TODAY, concurrency=1)
    assert (partial.complete, partial.failed) == (False, 1)
    paths = distilled_paths(FT)
    kept = [
        orjson.loads(line)["messages"][1]["content"]
        for line in paths.train.read_bytes().splitlines()
    ]
    assert kept == ["Reset my password", "App crashes on start"]
    account.refused = set()
    [done] = distil([FT], today=TODAY)
    assert done.complete and done.asked == 1
    assert len(paths.train.read_bytes().splitlines()) == 3


FAST = {"batch_size": 4, "precision": "fp32", "lora_rank": 4}  # the old lr multiplier stays


def trained_migration(tmp_path) -> str:
    """FT's migration job to a tiny local model, trained here by a worker: its model's name."""
    tiny = save_tiny_model(tmp_path / "tiny")
    plan = make_plan(Targets("local", {FT: str(tiny)}), today=TODAY)
    outcomes = run_plan(plan, today=TODAY, extra_hyperparameters=FAST, start_worker=False)
    [made] = [o for o in outcomes if o["fine_tuned_model"] == FT]
    assert worker.run_worker(max_jobs=1) == 1
    new = jobs_api.get_job(made["job"]["id"])
    assert new.status == "succeeded", new.error_message
    return new.fine_tuned_model


GENERATED_BOTH = (
    "both models answered by generation: the old model gives no log-likelihoods to score "
    "labels with, and a paired comparison needs one method for both."
)


def compare_cli(capsys, *flags: str) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = main(["migrate", "openai", "compare", FT, "--task", "classify", "--json", *flags])
    out, err = capsys.readouterr()
    return code, (orjson.loads(out) if code == 0 else None), err


@pytest.mark.slow  # trains the tiny model, then five comparisons (~25 s on a quiet machine)
def test_compare_takes_the_old_side_from_the_distilled_answers(account, tmp_path, capsys):
    take_inventory(provider=provider([]), today=TODAY)
    # A distillation cut after its first batch: the training prompts and one validation prompt.
    cancel = threading.Event()
    with pytest.raises(TunelabError):
        distil(
            [FT],
            today=TODAY,
            progress=lambda *_: cancel.set(),
            cancel=cancel,
            batch_size=4,
            concurrency=1,
        )
    assert account.asked == [q for q, _ in TRAIN + VAL[:1]]
    new_model = trained_migration(tmp_path)

    # Before the shutdown, answers that do not cover the validation prompts: it is asked.
    asked = compare(FT, task="classify", today=TODAY)
    assert sorted(account.asked[4:]) == sorted(q for q, _ in VAL)  # a few at a time
    assert asked.options["old_answers"] == {"from": "asked", "on": "2026-12-01"}
    assert asked.options["notes"] == [
        "the old model's answers: asked on 2026-12-01 (its distilled answers cover 1 of the 2).",
        GENERATED_BOTH,
    ]
    assert asked.models == (FT, new_model) and asked.data["n_items"] == 2
    # The hosted old model cannot be label-scored: the new one answers by generation too.
    assert asked.options["method"] == "generate"
    assert [asked.scores[m]["method"] for m in (FT, new_model)] == ["generate", "generate"]

    # After it, what was distilled is the old side; the item without an answer is left out.
    partial = compare(FT, task="classify", today=date(2027, 1, 20))
    assert len(account.asked) == 6  # OpenAI was not called
    old = partial.options["old_answers"]
    assert (old["from"], old["because"], old["n_items"], old["n_left_out"]) == (
        "distilled",
        "models_stopped",
        1,
        1,
    )
    assert partial.data["n_items"] == 1 and partial.scores[FT]["accuracy"] == 1.0
    assert "1 of the 2 validation items had none and are left out" in partial.options["notes"][0]

    # The distillation resumes (only the missing prompt); its answers now cover the file.
    [done] = distil([FT], today=TODAY)
    assert done.complete and account.asked[6:] == [VAL[1][0]]
    records = [orjson.loads(line) for line in distilled_paths(FT).answers.read_bytes().split()]
    days = sorted({datetime.fromtimestamp(r["answered_at"], timezone.utc).date() for r in records})
    when = " to ".join(dict.fromkeys(str(day) for day in (days[0], days[-1])))
    account.drifted = True  # from here on, an answer asked afresh would show

    # Before the shutdown, answers that cover the file are used: asking again costs money.
    code, covered, err = compare_cli(capsys, "--today", "2026-12-01")
    assert code == 0, err
    assert len(account.asked) == 7
    assert covered["options"]["old_answers"]["because"] == "covered"
    assert covered["models"][FT]["accuracy"] == 1.0 and covered["data"]["n_items"] == 2
    assert f"its distilled answers of {when} (they cover every prompt; --fresh asks" in err
    answers = {row["question"]: row["answer"] for row in covered_outputs(covered, FT)}
    assert answers == {"Refund please": "BILLING", "Cannot log in": "ACCOUNT"}

    # --fresh asks the old model again (which has drifted since).
    code, fresh, err = compare_cli(capsys, "--today", "2026-12-01", "--fresh")
    assert code == 0, err
    assert sorted(account.asked[7:]) == sorted(q for q, _ in VAL)
    assert fresh["options"]["old_answers"]["from"] == "asked"
    assert fresh["models"][FT]["accuracy"] == 0.0  # "BUG" to both
    assert "the old model's answers: asked on 2026-12-01 (--fresh)." in err

    # After the shutdown: the distilled answers, no call, and the run says so.
    code, after, err = compare_cli(capsys, "--today", "2027-01-20")
    assert code == 0, err
    assert len(account.asked) == 9
    note = (
        f"the old model's answers: its distilled answers of {when} (OpenAI's fine-tuned "
        "models stopped answering on 2027-01-14)."
    )
    assert note in err and after["options"]["notes"] == [note, GENERATED_BOTH]
    assert GENERATED_BOTH in err
    assert {after["models"][m]["method"] for m in (FT, new_model)} == {"generate"}
    assert after["models"][FT]["accuracy"] == 1.0 and after["data"]["n_items"] == 2
    assert after["models"][FT]["answers_per_second"] is None  # looked up, not answered
    assert after["models_evaluated"] == [FT, new_model]
    old = after["options"]["old_answers"]
    assert old["provenance"] == str(distilled_paths(FT).provenance)
    assert (old["answered_from"], old["answered_to"]) == (str(days[0]), str(days[-1]))
    capsys.readouterr()
    assert main(["eval", "show", after["id"], "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["options"]["old_answers"] == old  # recorded in the registry
    assert escape_html(note) in Path(after["html_path"]).read_text()

    code, _, err = compare_cli(capsys, "--today", "2027-01-20", "--fresh")
    assert code != 0 and "drop --fresh" in err and len(account.asked) == 9

    # Free-text answers go to a judge: the old side is the same recorded answers.
    judge = LabelJudge()
    with answering_from({"a-judge": judge}):
        judged = compare(FT, task="judge", judge="a-judge", today=date(2027, 1, 20))
    assert len(account.asked) == 9 and judged.kind == "pairwise"
    assert judged.options["old_answers"]["from"] == "distilled"
    assert {"BILLING", "ACCOUNT"} <= judge.seen  # the distilled answers were judged
    assert judged.metrics["records"][FT]["wins"] > judged.metrics["records"][new_model]["wins"]


@pytest.mark.slow  # trains the tiny model
def test_run_alias_answers_the_old_name_with_the_new_model_and_compare_still_asks_the_old(
    account, tmp_path
):
    take_inventory(provider=provider([]), today=TODAY)
    queued = alias_migrated(run_plan(make_plan(Targets("local"), today=TODAY), start_worker=False))
    assert {o["fine_tuned_model"]: o["alias"] for o in queued}[FT] is None  # not trained yet
    assert resolve_chat_model(FT).provider == "openai"
    with Store() as store:  # that queued job is not the one trained below
        [job] = [j for j in store.list_jobs() if j.metadata.get("tunelab_migrated_from") == FT]
        store.update_job(job.id, status="cancelled")

    new_model = trained_migration(tmp_path)
    plan = make_plan(Targets("local"), today=TODAY)
    done = alias_migrated(run_plan(plan, today=TODAY, start_worker=False))
    assert {o["fine_tuned_model"]: o["alias"] for o in done}[FT] == new_model
    assert resolve_chat_model(FT).provider == "local"  # every front end: the replacement

    # The comparison after the alias is still old against new: OpenAI is asked for the old.
    compared = compare(FT, task="classify", today=TODAY)
    assert sorted(account.asked) == sorted(q for q, _ in VAL)
    assert compared.models == (FT, new_model)


class LabelJudge(Candidate):
    """A judge preferring the answer that is a label in capitals (the old model's)."""

    name = "a-judge"

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def answer(self, conversations, **settings) -> list[Answer]:
        return [Answer(self.verdict(messages[-1]["content"])) for messages in conversations]

    def verdict(self, prompt: str) -> str:
        blocks = dict(re.findall(r'<data-\w+ name="([^"]+)">\n(.*?)\n</data-\w+>', prompt, re.S))
        first, second = blocks["first answer"], blocks["second answer"]
        self.seen |= {first, second}
        labels = {"BILLING", "ACCOUNT", "BUG"}
        winner = (
            "tie"
            if (first in labels) == (second in labels)
            else ("first" if first in labels else "second")
        )
        return json.dumps({"winner": winner, "reason": "a label"})


def covered_outputs(result: dict, model: str) -> list[dict]:
    """The rows of `model`'s answers in a result file."""
    return orjson.loads(Path(result["json_path"]).read_bytes())["outputs"][model]


def test_compare_after_the_shutdown_without_distilled_answers_says_how_to_have_kept_them(
    account, capsys
):
    take_inventory(provider=provider([]), today=TODAY)
    code, _, err = compare_cli(capsys, "--today", "2027-01-20")
    assert code == 1 and not account.asked
    assert "none of its answers to them were distilled before" in err
    assert "`tunelab migrate openai distil` (or `run --distil`) before 2027-01-14" in err
    capsys.readouterr()
    assert main(["eval", "list", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["data"] == []  # no run recorded


def test_after_the_shutdown_openai_steps_refuse_and_the_registry_steps_work(account, capsys):
    take_inventory(provider=provider([]), today=TODAY)
    after = date(2027, 1, 14)
    with pytest.raises(TunelabError) as refused:
        distil([FT], today=after)
    assert refused.value.code == "openai_models_stopped" and not account.asked
    plan = make_plan(Targets("together"), today=after)
    assert plan["countdown"]["days_until_models_stop"] == 0
    with pytest.raises(TunelabError) as closed:
        run_plan(make_plan(Targets("gpt-4.1-mini"), today=after), today=after)
    assert closed.value.code == "openai_fine_tuning_closed"

    capsys.readouterr()
    code = main(["migrate", "openai", "distil", "--yes", "--today", "2027-02-01"])
    _, err = capsys.readouterr()
    assert code == 1 and "stopped answering on 2027-01-14" in err
    assert "fine-tuned models have not answered since 2027-01-14" in err


def test_an_inventory_refused_after_the_shutdown_says_what_still_works(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    api.get(f"{OPENAI}/fine_tuning/jobs").respond(
        404, json={"error": {"message": "Not found", "type": "invalid_request_error"}}
    )
    with pytest.raises(TunelabError) as refused:
        take_inventory(provider=provider([]), today=date(2027, 2, 1))
    assert "no new jobs since 2027-01-06" in refused.value.message
    assert "`tunelab migrate openai plan` and `run` still work" in refused.value.hint


def test_countdown_counts_days_to_each_date():
    assert dates.countdown(date(2027, 1, 5))["days_until_no_new_jobs"] == 1
    assert dates.countdown_line(date(2027, 1, 5)).startswith("1 day until")
    line = dates.countdown_line(date(2027, 1, 10))
    assert line.startswith("OpenAI has taken no new") and "4 days until" in line


def test_the_rate_limit_spaces_requests_evenly():
    from tunelab.migrate.distil import RateLimit

    sleeps: list[float] = []
    now = [0.0]
    limit = RateLimit(60, sleep=sleeps.append, clock=lambda: now[0])
    for _ in range(3):  # three requests at once: the second waits 1 s, the third 2 s
        limit.wait()
    now[0] = 10.0  # after a pause, the next goes at once
    limit.wait()
    assert sleeps == [1.0, 2.0]
    RateLimit(None, sleep=sleeps.append).wait()
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(
    ("golds", "task"),
    [
        (["db.users.find({})", 'db.orders.find({"total": {"$gt": 5}})', "billing"], "queries"),
        (["billing", "account", "billing", "bug", "account", "bug"], "classify"),
        (["Sure, here is a long answer.", "Another free-text reply here.", "A third."], "judge"),
    ],
)
def test_compare_chooses_its_task_from_the_validation_answers(golds, task):
    from tunelab.evals.items import EvalData, EvalItem
    from tunelab.migrate.compare import choose_task

    items = [EvalItem([{"role": "user", "content": "q"}], gold) for gold in golds]
    assert choose_task(EvalData(Path("val.jsonl"), "chat", items, [], "sha")) == task


TOGETHER = "https://api.together.ai/v1"  # the together SDK's default host
TOGETHER_KEY = "tgp-migrate-DO-NOT-LEAK-9876543210"
TOGETHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


class TogetherAccount:
    """Together's upload, limits and create routes on its own host; keeps what it was sent."""

    def __init__(self, api) -> None:
        self.uploaded: dict[str, bytes] = {}  # Together file id → the bytes put to storage
        api.post(f"{TOGETHER}/files").mock(side_effect=self.start_upload)
        api.put(url__regex=r"https://storage\.example\.com/up/file-t\d+").mock(
            side_effect=self.store
        )
        api.post(url__regex=rf"{TOGETHER}/files/file-t\d+/preprocess").mock(
            side_effect=self.preprocess
        )
        api.get(url__regex=rf"{TOGETHER}/fine-tunes/models/limits.*").respond(
            200,
            json={
                "model_name": TOGETHER_MODEL,
                "max_num_epochs": 20,
                "max_num_checkpoints": 10,
                "max_num_evals": 100,
                "max_learning_rate": 1.0,
                "min_learning_rate": 0.0,
                "lora_training": {
                    "default_rank": 64,
                    "max_batch_size": 32,
                    "min_batch_size": 8,
                    "max_rank": 64,
                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                },
                "full_training": {"max_batch_size": 24, "min_batch_size": 8},
                "supports_full_training": True,
            },
        )
        api.post(f"{TOGETHER}/fine-tunes/estimate-price").respond(
            200,
            json={
                "estimation_available": True,
                "allowed_to_proceed": True,
                "estimated_total_price": 0.01,
                "user_limit": 100.0,
            },
        )
        self.create = api.post(f"{TOGETHER}/fine-tunes").mock(side_effect=self.created)
        self.job: dict = {}
        api.get(f"{TOGETHER}/fine-tunes/ft-migrated1").mock(
            side_effect=lambda request: httpx.Response(200, json=self.job)
        )
        api.get(f"{TOGETHER}/fine-tunes/ft-migrated1/events").respond(200, json={"data": []})
        api.get(url__regex=rf"{TOGETHER}/fine-tunes/ft-migrated1/(list-)?checkpoints").respond(
            200, json={"data": []}
        )

    def start_upload(self, request):
        file_id = f"file-t{len(self.uploaded) + 1}"
        self.uploaded[file_id] = b""
        return httpx.Response(
            302,
            headers={
                "Location": f"https://storage.example.com/up/{file_id}?sig=1",
                "X-Together-File-Id": file_id,
            },
        )

    def store(self, request):
        self.uploaded[request.url.path.rsplit("/", 1)[1]] = request.content
        return httpx.Response(200)

    def preprocess(self, request):
        file_id = request.url.path.split("/")[-2]
        return httpx.Response(
            200,
            json={
                "id": file_id,
                "object": "file",
                "created_at": 1790000000,
                "filename": f"{file_id}.jsonl",
                "bytes": len(self.uploaded[file_id]),
                "purpose": "fine-tune",
                "FileType": "jsonl",
                "processing_status": "COMPLETED",
            },
        )

    def created(self, request):
        sent = json.loads(request.content)
        self.job = {
            "id": "ft-migrated1",
            "status": "pending",
            "user_id": "user-1",
            "created_at": "2026-12-01T12:00:00.000Z",
            "updated_at": "2026-12-01T12:00:00.000Z",
            "model": sent["model"],
            "model_output_name": None,
            "training_file": sent["training_file"],
            "validation_file": sent.get("validation_file") or "",
            "suffix": sent["suffix"],
            "n_epochs": sent["n_epochs"],
            "n_checkpoints": 1,
            "n_evals": sent["n_evals"],
            "batch_size": 8,
            "learning_rate": 1e-05,
            "token_count": 0,
            "events": [],
            "training_type": {
                "type": "Lora",
                "lora_r": 64,
                "lora_alpha": 128,
                "lora_dropout": 0.0,
                "lora_trainable_modules": "all-linear",
            },
            "training_method": {"method": "sft", "train_on_inputs": "auto"},
        }
        return httpx.Response(200, json=self.job)


def test_a_plan_run_to_together_uploads_the_distilled_data_and_creates_the_job_once(
    account, api, monkeypatch, capsys, caplog, isolated_home
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TOGETHER_API_KEY", TOGETHER_KEY)
    together = TogetherAccount(api)
    take_inventory(provider=provider([]), today=TODAY)
    [distilled] = distil([FT], today=TODAY)
    assert distilled.complete

    outcomes = run_plan(make_plan(Targets("together"), today=TODAY), today=TODAY)

    made = {o["fine_tuned_model"]: o for o in outcomes}
    assert "nothing to train on" in made[OLD_FT]["skipped"]
    assert made[FT]["skipped"] is None
    sent = json.loads(together.create.calls.last.request.content)
    assert together.create.call_count == 1
    assert (sent["model"], sent["n_epochs"], sent["suffix"]) == (TOGETHER_MODEL, 2, "tickets")
    assert "metadata" not in sent and "learning_rate_multiplier" not in sent  # not Together's
    # The training file went up with the old model's answers after it; the validation as is.
    assert together.uploaded[sent["training_file"]] == chat_lines(TRAIN) + (
        distilled_paths(FT).train.read_bytes()
    )
    assert together.uploaded[sent["validation_file"]] == chat_lines(VAL)
    assert sent["n_evals"] == 2  # a validation loss each epoch, as OpenAI reported
    new = jobs_api.get_job(made[FT]["job"]["id"])
    assert (new.provider, new.provider_job_id, new.status) == ("together", "ft-migrated1", "queued")
    assert (new.model, new.suffix, new.hyperparameters) == (
        TOGETHER_MODEL,
        "tickets",
        {"n_epochs": 2},
    )
    assert new.metadata["tunelab_migrated_from"] == FT
    assert new.metadata["tunelab_openai_job"] == "ftjob-a"
    assert new.metadata["tunelab_distilled_file"] == str(distilled_paths(FT).train)
    with Store() as store:
        assert store.get_file(new.training_file).provider_file_id == sent["training_file"]

    capsys.readouterr()
    code = main(["migrate", "openai", "run", "--target", "together", "--today", "2026-12-01"])
    out, err = capsys.readouterr()
    assert code == 0 and together.create.call_count == 1  # nothing created twice
    assert f"{FT} → {new.id} (queued, together) — skipped: already migrated" in out

    registry = b"".join(p.read_bytes() for p in isolated_home.rglob("*") if p.is_file())
    requests = [f"{c.request.url} {c.request.content!r}" for c in api.calls]
    for key in (KEY, TOGETHER_KEY):
        for text in (out, err, caplog.text, registry.decode("utf-8", "replace"), *requests):
            assert key not in text
    bearer = {"api.together.ai": f"Bearer {TOGETHER_KEY}", "api.openai.com": f"Bearer {KEY}"}
    for call in api.calls:  # each key went to its own provider only, none to the storage host
        assert call.request.headers.get("authorization") == bearer.get(call.request.url.host)
