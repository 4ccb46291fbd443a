"""Evaluation runs in the registry: what was evaluated, on what data, the metrics and every
answer. Mixed into `Store`, whose database it queries."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from tunelab.registry.database import Database
from tunelab.registry.records import EvalOutput, EvalRun, not_found
from tunelab.registry.schema import eval_outputs, eval_runs
from tunelab.registry.writes import EvalRunChanges, check_names, new_id

if TYPE_CHECKING:
    from typing_extensions import Unpack


class EvalRuns:
    """The store's evaluation runs."""

    _db: Database

    def create_eval_run(
        self, kind: str, *, models: list[str], data: dict[str, Any], options: dict[str, Any]
    ) -> EvalRun:
        run_id = new_id("evalrun")
        row = {
            "id": run_id,
            "kind": kind,
            "status": "running",
            "created_at": int(time.time()),
            "models": models,
            "data": data,
            "options": options,
        }
        with self._db.write() as db:
            db.execute(insert(eval_runs).values(row))
        return self.get_eval_run(run_id)

    def update_eval_run(self, run_id: str, **fields: Unpack[EvalRunChanges]) -> EvalRun:
        check_names("update_eval_run", fields, EvalRunChanges)
        with self._db.write() as db:
            db.execute(update(eval_runs).where(eval_runs.c.id == run_id).values(**fields))
        return self.get_eval_run(run_id)

    def get_eval_run(self, run_id: str) -> EvalRun:
        row = self._db.execute(select(eval_runs).where(eval_runs.c.id == run_id)).mappings().first()
        if row is None:
            raise not_found("eval_run", run_id)
        return EvalRun.from_row(row)

    def list_eval_runs(self, limit: int = 50, kind: str | None = None) -> list[EvalRun]:
        """Newest first."""
        query = select(eval_runs).order_by(eval_runs.c.created_at.desc(), eval_runs.c.rowid.desc())
        if kind:
            query = query.where(eval_runs.c.kind == kind)
        return [EvalRun.from_row(row) for row in self._db.execute(query.limit(limit)).mappings()]

    def add_eval_outputs(self, run_id: str, model: str, outputs: list[dict[str, Any]]) -> None:
        """Record a model's scored answers; an item recorded again is replaced."""
        if not outputs:
            return
        rows = [
            {"run_id": run_id, "model": model, "item": index, "output": output}
            for index, output in enumerate(outputs)
        ]
        with self._db.write() as db:
            db.execute(self._db.upsert(eval_outputs, key=("run_id", "model", "item")), rows)

    def list_eval_outputs(self, run_id: str, model: str | None = None) -> list[EvalOutput]:
        columns = (eval_outputs.c.model, eval_outputs.c.item, eval_outputs.c.output)
        query = select(*columns).where(eval_outputs.c.run_id == run_id)
        if model:
            query = query.where(eval_outputs.c.model == model)
        rows = self._db.execute(query.order_by(eval_outputs.c.model, eval_outputs.c.item))
        return [EvalOutput.from_row(row) for row in rows.mappings()]
