"""One way to turn a model name into the backend that answers it.

`tunelab chat`, the server, evaluations, the judge and `generate-conversations` all call
`resolve_chat_model`. A name is, in this order:
- `MODEL@URL`: MODEL on the OpenAI-compatible server at URL;
- an alias (`tunelab models alias OLD NEW`): the model it names, resolved as below (an
  alias is followed once: its target is never itself taken for an alias);
- a model the registry knows (an `ft:` name from a job, on any provider);
- a name a provider owns: a local directory or the bundled model's alias, a hosted catalog
  name or alias, an `ft:` name made from one of its catalog models (a model from the user's
  own OpenAI account, `ft:gpt-4o-mini-2024-07-18:org:name:id`, needs no registry record);
- `PROVIDER/MODEL`: MODEL on that provider (`openai/gpt-4o`, `together/Qwen/Qwen3-8B`,
  `anthropic/claude-sonnet-4-20250514`), or on a named endpoint (`vllm/MODEL`);
- anything else is the default provider's (this machine: a Hugging Face Hub id).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.errors import usage_error
from tunelab.providers import registry
from tunelab.providers.base import FIELD_OF_SETTING, ChatStream
from tunelab.providers.endpoints import find_endpoint
from tunelab.providers.local.artifacts import model_dir
from tunelab.providers.provider import SCORING, Provider
from tunelab.settings import get_settings
from tunelab.types import Answer

URL_MARKERS = ("@http://", "@https://")
COMPATIBLE_PROVIDER = "openai-compatible"  # answers `MODEL@URL` and named endpoints


@dataclass
class ChatModel:
    """A model name resolved: which provider answers it, under which id, at which endpoint."""

    name: str  # as the caller wrote it
    provider: str
    model: str  # the provider's id for it
    base_url: str | None = None
    key_variable: str | None = None  # the key the user named for this endpoint
    _client: Provider | None = field(default=None, repr=False)

    def client(self) -> Provider:
        """The provider instance (built once: it holds an SDK client or a loaded model)."""
        if self._client is None:
            self._client = registry.get_provider(
                self.provider, base_url=self.base_url, key_variable=self.key_variable
            )
        return self._client

    @property
    def gives_logprobs(self) -> bool:
        """Whether its provider scores fixed answers (`score`): log-likelihoods."""
        return self.client().supports(SCORING)

    @property
    def weights_here(self) -> bool:
        """Whether it answers from weights on this machine (loading them takes a while)."""
        return self.client().runs_here

    def describe(self) -> str:
        return self.client().describe(self.model)

    def chat(self, messages: list[dict], **options) -> Answer:
        """One whole answer; `options` are `max_tokens`, `temperature`, `top_p`, `stop`, `seed`
        (and the answer fields, `grammar` and `tools` among them, where the provider
        declares them)."""
        self._check_answer_fields(options)
        began = time.perf_counter()
        answer = self.client().chat(self.model, messages, **options)
        if not answer.latency:
            answer = replace(answer, latency=time.perf_counter() - began)
        return answer

    def answer_batch(self, conversations: list[list[dict]], **options) -> list[Answer]:
        """One answer per conversation, in order (`Provider.answer_batch`)."""
        self._check_answer_fields(options)
        return self.client().answer_batch(self.model, conversations, **options)

    def score(self, conversations: list[list[dict]], answers: list[str], **options):
        """Each answer's log-likelihood after each conversation (`Provider.score`)."""
        return self.client().score(self.model, conversations, answers, **options)

    def stream(self, messages: list[dict], **options) -> ChatStream:
        """The answer as it arrives (one delta for providers that do not stream)."""
        self._check_answer_fields(options)
        return self.client().stream_chat(self.model, messages, **options)

    def _check_answer_fields(self, options: dict) -> None:
        """Refuse, by name, an answer field (a grammar, tools) the provider cannot honour:
        dropping it would let an answer break the form it was asked for, and a `chat` that
        does not take it would fail with a TypeError instead of saying why."""
        declared = self.client().answer_fields
        for setting, value in options.items():
            field_name = FIELD_OF_SETTING.get(setting)
            if not value or field_name is None or field_name in declared:
                continue
            if field_name == "grammar":
                raise usage_error(
                    "unsupported_parameter",
                    f"{self.name} is answered by the {self.provider} provider, which cannot "
                    "follow a grammar (constrained decoding).",
                    hint="constrain only models answered on this machine (`--constrain off` "
                    "for the others)",
                )
            raise usage_error(
                "unsupported_parameter",
                f"{self.name} is answered by the {self.provider} provider, which does not "
                f"support `{setting}`.",
                hint="the README's table of chat request fields says what each provider passes on",
            )


def resolve_chat_model(name: str, *, follow_alias: bool = True) -> ChatModel:
    """The backend that answers `name` (see the module docstring); `follow_alias=False`
    reaches the model an alias has taken the name of (an old model, to compare with its
    replacement)."""
    name = name.strip()
    at_url = _split_url(name)
    if at_url is not None:
        model, url = at_url
        return ChatModel(name, COMPATIBLE_PROVIDER, model, base_url=url)
    target, known = _registry_lookup(name, follow_alias)
    if target is not None:
        return replace(resolve_chat_model(target, follow_alias=False), name=name)
    if known is not None:
        return known
    classes = registry.provider_classes()
    for provider_name, cls in classes.items():
        owned = cls.owns(name)
        if owned is not None:
            return ChatModel(name, provider_name, owned)
    prefix, _, rest = name.partition("/")
    if rest and prefix in classes:
        return ChatModel(name, prefix, rest)
    endpoint = find_endpoint(prefix) if rest else None
    if endpoint is not None:
        return ChatModel(
            name,
            COMPATIBLE_PROVIDER,
            rest,
            base_url=endpoint.base_url,
            key_variable=endpoint.key_variable,
        )
    if name.startswith("ft:"):
        raise usage_error(
            "model_not_found",
            f"no model {name} in the registry.",
            hint="`tunelab models list` shows the models tunelab knows",
        )
    return ChatModel(name, registry.DEFAULT_PROVIDER, name)


def check_chat_model(name: str) -> ChatModel:
    """`resolve_chat_model`, checked by its provider before anything heavy happens (data
    read, torch imported, weights loaded, a request sent): a model that is not here, or a
    provider whose key is not set, fails at once with a clear error."""
    chat = resolve_chat_model(name)
    registry.provider_class(chat.provider).check_model(
        chat.model, base_url=chat.base_url, key_variable=chat.key_variable
    )
    return chat


def _split_url(name: str) -> tuple[str, str] | None:
    for marker in URL_MARKERS:
        if marker in name:
            model, _, url = name.partition(marker)
            return model, marker[1:] + url
    return None


def alias_target(name: str) -> str | None:
    """The model `name` is an alias of, or None when it is none."""
    return _registry_lookup(name.strip(), follow_alias=True)[0]


def _registry_lookup(name: str, follow_alias: bool) -> tuple[str | None, ChatModel | None]:
    """What the registry says of `name`: the model it is an alias of, else the registry
    model it names (one opening of the registry for both)."""
    settings = get_settings()
    if not settings.database_url and not settings.registry_path.exists():  # none yet
        return None, None
    with job_registry.Store() as store:
        alias = store.find_alias(name) if follow_alias else None
        known = store.find_model(name) if alias is None else None
    if alias is not None:
        return alias.target, None
    return None, _registry_chat_model(name, known) if known is not None else None


def _registry_chat_model(name: str, known: job_registry.Model) -> ChatModel:
    details = known.details or {}
    # A model whose weights are on this machine answers from its directory; a local job's
    # model trained on another machine is fetched from the artefact store first.
    model = known.path or known.id
    owner = registry.provider_classes().get(known.provider)
    if known.path and owner is not None and owner.runs_here:
        model = model_dir(known)
    return ChatModel(
        name,
        known.provider,
        model,
        base_url=details.get("base_url"),
        key_variable=details.get("key_variable"),
    )
