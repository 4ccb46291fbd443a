"""A saved Hugging Face tokenizer read without transformers, for counting tokens.

`import transformers` imports torch (seconds of start-up), yet counting a local model's
tokens needs only its `tokenizer.json` (the `tokenizers` library), the special tokens in
`tokenizer_config.json` and its chat template (rendered with jinja2 as transformers renders
it: a sandbox, `trim_blocks` and `lstrip_blocks`, `raise_exception`, `strftime_now`, a
non-escaping `tojson`). `open_tokenizer_files` gives what `ChatTemplateCounter` reads from a
transformers tokenizer, or None when the directory needs transformers (no `tokenizer.json`,
a template that uses transformers' own `{% generation %}` tag): the caller then loads it with
transformers, so counts never differ (tests compare both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2.utils import Namespace

ROLE_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


@dataclass(frozen=True)
class AddedToken:
    content: str
    special: bool


class TokenizerFiles:
    """The parts of a fast tokenizer `ChatTemplateCounter` uses, read from its files."""

    is_fast = True

    def __init__(self, backend, config: dict, template: str) -> None:
        self.backend_tokenizer = backend
        self.chat_template = template
        # Added tokens live in tokenizer.json (newer saves keep them out of the config).
        self.added_tokens_decoder = {
            i: AddedToken(t.content, bool(t.special))
            for i, t in backend.get_added_tokens_decoder().items()
        }
        for i, t in (config.get("added_tokens_decoder") or {}).items():
            self.added_tokens_decoder.setdefault(
                int(i), AddedToken(_content(t), bool(t.get("special")))
            )
        self._roles = {name: _content(config[name]) for name in ROLE_TOKENS if config.get(name)}
        extra = [_content(t) for t in config.get("additional_special_tokens") or []]
        self.all_special_tokens = sorted({*self._roles.values(), *extra})
        self._template = _compile(template)

    def apply_chat_template(
        self,
        messages: list[dict],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
    ) -> str:
        return self._template.render(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self._roles,
        )


def open_tokenizer_files(directory: Path) -> TokenizerFiles | None:
    """The tokenizer in `directory`, or None when only transformers can load it."""
    tokenizer_json, config_json = directory / "tokenizer.json", directory / "tokenizer_config.json"
    if not tokenizer_json.is_file() or not config_json.is_file():
        return None
    try:
        config = json.loads(config_json.read_text(encoding="utf-8"))
        template = _chat_template(directory, config)
        if not isinstance(config, dict) or template is None:
            return None
        from tokenizers import Tokenizer  # native: only when tokens are counted

        return TokenizerFiles(Tokenizer.from_file(str(tokenizer_json)), config, template)
    except Exception:  # an unreadable file, a template jinja alone cannot compile, ...
        return None  # transformers decides, and reports what is wrong


def _chat_template(directory: Path, config: dict) -> str | None:
    """The default chat template: `chat_template.jinja` (newer saves) or the config's."""
    path = directory / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def _compile(template: str):
    import jinja2  # only when a chat template is rendered
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    # A template is code from wherever the model came from: as transformers does, `dict` is
    # a plain constructor and a namespace refuses underscore attributes (sandbox escapes).
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(template)


class _TemplateDict:
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _checked_name(name):
    import jinja2  # only when a chat template is rendered

    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(
            f"chat templates cannot store underscore attributes on a namespace ({name!r})."
        )
    return name


class _TemplateNamespace(Namespace):
    def __init__(*args, **kwargs):  # Jinja's signature trick: `namespace(self=...)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _checked_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        Namespace.__setitem__(self, _checked_name(name), value)
