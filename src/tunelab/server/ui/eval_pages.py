"""Evaluations: start classification, query and judge runs (single and pairwise), follow
their progress, list the recorded runs, open each report, and compare two runs.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from tunelab.errors import TunelabError
from tunelab.evals import runs
from tunelab.evals.judge.task import JUDGE_MAX_TOKENS
from tunelab.evals.report import render_sections
from tunelab.evals.result import EvaluationResult
from tunelab.providers.registry import this_machine
from tunelab.registry import EvalRun, Store
from tunelab.server.model_access import check_offered
from tunelab.server.ui import background, eval_answers, web
from tunelab.server.ui.chat_pages import chat_models
from tunelab.server.ui.eval_tasks import KINDS, EvalRequest, EvalTasks

router = APIRouter()


@router.get("/evals")
async def evals_list(request: Request):
    found = await run_in_threadpool(runs.list_runs, 100)
    headlines = {r.id: runs.headline(r).text() for r in found}
    names = await run_in_threadpool(eval_answers.file_names)
    data_names = {r.id: eval_answers.data_name(r.data, names) for r in found}
    errors = {r.id: eval_answers.error_text(r, names) for r in found if r.status == "failed"}
    active = [t for t in EvalTasks.of(request).tasks.values() if t.status == "running"]
    return web.page(
        request,
        "evals.html",
        runs=found,
        headlines=headlines,
        data_names=data_names,
        errors=errors,
        active=active,
    )


@router.get("/evals/new")
async def eval_form(
    request: Request, model: str | None = None, baseline: str | None = None, file: str | None = None
):
    with Store() as store:
        files = store.list_files(limit=200, provider=this_machine())
    models = await run_in_threadpool(chat_models)
    return web.page(
        request,
        "eval_new.html",
        nav="evals",
        files=files,
        models=models,
        kinds=KINDS,
        model=model,
        baseline=baseline,
        file=file,
    )


@router.post("/evals")
async def eval_start(request: Request):
    form = await request.form()
    try:
        with Store() as store:
            data = store.get_file(web.form_text(form, "file", ""))
        models = [m for m in (web.form_text(form, "baseline"), web.form_text(form, "model")) if m]
        traits = [t.strip() for t in (web.form_text(form, "traits") or "").split(",") if t.strip()]
        judge = [web.form_text(form, "judge_model")] if web.form_text(form, "judge_model") else []
        await run_in_threadpool(check_offered, [*models, *judge], request.app.state.config)
        task = EvalTasks.of(request).start(
            EvalRequest(
                kind=web.form_text(form, "kind", "classify"),
                data_path=Path(data.path),
                models=models,
                limit=web.form_number(form, "limit", int),
                judge_model=web.form_text(form, "judge_model"),
                judge_max_tokens=_judge_max_tokens(form),
                traits=traits,
            )
        )
    except TunelabError as err:
        return web.error_page(request, err)
    return web.see_other(f"/evals/tasks/{task.id}")


def _judge_max_tokens(form) -> int:
    """The judge's longest reply: the form's number, else `tunelab eval judge`'s default."""
    given = web.form_number(form, "judge_max_tokens", int)
    if given is not None and given < 1:
        raise TunelabError("invalid_form", "judge max tokens: a whole number from 1.")
    return given or JUDGE_MAX_TOKENS


background.add_task_routes(
    router, "/evals/tasks", EvalTasks.of, "eval_task.html", nav="evals", made="/evals/{task.run_id}"
)


@router.get("/evals/compare")
async def compare(request: Request, a: str, b: str):
    try:
        found = [await run_in_threadpool(runs.get_run, run_id) for run_id in (a, b)]
    except TunelabError as err:
        return web.error_page(request, err, 404)
    rows = [
        {"run": run.id, "kind": run.kind, "data": run.data.get("path"), "model": name, **scores}
        for run in map(EvaluationResult.from_run, found)
        for name, scores in run.scores.items()
    ]
    metrics = [m for m in runs.METRICS if any(isinstance(r.get(m), (int, float)) for r in rows)]
    return web.page(
        request, "eval_compare.html", nav="evals", runs=found, rows=rows, metrics=metrics
    )


@router.get("/evals/{run_id}")
async def run_page(request: Request, run_id: str, answers: int = 0, wrong: bool = False):
    """The run's figures and report; its answers collapsed until asked for (`answers`: the
    page to open, from 1; `wrong`: only the items some model got wrong)."""
    try:
        run = await run_in_threadpool(runs.get_run, run_id)
    except TunelabError as err:
        return web.error_page(request, err, 404)
    result = await run_in_threadpool(_result, run)
    models = EvaluationResult.from_run(run).scores
    metrics = [
        m for m in runs.METRICS if any(isinstance(v.get(m), (int, float)) for v in models.values())
    ]
    others = [r for r in await run_in_threadpool(runs.list_runs, 50) if r.id != run_id]
    names = await run_in_threadpool(eval_answers.file_names)
    return web.page(
        request,
        "eval_run.html",
        nav="evals",
        run=run,
        models=models,
        metrics=metrics,
        others=others,
        data_name=eval_answers.data_name(run.data, names),
        error=eval_answers.error_text(run, names),
        report=web.trusted_html(render_sections(result, answers=False)) if result else None,
        answers=eval_answers.answer_page(result, answers, wrong_only=wrong) if result else None,
        answers_open=answers > 0 or wrong,
    )


def _result(run: EvalRun) -> dict | None:
    """The run's result.json (figures and every answer), when it was written."""
    if not run.json_path or not Path(run.json_path).exists():
        return None
    return orjson.loads(Path(run.json_path).read_bytes())


@router.get("/evals/{run_id}/report.html")
async def run_report(run_id: str):
    run = await run_in_threadpool(runs.get_run, run_id)
    if not run.html_path or not Path(run.html_path).exists():
        raise TunelabError("not_found", f"run {run_id} has no report.")
    return HTMLResponse(
        Path(run.html_path).read_text(), headers={"Content-Security-Policy": web.REPORT_CSP}
    )
