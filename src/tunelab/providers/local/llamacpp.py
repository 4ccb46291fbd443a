"""llama.cpp as the local provider's inference backend for a server's chat requests.

`tunelab serve --backend auto|torch|llamacpp` chooses, per model and request, who answers:

- `torch`: the engine (PyTorch) answers everything, as it always did.
- `auto` (the default): llama.cpp answers plain chat requests (sampling settings,
  `logit_bias`) for local fine-tunes (tunelab training outputs, LoRA ones merged) on a machine
  without CUDA, when llama-cpp-python is installed (`pip install 'tunelab[llamacpp]'`);
  everything else goes to the engine: other models, requests with `logprobs`,
  `response_format`, `tools` or `grammar`, label scoring, and models whose architecture the
  GGUF writer does not convert.
- `llamacpp`: llama.cpp answers every local model's chat requests; a request asking for a
  field it does not serve here is refused by that field's name. Label scoring stays the
  engine's (llama.cpp has no log-likelihood of a fixed answer).

Each model is converted once to GGUF by tunelab's own writer (`engine.gguf_cache`, cached
under TUNELAB_HOME by its weights' checksum) and loaded into one `llama_cpp.Llama`, which
answers one request at a time. Prompts are the engine's own token ids (`encode_chat`: the
same chat template and tokenizer), so greedy answers are the engine's.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.cores import available_cores, fixed_threads
from tunelab.engine.sources import resolve_model_source
from tunelab.errors import TunelabError, usage_error
from tunelab.providers.base import ChatOptions, ChatStream
from tunelab.types import Answer, Usage

if TYPE_CHECKING:
    from tunelab.engine.sources import ModelInfo

BACKENDS = ("auto", "torch", "llamacpp")
SERVED_FIELDS = frozenset({"logit_bias"})  # answer fields llama.cpp answers here
INSTALL_HINT = "pip install 'tunelab[llamacpp]' (builds llama-cpp-python from source)"
FALLBACK_CONTEXT = 2048  # for models whose config states no context length


def installed() -> bool:
    """Whether llama-cpp-python can be imported (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def check_backend(backend: str) -> None:
    """Refuse an unknown backend, or `llamacpp` without llama-cpp-python installed."""
    if backend not in BACKENDS:
        raise usage_error(
            "invalid_backend", f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}."
        )
    if backend == "llamacpp" and not installed():
        raise usage_error(
            "llamacpp_not_installed",
            "--backend llamacpp needs llama-cpp-python, which is not installed.",
            hint=INSTALL_HINT,
        )


@dataclass(eq=False)
class LlamaModel:
    """One model loaded into llama.cpp, with the engine's tokenizer for its prompts."""

    llama: object  # llama_cpp.Llama
    tokenizer: object
    name: str
    lock: threading.Lock

    def answer(self, messages: list[dict], options: ChatOptions, index: int = 0) -> Answer:
        stream = self.stream(messages, options, index)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(self, messages: list[dict], options: ChatOptions, index: int = 0) -> ChatStream:
        """Choice `index` of the answer to `messages` (each choice of a seeded request gets
        its own seed, as the engine's do)."""
        from tunelab.engine.generate import encode_chat  # the engine's template and tokenizer

        prompt = encode_chat(self.tokenizer, messages)
        return ChatStream(self._events(prompt, completion_settings(options, index)))

    def _events(self, prompt: list[int], settings: dict) -> Generator[str, None, Answer]:
        began = time.perf_counter()
        pieces: list[str] = []
        finish = "stop"
        with self.lock:  # a Llama runs one sequence at a time
            for chunk in self.llama.create_completion(prompt, stream=True, **settings):  # type: ignore[attr-defined]
                choice = chunk["choices"][0]
                if choice["text"]:
                    pieces.append(choice["text"])
                    yield choice["text"]
                finish = choice.get("finish_reason") or finish
        text = "".join(pieces)
        usage = Usage(len(prompt), self._completion_tokens(text, finish))
        return Answer(text, finish, usage, time.perf_counter() - began, model=self.name)

    def _completion_tokens(self, text: str, finish: str) -> int:
        """The answer's tokens, the end of turn included where the answer ended with it (as
        the engine counts): llama.cpp's stream does not report them."""
        tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        return tokens + (1 if finish == "stop" else 0)


def completion_settings(options: ChatOptions, index: int = 0) -> dict:
    """A request's settings as `Llama.create_completion`'s: greedy unless a temperature is
    given, as the engine decodes."""
    temperature = options.temperature or 0.0
    seed = None if options.seed is None or temperature == 0 else options.seed + index
    settings: dict = {
        "max_tokens": options.max_tokens,  # None: up to the context
        "temperature": temperature,
        "top_p": 1.0 if options.top_p is None else options.top_p,
        "top_k": 0 if temperature > 0 else 1,  # no top-k cut: the engine samples without one
        "stop": list(options.stop) or None,
        "logit_bias": dict(options.logit_bias) or None,
    }
    if seed is not None:
        settings["seed"] = seed
    return settings


def unserved_fields(options: ChatOptions) -> list[str]:
    """The request's answer fields llama.cpp does not answer here."""
    return [name for name in options.fields_used() if name not in SERVED_FIELDS]


class LlamaCppBackend:
    """Which models llama.cpp answers for a server, and those models, loaded once each."""

    def __init__(self, backend: str = "auto") -> None:
        check_backend(backend)
        self.backend = backend
        self._models: dict[tuple[str, float], LlamaModel | None] = {}  # None: the engine's
        self._directories: dict[str, str] = {}  # the name a model was asked for → its directory
        self._lock = threading.Lock()  # guards the two dicts; held only briefly
        self._loading = threading.Lock()

    def takes(self, options: ChatOptions) -> bool:
        """Whether llama.cpp may answer this request at all (any model); `llamacpp` refuses
        the fields it does not serve, by name."""
        if self.backend == "torch" or (self.backend == "auto" and not installed()):
            return False
        unserved = unserved_fields(options)
        if unserved and self.backend == "llamacpp":
            raise usage_error(
                "unsupported_on_llamacpp",
                f"llama.cpp does not answer {', '.join(unserved)} here.",
                hint="serve with --backend auto: the PyTorch engine answers such requests",
            )
        return not unserved

    def cached(self, source: str) -> tuple[bool, LlamaModel | None]:
        """Whether a decision was made for `source` already, and it (a model, or None: the
        engine's); cheap enough for a server's event loop."""
        with self._lock:
            directory = self._directories.get(source)
        if directory is None:
            return False, None
        from tunelab.providers.local.model_cache import weights_written  # torch: once serving

        key = (directory, weights_written(directory))
        with self._lock:
            return key in self._models, self._models.get(key)

    def clear(self) -> None:
        """Forget the loaded models (the server stops): each is freed with its last user."""
        with self._lock:
            self._models.clear()
            self._directories.clear()

    def model_for(self, source: str) -> LlamaModel | None:
        """llama.cpp's model for `source` (converted and loaded on first use), or None
        where the engine answers it. Blocking: call it in a thread."""
        info = resolve_model_source(source)
        key = _model_key(info)
        with self._loading:  # one conversion at a time; a second asker finds it done
            with self._lock:
                self._directories[source] = key[0]
                if key in self._models:
                    return self._models[key]
            chosen = self._load(source, info) if self._serves(info) else None
            with self._lock:
                self._models[key] = chosen
            return chosen

    def _serves(self, info: ModelInfo) -> bool:
        if self.backend == "llamacpp":
            return True
        import torch  # imported already by the server's first answer

        return info.kind == "trained" and not torch.cuda.is_available()

    def _load(self, source: str, info: ModelInfo) -> LlamaModel | None:
        """The model in llama.cpp; under `auto`, None for a model the GGUF writer refuses."""
        # torch and transformers: only when a model loads, not for `tunelab serve`'s flags
        from tunelab.engine.gguf_cache import cached_gguf
        from tunelab.engine.models import load_tokenizer

        try:
            path = cached_gguf(source)
        except TunelabError:
            if self.backend == "llamacpp":
                raise
            return None  # not a Llama-architecture model: the engine answers it
        import llama_cpp  # the optional extra: `installed()` said it is there

        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=info.context_length or FALLBACK_CONTEXT,
            n_threads=fixed_threads() or available_cores(),
            verbose=False,
        )
        return LlamaModel(llama, load_tokenizer(info), info.name, threading.Lock())


def _model_key(info: ModelInfo) -> tuple[str, float]:
    """A model's directory and when its weights were last written: trained again, it is
    converted and loaded anew."""
    from tunelab.providers.local.model_cache import weights_written  # torch: once serving

    return str(info.path), weights_written(info.path)
