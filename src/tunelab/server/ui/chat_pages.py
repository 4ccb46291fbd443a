"""Chat: a conversation with any model tunelab can resolve (base models, every `ft:` model,
chat-only providers), one or two side by side, answers streamed as server-sent events.

The conversation lives in the page: each turn sends the turns before it (`history`), and each
model hears its own earlier answers. Saving a conversation appends it, as one chat example, to
a chat dataset of the studio's (`workspace.append_chat_example`), which the Data page formats
into training data.

Asking is a POST (it returns the panels); each panel then opens a GET stream for its answer,
named by a one-time token, so no GET starts anything a page did not ask for first. Answers
come from the server's inference service, the same one `/v1/chat/completions` uses: local
models stay loaded and batched, hosted ones go to their provider.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tunelab.data.validate import check_record
from tunelab.errors import TunelabError
from tunelab.html_blocks import escape
from tunelab.providers.models import list_models
from tunelab.providers.registry import provider_class
from tunelab.server.errors import ApiError
from tunelab.server.inference import ChatOptions
from tunelab.server.model_access import check_offered
from tunelab.server.ui import workspace
from tunelab.server.ui.chat_structured import JSON_MODES, TOOL_CHOICES, answer_fields, shown_calls
from tunelab.server.ui.web import form_number, form_text, page, sse, templates
from tunelab.settings import get_secret

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
    """Fine-tuned models first, then every provider's base models, each with the key it
    still needs (`missing_key`: the variable to set; None when it can answer)."""
    return [
        {
            "id": m.id,
            "provider": m.provider,
            "kind": m.kind,
            "missing_key": _missing_key(m.provider),
        }
        for m in list_models()
    ]


def _missing_key(provider: str) -> str | None:
    """The environment variable `provider` needs and does not have, if any."""
    try:
        variable = provider_class(provider).key_variable
    except TunelabError:  # an alias whose target is gone: nothing to set
        return None
    if not variable:
        return None
    try:
        get_secret(variable, "answer in the studio")
    except TunelabError:
        return variable
    return None


@router.get("/chat")
async def chat_page(request: Request, model: str | None = None, compare: str | None = None):
    models = await run_in_threadpool(chat_models)
    return page(
        request,
        "chat.html",
        models=models,
        model=model,
        compare=compare,
        json_modes=JSON_MODES,
        tool_choices=TOOL_CHOICES,
    )


@router.post("/chat/ask")
async def ask(request: Request):
    form = await request.form()
    try:
        names = [n for n in (form_text(form, "model"), form_text(form, "compare")) if n]
        prompt = form_text(form, "prompt")
        if not names or not prompt:
            raise TunelabError("invalid_form", "Choose a model and write a message.")
        history = _history(form)
        options = ChatOptions(
            max_tokens=form_number(form, "max_tokens", int) or 256,
            temperature=form_number(form, "temperature") or 0.0,
            **answer_fields(form),
        )
        await run_in_threadpool(check_offered, names, request.app.state.config)
    except TunelabError as err:
        return page(request, "_error.html", error=err, status_code=200)
    system = form.get("system") or ""
    panels = [
        {
            "model": name,
            "token": _asks(request).add(
                {
                    "model": name,
                    "messages": conversation(name, system, history, prompt),
                    "options": options,
                }
            ),
        }
        for name in names
    ]
    response = page(request, "_chat_turn.html", prompt=prompt, system=system, panels=panels)
    response.headers["HX-Trigger"] = "chat-asked"  # the page then empties the message box
    return response


def _history(form) -> list[dict]:
    """The turns before this one, as the page sent them: [{"prompt", "answers": {model: text}}]."""
    try:
        turns = orjson.loads(form.get("history") or "[]")
    except orjson.JSONDecodeError as err:
        raise TunelabError("invalid_form", "The conversation sent is not JSON.") from err
    if not isinstance(turns, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("prompt"), str)
        and isinstance(t.get("answers"), dict)
        for t in turns
    ):
        raise TunelabError("invalid_form", "The conversation sent has an unreadable turn.")
    return turns


def conversation(model: str, system: str, history: list[dict], prompt: str) -> list[dict]:
    """What `model` is asked: the system prompt, the earlier turns it answered (a turn it has
    no answer to, e.g. one asked of another model, is left out) and the new message."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for turn in history:
        answer = turn["answers"].get(model)
        if isinstance(answer, str) and answer.strip():
            messages.append({"role": "user", "content": turn["prompt"]})
            messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": prompt})
    return messages


@router.post("/chat/save")
async def save(request: Request):
    """Append the page's conversation to a chat dataset of the studio's, as one example."""
    form = await request.form()
    try:
        messages = _saved_messages(form)
        dataset = form_text(form, "dataset") or "conversations"
        source = await run_in_threadpool(workspace.append_chat_example, dataset, messages)
    except TunelabError as err:
        return page(request, "_error.html", error=err, status_code=200)
    return page(request, "_chat_saved.html", source=source, n_messages=len(messages))


def _saved_messages(form) -> list[dict]:
    """The conversation to save, checked as `tunelab validate` checks a line of a file."""
    try:
        messages = orjson.loads(form.get("conversation") or "[]")
    except orjson.JSONDecodeError as err:
        raise TunelabError("invalid_form", "The conversation sent is not JSON.") from err
    problems = check_record({"messages": messages})
    if problems:
        said = "; ".join(message for _, message in problems[:3])
        raise TunelabError(
            "invalid_conversation",
            f"This conversation cannot be a training example: {said}.",
            hint="Save once a model has answered.",
        )
    return messages


def _calls_html(calls) -> str:
    return templates.get_template("_chat_tool_calls.html").render(calls=shown_calls(calls))


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
                    if item.tool_calls:
                        yield sse("tools", _calls_html(item.tool_calls))
                    note = " (stopped at max tokens)" if item.finish_reason == "length" else ""
                    yield sse("end", f"{item.completion_tokens} tokens{note}")
        except (TunelabError, ApiError) as err:  # ApiError: a field the provider cannot honour
            if isinstance(err, ApiError):
                err = TunelabError(err.code or "invalid_request", err.message)
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
