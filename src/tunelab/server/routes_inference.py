"""`/v1/chat/completions` and `/v1/models`: OpenAI's chat and model routes.

Chat answers come from the server's `InferenceService` (batched local generation, or the
provider that answers the model); `stream: true` answers as server-sent events of
`chat.completion.chunk` objects ending with `data: [DONE]`, as the `openai` SDK reads them.
Models are the local base models, every fine-tuned model the registry knows, and the aliases
(`tunelab models alias`: an old model's name answered by its replacement), listed with
`tunelab.alias_of`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tunelab.errors import TunelabError
from tunelab.providers.answer_stream import AnswerStream
from tunelab.providers.models import ALIAS, delete_model, list_models
from tunelab.providers.registry import runs_here
from tunelab.providers.wire import model_object
from tunelab.registry import Model
from tunelab.server.chat_request import ChatCompletionRequest
from tunelab.server.errors import STATUS_BY_CODE, ApiError, envelope
from tunelab.server.inference import ChatCompletion
from tunelab.server.model_access import check_served
from tunelab.types import TokenLogprob

router = APIRouter()
log = logging.getLogger(__name__)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    service = request.app.state.inference
    body.check_fields()
    await run_in_threadpool(check_served, body.model, request.app.state.config)
    messages = [message.for_template() for message in body.messages]
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.labels is not None:
        _check_label_request(body)
        answer = await service.classify(body.model, messages, body.labels, body.label_answers())
        return _completion(answer, completion_id, created)
    if body.stream:
        answer = await service.stream(body.model, messages, body.options())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(answer, body, completion_id, created, include_usage)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    answer = await service.complete(body.model, messages, body.options())
    return _completion(answer, completion_id, created)


def _check_label_request(body: ChatCompletionRequest) -> None:
    """Label scoring gives one whole answer: streaming or several choices make no sense."""
    if len(set(body.labels)) != len(body.labels):
        raise ApiError(
            400, "labels must be different from each other.", code="invalid_value", param="labels"
        )
    if body.stream or (body.n or 1) > 1:
        raise ApiError(
            400,
            "labels answer with one scored label: use them without stream and with n=1.",
            code="invalid_value",
            param="labels",
        )
    if body.logprobs or body.logit_bias:
        raise ApiError(
            400,
            "labels are scored, not generated: use them without logprobs and logit_bias.",
            code="invalid_value",
            param="labels",
        )


def _completion(answer: ChatCompletion, completion_id: str, created: int) -> dict:
    choices = [
        {
            "index": index,
            "message": _message(choice),
            "finish_reason": choice.finish_reason,
            "logprobs": _logprobs(choice.logprobs),
        }
        for index, choice in enumerate(answer.choices)
    ]
    if answer.label_scores is not None:
        scores = [
            {"label": label, "logprob": score.logprob, "tokens": score.n_tokens}
            for label, score in answer.label_scores
        ]
        choices[0]["label_scores"] = scores
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "choices": choices,
        "usage": _usage(answer.usage.prompt_tokens, answer.usage.completion_tokens),
        "system_fingerprint": None,
    }


def _message(choice) -> dict:
    message = {"role": "assistant", "content": choice.text, "refusal": None}
    if choice.tool_calls:
        message["content"] = choice.text or None
        message["tool_calls"] = _tool_calls(choice.tool_calls)
    return message


def _tool_calls(calls, *, indexed: bool = False) -> list[dict]:
    """An answer's tool calls as OpenAI writes them (streamed deltas carry an index)."""
    return [
        {
            **({"index": index} if indexed else {}),
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(calls)
    ]


def _logprobs(tokens: tuple[TokenLogprob, ...] | None) -> dict | None:
    """A choice's `logprobs` as OpenAI writes them (None when not asked for)."""
    if tokens is None:
        return None

    def entry(token) -> dict:
        data = list(token.bytes) if token.bytes is not None else None
        return {"token": token.token, "bytes": data, "logprob": token.logprob}

    content = [
        {**entry(token), "top_logprobs": [entry(top) for top in token.top_logprobs]}
        for token in tokens
    ]
    return {"content": content, "refusal": None}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _events(
    answer: AnswerStream,
    body: ChatCompletionRequest,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The answer as SSE chunks: a role delta per choice, content deltas, a finish per choice,
    the usage when asked for, then [DONE]."""

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": choices,
            "system_fingerprint": None,
        }
        if include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def choice(index: int, delta: dict, finish_reason: str | None = None, logprobs=None) -> dict:
        return {
            "index": index,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": _logprobs(logprobs),
        }

    prompt_tokens = completion_tokens = 0
    try:
        for index in range(body.n or 1):
            yield chunk([choice(index, {"role": "assistant", "content": ""})])
        async for index, item in answer:
            if isinstance(item, str):  # with logprobs: a TextDelta carrying its tokens'
                logprobs = getattr(item, "logprobs", None) if body.logprobs else None
                yield chunk([choice(index, {"content": str(item)}, None, logprobs)])
                continue
            prompt_tokens = item.prompt_tokens
            completion_tokens += item.completion_tokens
            if item.tool_calls:
                calls = _tool_calls(item.tool_calls, indexed=True)
                yield chunk([choice(index, {"tool_calls": calls})])
            yield chunk([choice(index, {}, item.finish_reason)])
        if include_usage:
            yield chunk([], _usage(prompt_tokens, completion_tokens))
        yield "data: [DONE]\n\n"
    except TunelabError as err:  # the status is already sent: the SDK raises on an error event
        status = STATUS_BY_CODE.get(err.code, 400)
        yield f"data: {json.dumps(envelope(status, err.message, err.code, None))}\n\n"
    except Exception:  # a bug: the client gets the envelope, the traceback goes to the log
        log.exception("a streamed answer failed")
        message = "The server had an error while processing your request."
        yield f"data: {json.dumps(envelope(500, message, 'server_error', None))}\n\n"
    finally:
        answer.cancel()  # the client may have gone: stop generating for it


# -- models ---------------------------------------------------------------------------------


@router.get("/models")
def models_list() -> dict:
    return {"object": "list", "data": [model_object(model) for model in _served_models()]}


@router.get("/models/{model_id:path}")
def models_retrieve(model_id: str) -> dict:
    return model_object(_find_model(model_id))


@router.delete("/models/{model_id:path}")
async def models_delete(model_id: str, request: Request) -> dict:
    """Forget a fine-tuned model (a local one's files stay where its job wrote them)."""
    model = await run_in_threadpool(_find_model, model_id)
    if model.kind == ALIAS:
        raise ApiError(
            403,
            f"{model.id} is an alias; `tunelab models alias --remove {model.id}` forgets it.",
            code="model_not_deletable",
            param="model",
        )
    if model.kind == "base":
        raise ApiError(
            403,
            f"{model.id} is a base model; only fine-tuned models can be deleted.",
            code="model_not_deletable",
            param="model",
        )
    removed = await run_in_threadpool(delete_model, model.id)
    if removed.path:
        request.app.state.inference.unload(removed.path)
    return {"id": model.id, "object": "model", "deleted": True}


def _served_models() -> list[Model]:
    """Aliases, fine-tuned models on any provider, and the base models this machine can run;
    a registry model an alias has taken the name of is served as the alias."""
    served, names = [], set()
    for model in list_models(with_aliases=True):
        if (model.kind != "base" or runs_here(model.provider)) and model.id not in names:
            served.append(model)
            names.add(model.id)
    return served


def _find_model(model_id: str) -> Model:
    wanted = model_id.lower()
    for model in _served_models():
        names = [model.id, *model.aliases]
        if model.id == model_id or (model.kind == "base" and wanted in (n.lower() for n in names)):
            return model
    raise ApiError(
        404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model"
    )
