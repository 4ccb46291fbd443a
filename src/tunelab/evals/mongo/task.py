"""`tunelab eval queries`: natural language → MongoDB, scored four ways.

- parse failures: answers that are not a query in mongosh syntax or JSON;
- exact match after normalisation (key order, quoting, whitespace do not count);
- structural match: collection, method, stages/operators, fields and values, as a score;
- execution match, when documents are given (`--documents DIR` with one JSON array per
  collection, `DIR/<collection>.json`, run on the embedded executor) or a live database
  (`--mongo-uri`, run on MongoDB itself, read-only): the gold and the predicted query run
  and their results are compared as multisets, in order only when the gold query sorts.
  Items whose gold query cannot run are left out of that rate and counted; an answer that
  is not a query, or cannot run, is not a match.

`constrain` makes a model decode under the query grammar (`grammar.py`), so that every
finished answer parses: "query" (any collection and field), "schema" (each item's own
`Collections:` context: its collections, and a find's fields among its collection's), or
"off". Only models answered on this machine can follow a grammar; others are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError, usage_error
from tunelab.evals.candidates import Interrupted, answer_all
from tunelab.evals.items import EvalData
from tunelab.evals.mongo.executor import UnsupportedQuery, execute, results_match
from tunelab.evals.mongo.grammar import CONSTRAIN_MODES, query_grammar
from tunelab.evals.mongo.parser import QueryParseError, exact_match, parse_query, structural_match
from tunelab.evals.mongo.schema import schema_of
from tunelab.evals.result import TaskResult, partial_of
from tunelab.providers.base import Grammar

MAX_TOKENS = 256


def answer_grammars(data: EvalData, constrain: str) -> Grammar | None:
    """The grammar the answers follow under `constrain`: none, the one query grammar, or
    each item's, limited to its schema context (an item without one: the query grammar)."""
    if constrain == "off":
        return None
    if constrain == "query":
        return query_grammar(None)
    if constrain == "schema":
        return [query_grammar(schema_of(item.messages)) for item in data.items]
    raise usage_error(
        "invalid_constrain", f"--constrain takes {', '.join(CONSTRAIN_MODES)}, not {constrain!r}"
    )


def load_documents(directory: Path | None) -> dict[str, list[dict]] | None:
    """`DIR/<collection>.json` files, each a JSON array of documents."""
    if directory is None:
        return None
    directory = Path(directory)
    if not directory.is_dir():
        raise usage_error("documents_not_found", f"{directory} is not a directory.", path=directory)
    collections = {}
    for path in sorted(directory.glob("*.json")):
        try:
            documents = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise TunelabError("invalid_documents", f"not JSON: {err}", path=path) from None
        if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
            raise TunelabError("invalid_documents", "expected a JSON array of objects.", path=path)
        collections[path.stem] = documents
    if not collections:
        raise usage_error(
            "documents_not_found", f"{directory} has no <collection>.json file.", path=directory
        )
    return collections


Executor = Callable[[object], object]  # a parsed query → its result


def embedded_executor(documents: dict[str, list[dict]]) -> Executor:
    return lambda query: execute(query, documents)


class GoldQueries:
    """The gold queries, parsed (and run) once for every model."""

    def __init__(self, data: EvalData, run: Executor | None) -> None:
        self.parsed, self.results, self.notes = [], [], []
        for item in data.items:
            try:
                self.parsed.append(parse_query(item.gold))
            except QueryParseError as err:
                self.parsed.append(None)
                self.notes.append(f"line {item.source_line}: gold query unparsable ({err})")
        self.results = [self._run(q, run) for q in self.parsed] if run else None

    @staticmethod
    def _run(query, run: Executor):
        if query is None:
            return None
        try:
            return ("ok", run(query))
        except UnsupportedQuery as err:
            return ("unsupported", str(err))


def score_answer(text: str, gold, gold_result, run: Executor | None) -> dict:
    """One answer scored against its gold query."""
    runnable = gold_result is not None and gold_result[0] == "ok"
    out = {
        "answer": text,
        "parsed": False,
        "exact": False,
        "structural": 0.0,
        "execution": False if runnable else None,
    }
    try:
        predicted = parse_query(text)
    except QueryParseError as err:
        out["parse_error"] = str(err)
        return out  # not a query: no match of any kind
    out["parsed"] = True
    if gold is None:
        return out
    out["exact"] = exact_match(gold, predicted)
    out["structural"] = structural_match(gold, predicted)["score"]
    if runnable:
        try:
            got = run(predicted)
        except UnsupportedQuery:
            out["execution"] = False  # the gold runs; an answer we cannot run is not a match
        except TunelabError:
            raise  # the database went away: not the answer's fault
        except Exception as err:  # a malformed predicted query (bad operator arguments)
            out["execution"], out["execution_error"] = False, f"{type(err).__name__}: {err}"
        else:
            out["execution"] = results_match(gold_result[1], got, ordered=gold.ordered)
    return out


@dataclass(frozen=True, kw_only=True)
class QueriesResult(TaskResult):
    """What `evaluate_queries` returns; `answers` holds one scored row per item."""

    models: dict[str, dict]  # per model: parse failures, exact, structural, execution match
    notes: list[str]  # about the gold queries (unparsable, not runnable): the first 50


def evaluate_queries(
    data: EvalData,
    models: list[str],
    *,
    executor: Executor | None = None,
    progress=None,
    cancel=None,
    max_tokens: int = MAX_TOKENS,
    constrain: str = "off",
) -> QueriesResult:
    """Metrics per model and every scored answer. `executor` runs a parsed query (embedded
    documents or a live database); None: no execution match. `max_tokens` bounds each
    answer; `constrain`: the grammar the answers follow (see the module docstring)."""
    grammar = answer_grammars(data, constrain)
    gold = GoldQueries(data, executor)
    results, outputs = {}, {}
    for name in models:
        try:
            answers, seconds = answer_all(
                name,
                data.conversations(),
                max_tokens=max_tokens,
                progress=progress,
                cancel=cancel,
                grammar=grammar,
            )
        except Interrupted as stop:  # keep the items answered before the cancel
            answers, seconds = stop.done, stop.seconds
        if not answers:
            break
        rows = []
        for index, (item, answer) in enumerate(zip(data.items, answers, strict=False)):
            gold_result = gold.results[index] if gold.results else None
            row = score_answer(answer.text, gold.parsed[index], gold_result, executor)
            rows.append(
                {
                    "question": item.question,
                    "gold": item.gold,
                    "error": answer.error,
                    "source_line": item.source_line,
                    **row,
                }
            )
        results[name] = summarise(rows, gold, executor is not None)
        results[name].update(
            seconds=round(seconds, 2),
            answers_per_second=round(len(rows) / seconds, 2) if seconds else None,
        )
        outputs[name] = rows
        if len(rows) < len(data.items):
            break
    return QueriesResult(
        models=results,
        notes=gold.notes[:50],
        answers=outputs,
        partial=partial_of(outputs, models, len(data.items)),
    )


def summarise(rows: list[dict], gold: GoldQueries, executed: bool) -> dict:
    n = len(rows)
    scored = [r for r, g in zip(rows, gold.parsed, strict=False) if g is not None]
    runnable = [r for r in rows if r["execution"] is not None]
    return {
        "n": n,
        "parse_failure_rate": sum(not r["parsed"] for r in rows) / n,
        "exact_match": sum(r["exact"] for r in scored) / len(scored) if scored else 0.0,
        "structural_match": sum(r["structural"] for r in scored) / len(scored) if scored else 0.0,
        "execution_match": (
            sum(r["execution"] for r in runnable) / len(runnable) if executed and runnable else None
        ),
        "n_gold_unparsable": n - len(scored),
        "n_executed": len(runnable) if executed else 0,
    }
