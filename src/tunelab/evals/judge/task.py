"""`tunelab eval judge`: a judge model scores answers on traits, or compares models pairwise.

Answers come from conversation databases (one per model, e.g. made by
`tunelab generate-conversations`) or are generated on the spot by `--model` candidates on
`--data` prompts. Single mode scores each answer on each trait (1–10); pairwise mode
compares models answer against answer on the same prompts, in both orders, and fits
Bradley–Terry ratings on the Elo scale with bootstrap intervals.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from tunelab.data.sources import read_source
from tunelab.errors import TunelabError, usage_error
from tunelab.evals.candidates import answer_all, open_candidate
from tunelab.evals.items import EvalData, EvalItem
from tunelab.evals.judge.ratings import rating_intervals
from tunelab.evals.judge.verdicts import (
    Trait,
    first_errors,
    run_pairwise,
    score_answer,
    summarise_scores,
)
from tunelab.evals.result import TaskResult

JUDGE_MAX_TOKENS = 512
EARLY_CHECK = 3  # verdicts: a judge none of whose first ones could be read is stopped


class VerdictWatch:
    """Stops a run whose judge cannot give verdicts: a small model that never writes the JSON
    asked for would otherwise take minutes per item to end with nothing scored."""

    def __init__(self, judge: str, first: int = EARLY_CHECK) -> None:
        self.judge, self.first = judge, first
        self.seen = self.unreadable = 0

    def __call__(self, result: dict) -> None:
        """Count one verdict (a `score_answer` or `compare_answers` result)."""
        if self.seen >= self.first:
            return
        self.seen += 1
        self.unreadable += bool(result["parse_failure"] and not result["call_failed"])
        if self.unreadable == self.first:
            raise TunelabError(
                "judge_unreadable",
                f"the judge {self.judge} gave no readable verdict in its first {self.first} "
                f"replies (last error: {result['error']}); stopped early.",
                hint="use a stronger judge model (one that follows JSON formats), or raise "
                "--judge-max-tokens if its replies are cut short",
            )


@dataclass(frozen=True)
class JudgeSetup:
    """The judge and what it is asked, the same in single and pairwise mode: the model, the
    traits it scores, a rubric (None: the traits alone) and its longest reply."""

    judge: str
    traits: list[Trait]
    rubric: str | None = None
    max_tokens: int = JUDGE_MAX_TOKENS


@dataclass
class AnswerSet:
    """One model's answers to a list of prompts."""

    model: str
    items: list[EvalItem]  # the prompt is `messages`; the model's answer is `gold`


@dataclass(frozen=True, kw_only=True)
class JudgeResult(TaskResult):
    """What `judge_single` returns; `answers` holds each answer with its scores and reason."""

    judge: str
    traits: list[str]
    models: dict[str, dict]  # per model: mean score, per-trait means, parse and call failures


@dataclass(frozen=True, kw_only=True)
class PairwiseResult(TaskResult):
    """What `judge_pairwise` returns; `answers["comparisons"]` holds every comparison."""

    judge: str
    traits: list[str]
    n_prompts: int
    ratings: dict[str, dict]  # per model: Bradley-Terry rating with its interval
    records: dict[str, dict]  # per model: wins (a tie is half) and decided games
    n_comparisons: int
    n_verdicts: int
    n_call_failures: int
    n_parse_failures: int
    errors: list[str]  # the first errors of the judge's calls
    note: str | None = None  # why a cancelled run is not rated


def answers_from_database(path: Path, limit: int | None = None) -> AnswerSet:
    """The conversations of a database: the last assistant message is the answer judged."""
    reading = read_source(Path(path), "conversations")
    items = []
    for example in reading.examples:
        messages = list(example.messages)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is not None:
            items.append(
                EvalItem(messages[:last], messages[last]["content"], None, example.source_line)
            )
        if limit is not None and len(items) >= limit:
            break
    return AnswerSet(_model_of(Path(path)), items)


def _model_of(path: Path) -> str:
    """The model a database's conversations came from (its `model` column), else its name."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT DISTINCT model FROM conversations LIMIT 2").fetchall()
        if len(row) == 1 and row[0][0]:
            return str(row[0][0])
    except sqlite3.Error:  # no `model` column: not made by generate-conversations
        return path.stem
    return path.stem


def answers_from_model(
    model: str, data: EvalData, *, max_tokens: int, progress=None, cancel=None
) -> AnswerSet:
    answers, _ = answer_all(
        model, data.conversations(), max_tokens=max_tokens, progress=progress, cancel=cancel
    )
    return AnswerSet(
        model,
        [
            EvalItem(i.messages, a.text, None, i.source_line)
            for i, a in zip(data.items, answers, strict=True)
        ],
    )


def judge_single(
    setup: JudgeSetup, sets: list[AnswerSet], progress=None, cancel=None
) -> JudgeResult:
    """Each answer scored on each trait. A cancel (Ctrl-C, the studio's Cancel) keeps the
    answers judged so far: the result is then marked `partial` (see `runs.partial_message`).
    A judge none of whose first verdicts can be read stops the run (`VerdictWatch`)."""
    judge, traits = setup.judge, setup.traits
    chat, watch = _judge_chat(judge, setup.max_tokens), VerdictWatch(judge)
    metrics, outputs, judged = {}, {}, {}
    for answers in sets:
        results = _score_set(chat, answers, traits, setup.rubric, progress, cancel, watch)
        judged[answers.model] = len(results)
        if results:
            metrics[answers.model] = summarise_scores(results)
            outputs[answers.model] = [
                {
                    "question": i.question,
                    "answer": i.gold,
                    "scores": r["scores"],
                    "reason": r.get("reason"),
                    "parse_failure": r["parse_failure"],
                    "error": r["error"],
                }
                for i, r in zip(answers.items, results, strict=False)
            ]
        if len(results) < len(answers.items):
            break  # cancelled: the later models are not judged
    stopped = any(judged.get(s.model, 0) < len(s.items) for s in sets)
    partial = error = None
    if stopped:
        partial = {
            "n_items": max(len(s.items) for s in sets),
            "judged": True,
            "scored": {s.model: judged.get(s.model, 0) for s in sets},
        }
    if (metrics or not stopped) and not any(m["n_scored"] for m in metrics.values()):
        errors = [e for m in metrics.values() for e in m["errors"]]
        error = _nothing_judged(judge, "answer was scored", errors)
    return JudgeResult(
        judge=judge,
        traits=[t.name for t in traits],
        models=metrics,
        answers=outputs,
        partial=partial,
        error=error,
    )


def _score_set(chat, answers: AnswerSet, traits, rubric, progress, cancel, watch) -> list[dict]:
    """The judge's scores of one model's answers, in order: fewer than its answers when a
    cancel stopped it (the verdict being asked for is waited for and kept)."""
    task = progress(f"judging {answers.model}", len(answers.items)) if progress else None
    results = []
    for item in answers.items:
        if cancel is not None and cancel.is_set():
            break
        results.append(
            score_answer(
                chat, conversation=item.messages, answer=item.gold, traits=traits, rubric=rubric
            )
        )
        watch(results[-1])
        if task:
            task(1)
    return results


def _nothing_judged(judge: str, what: str, errors: list[str]) -> str:
    """Why a run produced no result: it is reported, recorded, and the command fails."""
    reason = f"; first error: {errors[0]}" if errors else ""
    return f"no {what} by the judge {judge}{reason}"


def judge_pairwise(
    setup: JudgeSetup, sets: list[AnswerSet], progress=None, cancel=None
) -> PairwiseResult:
    """Every pair of models compared on every shared prompt, then rated. A cancel keeps the
    comparisons judged so far (`partial`), rated when each model has a decided one. A judge
    none of whose first verdicts can be read stops the run (`VerdictWatch`)."""
    if len(sets) < 2:
        raise usage_error("pairwise_needs_two", "pairwise judging needs at least two models.")
    prompts, aligned = align(sets)
    n_pairs = len(prompts) * len(sets) * (len(sets) - 1) // 2
    task = progress("pairwise comparisons", n_pairs) if progress else None
    judge, traits = setup.judge, setup.traits
    outcomes, records = run_pairwise(
        _judge_chat(judge, setup.max_tokens),
        prompts,
        aligned,
        traits=traits,
        rubric=setup.rubric,
        progress=task,
        cancel=cancel,
        check=VerdictWatch(judge),
    )
    n_verdicts, wins = len(outcomes), _records(aligned, outcomes)
    partial = note = error = None
    if len(records) < n_pairs:  # cancelled part-way
        partial = {"n_comparisons": n_pairs, "n_judged": len(records)}
        outcomes, note = _enough_to_rate(outcomes, wins)
    errors = first_errors(records)
    if not n_verdicts and (records or partial is None):
        error = _nothing_judged(judge, "comparison was decided", errors)
    n_call_failures = sum(1 for r in records if r.get("call_failed"))
    return PairwiseResult(
        judge=judge,
        traits=[t.name for t in traits],
        n_prompts=len(prompts),
        ratings=rating_intervals(outcomes) if outcomes else {},
        records=wins,
        n_comparisons=len(records),
        n_verdicts=n_verdicts,
        n_call_failures=n_call_failures,
        n_parse_failures=sum(1 for r in records if r.get("parse_failure")) - n_call_failures,
        errors=errors,
        note=note,
        answers={"comparisons": records},
        partial=partial,
        error=error,
    )


def _enough_to_rate(outcomes: list, wins: dict[str, dict]) -> tuple[list, str | None]:
    """The outcomes of a cancelled run to rate: all, when every model has a decided
    comparison; none otherwise (ratings of some models only would share no scale), with a
    note saying why the run is not rated."""
    unrated = [name for name, r in wins.items() if not r["games"]]
    if outcomes and not unrated:
        return outcomes, None
    why = (
        f"no decided comparison yet for {', '.join(unrated)}"
        if outcomes
        else "no comparison was decided"
    )
    return [], f"not rated: too few comparisons judged before the cancel ({why})"


def _records(names, outcomes) -> dict[str, dict]:
    """Each model's wins (a tie is half a win) and decided games."""
    wins = {name: {"wins": 0.0, "games": 0} for name in names}
    for first, second, score in outcomes:
        wins[first]["wins"] += score
        wins[second]["wins"] += 1 - score
        wins[first]["games"] += 1
        wins[second]["games"] += 1
    return wins


def align(sets: list[AnswerSet]) -> tuple[list[list[dict]], dict[str, list[str]]]:
    """The prompts every model answered (matched by their messages), in the first's order."""
    keyed = [{_key(i.messages): i.gold for i in s.items} for s in sets]
    names = [s.model for s in sets]
    if len(set(names)) != len(names):
        raise usage_error(
            "duplicate_model",
            f"two answer sets are both named {names!r}.",
            hint="name databases after their models",
        )
    prompts = [i.messages for i in sets[0].items if all(_key(i.messages) in k for k in keyed)]
    if not prompts:
        raise TunelabError("no_shared_prompts", "the models answered no prompt in common.")
    return prompts, {n: [k[_key(p)] for p in prompts] for n, k in zip(names, keyed, strict=True)}


def _key(messages: list[dict]) -> tuple:
    return tuple((m["role"], m["content"].strip()) for m in messages if m["role"] != "system")


def _judge_chat(judge: str, max_tokens: int):
    candidate = open_candidate(judge)
    return lambda messages: candidate.chat(messages, max_tokens=max_tokens)
