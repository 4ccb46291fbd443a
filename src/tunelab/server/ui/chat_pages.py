"""Chat: any model tunelab can resolve (base models, every `ft:` model, chat-only providers),
one or two side by side on the same prompt, answers streamed as server-sent events.

Asking is a POST (it returns the panels); each panel then opens a GET stream for its answer,
named by a one-time token, so no GET starts anything a page did not ask for first. Answers
come from the server's inference service, the same one `/v1/chat/completions` uses: local
models stay loaded and batched, hosted ones go to their provider.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tunelab.errors import TunelabError
from tunelab.html_blocks import escape
from tunelab.providers.models import list_models
from tunelab.server.inference import ChatOptions
from tunelab.server.model_access import check_offered
from tunelab.server.ui.web import form_number, form_text, page, sse, templates

log = logging.getLogger("tunelab.server")

router = APIRouter()
MAX_PENDING_ASKS = 64  # asks whose stream was never opened are forgotten beyond this


class Asks:
    """Questions asked and not yet streamed, by one-time token."""

    def __init__(self) -> None:
        self._asks: OrderedDict[str, dict] = OrderedDict()

    def add(self, ask: dict) -> str:
        token = secrets.token_urlsafe(16)
        self._asks[token] = ask
        while len(self._asks) > MAX_PENDING_ASKS:
            self._asks.popitem(last=False)
        return token

    def take(self, token: str) -> dict | None:
        return self._asks.pop(token, None)


def _asks(request: Request) -> Asks:
    state = request.app.state
    if not hasattr(state, "chat_asks"):
        state.chat_asks = Asks()
    return state.chat_asks


def chat_models() -> list[dict]:
    """Fine-tuned models first, then every provider's base models."""
    return [{"id": m.id, "provider": m.provider, "kind": m.kind} for m in list_models()]


@router.get("/chat")
async def chat_page(request: Request, model: str | None = None, compare: str | None = None):
    models = await run_in_threadpool(chat_models)
    return page(request, "chat.html", models=models, model=model, compare=compare)


@router.post("/chat/ask")
async def ask(request: Request):
    form = await request.form()
    try:
        names = [n for n in (form_text(form, "model"), form_text(form, "compare")) if n]
        prompt = form_text(form, "prompt")
        if not names or not prompt:
            raise TunelabError("invalid_form", "Choose a model and write a message.")
        options = ChatOptions(
            max_tokens=form_number(form, "max_tokens", int) or 256,
            temperature=form_number(form, "temperature") or 0.0,
        )
        await run_in_threadpool(check_offered, names, request.app.state.config)
    except TunelabError as err:
        return page(request, "_error.html", error=err, status_code=200)
    system = form.get("system") or ""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages.append({"role": "user", "content": prompt})
    panels = [
        {
            "model": name,
            "token": _asks(request).add({"model": name, "messages": messages, "options": options}),
        }
        for name in names
    ]
    return page(request, "_chat_turn.html", prompt=prompt, system=system, panels=panels)


@router.get("/chat/stream/{token}")
async def stream(request: Request, token: str):
    asked = _asks(request).take(token)

    async def events():
        if asked is None:
            yield sse(
                "error", "<p class='error'>This answer was already streamed or has expired.</p>"
            )
            yield sse("done", "")
            return
        service = request.app.state.inference
        answer = None
        try:
            answer = await service.stream(asked["model"], asked["messages"], asked["options"])
            async for _, item in answer:
                if isinstance(item, str):
                    yield sse("delta", escape(item))
                else:
                    note = " (stopped at max tokens)" if item.finish_reason == "length" else ""
                    yield sse("end", f"{item.completion_tokens} tokens{note}")
        except TunelabError as err:
            html = templates.get_template("_error.html").render(error=err)
            yield sse("error", html)
        except Exception:  # a bug: the page says so instead of stopping mid-answer
            log.exception("a studio chat answer failed")
            error = TunelabError(
                "server_error",
                "The server had an error while answering.",
                hint="The server's log has the details.",
            )
            yield sse("error", templates.get_template("_error.html").render(error=error))
        finally:
            if answer is not None:
                answer.cancel()
        yield sse("done", "")

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
