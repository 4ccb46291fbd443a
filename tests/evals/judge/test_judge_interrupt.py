"""Ctrl-C during `tunelab eval judge` keeps every verdict obtained so far: the run is recorded
as partial, result.json and the report are written (atomically), the command says how many
were judged of how many and exits 130.

The end-to-end tests run `tunelab` as its own process and press Ctrl-C with a real SIGINT.
The judge and the candidates are a real HTTP server on loopback (`fake_upstream.Upstream`,
reached as `MODEL@URL`), judging as `paris_judge` does. It holds one judge request open
until the test has sent SIGINT and read the command's "stopping" line, so what was judged
before the signal is known without any timing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import orjson
import pytest

from fake_upstream import Upstream, paris_judge
from tunelab.cli import main
from tunelab.evals.candidates import Answer, Candidate
from tunelab.evals.items import EvalItem
from tunelab.evals.judge.task import AnswerSet, JudgeSetup, judge_pairwise
from tunelab.registry import Store

QUESTIONS = (
    "What is the capital of France?",
    "Where is the Louvre?",
    "Which city has the Eiffel Tower?",
)
WAIT = 300  # seconds: room for a busy machine; each wait ends as soon as its event comes


def answers(model: str, messages: list[dict]) -> str:
    if model == "judge":
        return paris_judge(messages)
    return "It is Paris." if model == "good" else "Somewhere in Europe, I think."


@pytest.fixture
def upstream(request):
    """The loopback server; the test names the judge request it holds (`hold`)."""
    server = Upstream(reply=answers, hold=("judge", request.param))
    yield server
    server.close()


def run_until_ctrl_c(upstream: Upstream, argv: list[str]) -> tuple[int, str, str]:
    """Run `tunelab ARGV`; once the held judge request is open, press Ctrl-C, wait for the
    command to say it is stopping, then let the judge answer. Returns (code, out, err)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tunelab", *argv],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        while not upstream.holding.wait(1):  # the judge's held request is open
            assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        said = []
        for line in process.stderr:  # the handler ran: the cancel is set
            said.append(line)
            if line.startswith("stopping"):
                break
        assert said and said[-1].startswith("stopping"), "".join(said)
        upstream.gate.set()
        out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out, "".join(said) + err


@pytest.mark.parametrize("upstream", [3], indirect=True)
def test_ctrl_c_during_pairwise_judging_keeps_the_comparisons_judged(upstream, tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": "Paris"},
                    ]
                }
            )
            + "\n"
            for q in QUESTIONS
        )
    )
    good, vague, judge = (f"{name}@{upstream.url}/v1" for name in ("good", "vague", "judge"))
    code, out, err = run_until_ctrl_c(
        upstream,
        [
            "eval",
            "judge",
            "--judge-model",
            judge,
            "--mode",
            "pairwise",
            "--data",
            str(data),
            "-m",
            good,
            "-m",
            vague,
            "-o",
            str(tmp_path / "run"),
        ],
    )
    # Three comparisons, two judge calls each (both orders): the third call opened the second
    # comparison, which is finished; the third is never asked for.
    assert code == 130, err
    assert "interrupted: cancelled: 2 of 3 comparisons judged" in err
    assert upstream.requests["judge"] == 4 and upstream.released == [True]
    assert "pairwise ratings" in out  # the ratings of what was judged
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert saved["partial"] == {"n_comparisons": 3, "n_judged": 2}
    assert len(saved["outputs"]["comparisons"]) == 2 and saved["n_verdicts"] == 2
    assert saved["records"][good] == {"wins": 2.0, "games": 2}
    assert saved["ratings"][good]["rating"] > saved["ratings"][vague]["rating"]  # on 2 of 3
    assert not list((tmp_path / "run").glob("*.tmp"))  # written atomically
    html = (tmp_path / "run" / "report.html").read_text()
    assert "partial" in html and "2 of 3 comparisons judged" in html and "Ratings" in html
    with Store() as store:
        [run] = store.list_eval_runs()
        assert run.status == "partial" and run.error_message.endswith("2 of 3 comparisons judged")
    capsys.readouterr()
    assert main(["eval", "show", run.id]) == 0
    shown = capsys.readouterr().out
    assert "partial: cancelled: 2 of 3 comparisons judged" in shown and "pairwise ratings" in shown


@pytest.mark.parametrize("upstream", [3], indirect=True)
def test_ctrl_c_during_single_judging_keeps_each_answer_judged(upstream, tmp_path, capsys):
    ideas = tmp_path / "ideas.json"
    ideas.write_text(json.dumps(["capital of France", "city of the Louvre"]))
    databases = {}
    for name in ("good", "vague"):  # made through the same loopback server, before the run
        databases[name] = tmp_path / f"{name}.db"
        assert (
            main(
                [
                    "generate-conversations",
                    "--ideas",
                    str(ideas),
                    "-m",
                    f"{name}@{upstream.url}/v1",
                    "-o",
                    str(databases[name]),
                ]
            )
            == 0
        )
    code, out, err = run_until_ctrl_c(
        upstream,
        [
            "eval",
            "judge",
            "--judge-model",
            f"judge@{upstream.url}/v1",
            "--conversations",
            str(databases["good"]),
            "--conversations",
            str(databases["vague"]),
            "-o",
            str(tmp_path / "run"),
            "--traits",
            "helpfulness",
        ],
    )
    # Two answers each: good's both judged, then vague's first (the held call) and no more.
    good, vague = f"good@{upstream.url}/v1", f"vague@{upstream.url}/v1"
    assert code == 130, err
    assert (
        f"interrupted: cancelled: 1 of 2 answers judged for every model ({good}: 2, {vague}: 1)"
    ) in err
    assert upstream.requests["judge"] == 3
    assert "9.00" in out and "3.00" in out  # the scores table of what was judged
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert saved["partial"]["scored"] == {good: 2, vague: 1}
    assert saved["models"][good]["mean_score"] == 9 and saved["models"][vague]["n"] == 1
    assert [o["scores"] for o in saved["outputs"][vague]] == [{"helpfulness": 3}]
    assert "1 of 2 answers judged" in (tmp_path / "run" / "report.html").read_text()
    with Store() as store:
        [run] = store.list_eval_runs()
        assert run.status == "partial"
        assert len(store.list_eval_outputs(run.id, vague)) == 1
    capsys.readouterr()
    assert main(["eval", "show", run.id]) == 0
    assert "partial: cancelled: 1 of 2 answers judged" in capsys.readouterr().out


class Answers(Candidate):
    """Fixed answers; as the judge (`chat`), it says which answer names Paris and presses the
    studio's Cancel after `cancel_after` verdicts."""

    def __init__(self, name, text, cancel: threading.Event | None = None, cancel_after=0):
        self.name, self.text, self.cancel, self.cancel_after = name, text, cancel, cancel_after
        self.calls = 0

    def answer(self, conversations, *, cancel=None, **settings):
        return [Answer(self.text) for _ in conversations]

    def chat(self, messages, max_tokens=512):
        self.calls += 1
        if self.calls == self.cancel_after:
            self.cancel.set()
        return paris_judge(messages)


def answer_set(model: str, text: str, n: int = 2) -> AnswerSet:
    return AnswerSet(
        model, [EvalItem([{"role": "user", "content": f"q{i}"}], text) for i in range(n)]
    )


def test_a_partial_pairwise_run_is_not_rated_while_a_model_has_no_decided_comparison(
    monkeypatch,
):
    cancel = threading.Event()
    judge = Answers("judge", "", cancel, cancel_after=2)  # a vs b on the first prompt only
    monkeypatch.setattr("tunelab.evals.judge.task.open_candidate", lambda name: judge)
    sets = [answer_set("a", "Paris"), answer_set("b", "Rome"), answer_set("c", "Lyon")]
    result = judge_pairwise(JudgeSetup("judge", _traits()), sets, cancel=cancel)
    assert result.partial == {"n_comparisons": 6, "n_judged": 1}
    assert result.ratings == {} and "no decided comparison yet for c" in result.note
    assert result.records["a"] == {"wins": 1.0, "games": 1} and result.error is None
    assert len(result.answers["comparisons"]) == 1 and "note" in result.metrics


def test_a_cancel_while_the_candidates_answer_records_a_partial_run_with_nothing_judged(
    tmp_path, monkeypatch, capsys
):
    """The candidates are still answering when Ctrl-C comes: no verdict yet, but the run is
    kept as partial (0 judged), not failed."""

    class StopsAnswering(Candidate):
        name = "slow"

        def answer(self, conversations, *, cancel=None, **settings):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while it answers
            from tunelab.evals.candidates import check_cancel

            check_cancel(cancel)
            return [Answer("Paris") for _ in conversations]

    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: StopsAnswering())
    monkeypatch.setattr("tunelab.evals.candidates.check_models", lambda names: None)
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Capital?"},
                    {"role": "assistant", "content": "Paris"},
                ]
            }
        )
        + "\n"
    )
    capsys.readouterr()
    code = main(
        [
            "eval",
            "judge",
            "--judge-model",
            "j",
            "--data",
            str(data),
            "-m",
            "slow",
            "-o",
            str(tmp_path / "run"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 130, err
    assert "cancelled: 0 of 1 answers judged for every model (slow: 0)" in err
    assert "nothing judged: cancelled before the first verdict" in out
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert saved["partial"]["scored"] == {"slow": 0} and "error" not in saved
    with Store() as store:
        assert store.list_eval_runs()[0].status == "partial"


def _traits():
    from tunelab.evals.judge.verdicts import DEFAULT_TRAITS

    return list(DEFAULT_TRAITS)
