"""`tunelab generate-conversations`: a model answers one user message per idea; the
conversations go into a SQLite conversation database that `tunelab format` and
`tunelab eval judge` read (the default schema of `format`'s conversation reader).

Ideas come from a JSON array (strings, or objects with an `idea` key and any context keys),
JSONL, or a text file with one idea per line. The user message is the template with
`{idea}` and every other key of the idea (`{context_1}`, ...) filled in.
"""

from __future__ import annotations

import json
import os
import sqlite3
import string
import time
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError, usage_error
from tunelab.evals.candidates import open_candidate
from tunelab.io import check_output_path

MAX_TEMPERATURE = 2.0  # as the CLI's --temperature and the chat API allow
SCHEMA = (
    "CREATE TABLE conversations (id INTEGER PRIMARY KEY, system_prompt TEXT, model TEXT, "
    "idea TEXT, created_at TEXT)",
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL "
    "REFERENCES conversations (id), role TEXT NOT NULL, content TEXT NOT NULL, "
    "position INTEGER NOT NULL)",
)


def read_ideas(path: Path) -> list[dict]:
    """Every idea as a dict with at least an `idea` key, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise TunelabError(
            "not_utf8",
            "the ideas file is not UTF-8 text.",
            "re-save it as UTF-8",
            path=path,
            line=line,
        ) from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as err:
            reason = "nested too deeply" if isinstance(err, RecursionError) else err
            raise TunelabError("invalid_ideas", f"not JSON: {reason}", path=path) from None
        rows = list(enumerate(raw, 1))
    elif stripped.startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as err:
                    raise TunelabError(
                        "invalid_ideas", f"not JSON: {err}", path=path, line=number
                    ) from None
    else:
        rows = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    ideas = [_idea(value, path, number) for number, value in rows]
    if not ideas:
        raise TunelabError("invalid_ideas", "the file holds no idea.", path=path)
    return ideas


def _idea(value, path: Path, number: int) -> dict:
    if isinstance(value, str):
        return {"idea": value}
    if isinstance(value, dict) and isinstance(value.get("idea"), str):
        return {k: str(v) for k, v in value.items()}
    raise TunelabError(
        "invalid_ideas",
        'each idea is a string or an object with an "idea" key.',
        path=path,
        line=number,
    )


def fill_template(template: str, idea: dict, path: Path | None = None) -> str:
    """The template with its `{name}` fields from the idea; a missing field is an error."""
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    missing = sorted(names - set(idea))
    if missing:
        raise TunelabError(
            "template_field_missing",
            f"the template uses {{{missing[0]}}} but an idea has no {missing[0]!r} "
            f"(it has: {', '.join(sorted(idea))}).",
            path=path,
        )
    return template.format(**idea)


@dataclass(frozen=True)
class ConversationRecipe:
    """How each idea becomes a conversation: the model that answers, the user message
    template filled from the idea, the system prompt, and the answer's length and
    temperature (`tunelab generate-conversations`' options, the studio's form)."""

    model: str
    template: str = "{idea}"
    system_prompt: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0

    def __post_init__(self) -> None:
        # Checked here, so that the CLI's flags and the studio's form get the same limits.
        if self.max_tokens < 1:
            raise usage_error("invalid_max_tokens", "max tokens: a whole number from 1.")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise usage_error("invalid_temperature", f"temperature: from 0 to {MAX_TEMPERATURE:g}.")


def generate_conversations(
    ideas_path: Path,
    output: Path,
    recipe: ConversationRecipe,
    *,
    force: bool = False,
    progress=None,
    cancel=None,
) -> dict:
    """Answer every idea as `recipe` says and write the conversation database `output`."""
    check_output_path(output, force=force, inputs=(ideas_path,))
    ideas = read_ideas(ideas_path)
    model, system_prompt = recipe.model, recipe.system_prompt
    prompts = [fill_template(recipe.template, idea, ideas_path) for idea in ideas]
    conversations = [
        ([{"role": "system", "content": system_prompt}] if system_prompt else [])
        + [{"role": "user", "content": prompt}]
        for prompt in prompts
    ]
    candidate = open_candidate(model)
    try:
        answers = candidate.answer(
            conversations,
            max_tokens=recipe.max_tokens,
            temperature=recipe.temperature,
            progress=progress,
            cancel=cancel,
        )
    finally:
        candidate.close()
    _write_database(output, model, system_prompt, ideas, prompts, answers)
    failed = sum(1 for a in answers if a.error)
    return {
        "output": str(output),
        "model": model,
        "n_conversations": len(ideas) - failed,
        "n_failed": failed,
    }


def _write_database(output: Path, model, system_prompt, ideas, prompts, answers) -> None:
    """Built beside `output` and renamed into place: never a half-written database."""
    staging = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        with sqlite3.connect(staging) as db:
            for statement in SCHEMA:
                db.execute(statement)
            for idea, prompt, answer in zip(ideas, prompts, answers, strict=True):
                if answer.error:
                    continue  # a failed call makes no conversation; counted in n_failed
                cursor = db.execute(
                    "INSERT INTO conversations (system_prompt, model, idea, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (system_prompt, model, idea["idea"], stamp),
                )
                db.executemany(
                    "INSERT INTO messages (conversation_id, role, content, position) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (cursor.lastrowid, "user", prompt, 1),
                        (cursor.lastrowid, "assistant", answer.text, 2),
                    ],
                )
        db.close()
        os.replace(staging, output)
    finally:
        staging.unlink(missing_ok=True)
