"""The request of `/v1/chat/completions` as pydantic models: OpenAI's chat completion request
and the objects it holds (messages, content parts, tool calls, tools, response formats, stream
options), each refusing by name what tunelab would not honour (`chat_fields`), and turning
what it does honour into the `ChatOptions` the inference service answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from tunelab.data.prompts import ClassificationPrompt
from tunelab.server.chat_fields import (
    ALLOWED_TOOLS,
    CUSTOM_TOOLS,
    DECLARED_ONLY,
    FUNCTION_MESSAGES,
    MESSAGE,
    PART_TYPES_BY_ROLE,
    REQUEST,
    ROLES_BY_MESSAGE_FIELD,
    STREAM_OPTIONS,
    TEXT_PART,
    UNREADABLE_PARTS,
    ExtraFields,
    check_extra_fields,
    path_to,
    refuse,
)
from tunelab.server.errors import ApiError
from tunelab.server.inference import ChatOptions

INT32_MAX = 2**31 - 1
StopText = Annotated[str, StringConstraints(min_length=1)]
LabelText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RequestObject(BaseModel):
    """An object of OpenAI's request. The fields its model does not declare are kept, to be
    accepted or refused by name (`chat_fields`) when the request is checked, here or nested."""

    model_config = ConfigDict(extra="allow")
    extra_fields: ClassVar[ExtraFields] = DECLARED_ONLY

    def check_fields(self, at: str = "") -> None:
        """Refuse a field tunelab would not honour, in this object (at path `at`) or in the
        objects it holds."""
        check_extra_fields(self.model_extra or {}, self.extra_fields_here(), at)
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, RequestObject):
                value.check_fields(path_to(at, name))
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, RequestObject):
                        item.check_fields(f"{path_to(at, name)}[{index}]")

    def extra_fields_here(self) -> ExtraFields:
        return self.extra_fields


class TypedObject(RequestObject):
    """An object whose `type` names the field that holds its data, as OpenAI writes them
    (`{"type": "function", "function": {...}}`). The types tunelab reads (`read_types`) are
    fields the model declares; OpenAI's others are refused by their name (`tools[0].custom`)."""

    type: str
    read_types: ClassVar[tuple[str, ...]] = ("function",)
    unread_types: ClassVar[Mapping[str, str]] = {}  # OpenAI's other types → why refused

    def check_fields(self, at: str = "") -> None:
        if self.type in self.unread_types:
            refuse(path_to(at, self.type), self.unread_types[self.type])
        if self.type not in self.read_types:
            refuse(path_to(at, "type"), f"OpenAI defines no `{self.type}` type here")
        for name in self.read_types:
            if name != self.type and getattr(self, name) is not None:
                refuse(path_to(at, name), f"a {self.type} object has no `{name}`")
        if getattr(self, self.type) is None:
            param = path_to(at, self.type)
            raise ApiError(
                400,
                f"{param}: a {self.type} object needs it.",
                code="missing_required_parameter",
                param=param,
            )
        super().check_fields(at)


class ContentPart(TypedObject):
    """A part of a message's content: text, or an assistant's earlier refusal. The parts
    tunelab's models cannot read (images, audio, files) are refused by name."""

    read_types: ClassVar[tuple[str, ...]] = ("text", "refusal")
    unread_types: ClassVar[Mapping[str, str]] = UNREADABLE_PARTS
    text: str | None = None
    refusal: str | None = None

    def extra_fields_here(self) -> ExtraFields:
        return TEXT_PART if self.type == "text" else DECLARED_ONLY

    def said(self) -> str:
        return self.text if self.type == "text" else self.refusal or ""


class FunctionCall(RequestObject):
    name: str
    arguments: str = "{}"


class MessageToolCall(TypedObject):
    unread_types: ClassVar[Mapping[str, str]] = {"custom": CUSTOM_TOOLS}
    id: str = ""
    type: str = "function"
    function: FunctionCall | None = None

    def for_template(self) -> dict:
        function = {"name": self.function.name, "arguments": self.function.arguments}
        return {"id": self.id, "type": self.type, "function": function}


class Message(RequestObject):
    extra_fields: ClassVar[ExtraFields] = MESSAGE
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # the participant's, for templates that render it
    refusal: str | None = None  # an assistant's earlier refusal: what it said
    tool_calls: list[MessageToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # which call a tool message answers

    def check_fields(self, at: str = "") -> None:
        """Besides the fields themselves: each field and content part where OpenAI defines
        it for the message's role (no `tool_calls` in a user message)."""
        if self.role == "function":
            refuse(path_to(at, "role"), FUNCTION_MESSAGES)
        super().check_fields(at)
        for name, roles in ROLES_BY_MESSAGE_FIELD.items():
            if getattr(self, name) is not None and self.role not in roles:
                refuse(path_to(at, name), f"{self.role} messages carry no `{name}`")
        for index, part in enumerate(self.content if isinstance(self.content, list) else ()):
            if part.type not in PART_TYPES_BY_ROLE[self.role]:
                param = f"{path_to(at, 'content')}[{index}].type"
                refuse(param, f"{self.role} messages carry no {part.type} part")

    def for_template(self) -> dict:
        content = self.content or ""
        if isinstance(content, list):
            content = "".join(part.said() for part in content)
        content += self.refusal or ""
        # Chat templates know "system"; OpenAI's newer name for it is "developer".
        role = "system" if self.role == "developer" else self.role
        message: dict = {"role": role, "content": content}
        if self.name is not None:  # as training hands it to the template (`tunelab format`)
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.for_template() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class JsonSchemaFormat(RequestObject):
    model_config = ConfigDict(populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict = Field(alias="schema")
    strict: bool | None = None  # tunelab's answers always follow the schema


class ResponseFormat(RequestObject):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def check_fields(self, at: str = "") -> None:
        super().check_fields(at)
        if self.type != "json_schema" and self.json_schema is not None:
            refuse(path_to(at, "json_schema"), f"a {self.type} format has no schema")

    def for_options(self) -> dict:
        if self.type != "json_schema":
            return {"type": self.type}
        if self.json_schema is None:
            raise ApiError(
                400,
                "response_format.json_schema: a json_schema format needs it.",
                code="missing_required_parameter",
                param="response_format.json_schema",
            )
        # Whole, as the client wrote it: a hosted provider passes it on (OpenAI needs `name`).
        schema = self.json_schema.model_dump(by_alias=True, exclude_none=True)
        return {"type": "json_schema", "json_schema": schema}


class FunctionTool(RequestObject):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class Tool(TypedObject):
    unread_types: ClassVar[Mapping[str, str]] = {"custom": CUSTOM_TOOLS}
    function: FunctionTool | None = None


class NamedFunction(RequestObject):
    name: str


class NamedToolChoice(TypedObject):
    unread_types: ClassVar[Mapping[str, str]] = {
        "custom": CUSTOM_TOOLS,
        "allowed_tools": ALLOWED_TOOLS,
    }
    function: NamedFunction | None = None


class StreamOptions(RequestObject):
    extra_fields: ClassVar[ExtraFields] = STREAM_OPTIONS
    include_usage: bool = False


class ChatCompletionRequest(RequestObject):
    """OpenAI's request. Fields it does not declare, here or in the objects it holds, are
    refused by name unless `chat_fields` accepts them (`user`, `metadata`, ...: ignored,
    each for a reason).

    Unlike OpenAI, a local model answers greedily when no temperature is given (as `tunelab
    chat` does); a hosted model gets its provider's default.

    tunelab's extension, `labels` (with the openai SDK: `extra_body={"labels": [...]}`): a
    classification model answers with the most likely label, by the log-likelihood of each
    label's answer as `tunelab format` trains it (`<category>LABEL</category>`; `label_tag`
    changes the tag, `bare_label` drops it), instead of generating: the answer is always one
    of the labels. Each choice then carries `label_scores`. Local models only.
    """

    extra_fields: ClassVar[ExtraFields] = REQUEST
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    stop: StopText | list[StopText] | None = Field(None, max_length=4)
    n: int | None = Field(None, ge=1, le=128)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # OpenAI's: a 64-bit integer
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, float] | None = Field(None, max_length=1024)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    labels: list[LabelText] | None = Field(None, min_length=1, max_length=500)
    label_tag: str | None = Field(None, min_length=1, max_length=50, pattern=r"^[A-Za-z_][\w.-]*$")
    bare_label: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids, as strings of digits (got {token!r})")
            if not -100 <= value <= 100:
                raise ValueError(f"biases are between -100 and 100 (got {value})")
        return bias

    def check_fields(self, at: str = "") -> None:
        """Refuse what the schema lets through but tunelab cannot honour."""
        super().check_fields(at)
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(
                400,
                "top_logprobs needs logprobs set to true.",
                code="invalid_value",
                param="top_logprobs",
            )
        self._check_tools()

    def _check_tools(self) -> None:
        names = [tool.function.name for tool in self.tools or ()]
        choice = self.tool_choice
        if choice not in (None, "auto", "none") and not names:
            raise ApiError(
                400, "tool_choice needs `tools`.", code="invalid_value", param="tool_choice"
            )
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ApiError(
                400,
                f"tool_choice names `{choice.function.name}`, which is not one of the tools.",
                code="invalid_value",
                param="tool_choice",
            )
        if names and self.response_format is not None and self.response_format.type != "text":
            raise ApiError(
                400,
                "Use either `tools` or a JSON `response_format`.",
                code="invalid_value",
                param="response_format",
            )

    def label_answers(self) -> list[str]:
        """Each label's answer, as the model was trained to give it."""
        tag = {"output_tag": self.label_tag} if self.label_tag else {}
        prompt = ClassificationPrompt(**tag, bare_label=self.bare_label)
        return [prompt.answer(label) for label in self.labels or ()]

    def options(self) -> ChatOptions:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return ChatOptions(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
            n=self.n or 1,
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            logit_bias=tuple((int(t), b) for t, b in (self.logit_bias or {}).items()),
            response_format=self.response_format.for_options() if self.response_format else None,
            tools=tuple(tool.model_dump(exclude_none=True) for tool in self.tools or ()),
            tool_choice=_dumped(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
        )


def _dumped(choice: str | BaseModel | None) -> str | dict | None:
    return choice.model_dump() if isinstance(choice, BaseModel) else choice
