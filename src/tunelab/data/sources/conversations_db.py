"""SQLite conversation databases → multi-turn chat examples, one per conversation.

Default schema (what chat UIs such as the one in seed 004 keep):

    conversations(id, system_prompt, created_at)
    messages(id, conversation_id, role, content, position)

Other names are mapped with `ConversationSchema` (the `--conversations-table`,
`--messages-table`, ... flags). Only the messages table is required when `system_column`
is empty; otherwise each conversation's stored system prompt is read from the
conversations table and becomes the first message. Messages are ordered by
`order_column`, by default the first of `position`, `created_at`, `id` that exists (else
insertion order); conversations by their id. Roles are mapped as for ShareGPT (human → user,
gpt/model/bot/ai → assistant). A conversation without an assistant message teaches nothing
and is skipped (and counted).

The database is opened read-only (`mode=ro`) and read with one streaming query: memory holds
one conversation at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.data.example import ChatExample
from tunelab.data.sources.records import Reading, bad_record, normalise_role
from tunelab.errors import TunelabError

DEFAULT_ORDER_COLUMNS = ("position", "created_at", "id")


@dataclass(frozen=True)
class ConversationSchema:
    conversations_table: str = "conversations"
    # Primary key of the conversations table.
    conversation_key_column: str = "id"
    # Stored system prompt in the conversations table; "" when there is none.
    system_column: str = "system_prompt"
    messages_table: str = "messages"
    # The messages table's reference to its conversation.
    conversation_id_column: str = "conversation_id"
    role_column: str = "role"
    content_column: str = "content"
    # None: the first of DEFAULT_ORDER_COLUMNS present, else insertion order.
    order_column: str | None = None


@dataclass
class DatabasePreview:
    path: str
    # {"name", "rows", "columns"} for every table.
    tables: list[dict]
    # Why the database does not match the schema, or None when it does.
    schema_problem: str | None = None
    n_conversations: int = 0
    n_messages: int = 0
    # {"min", "mean", "max"} messages per conversation.
    messages_per_conversation: dict[str, float] = field(default_factory=dict)
    # Stored role values and how often each occurs.
    roles: dict[str, int] = field(default_factory=dict)
    # The first conversation as it would be written.
    sample: list[dict] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def read_conversations(
    path: Path,
    *,
    schema: ConversationSchema | None = None,
    max_conversations: int = 0,
    system: str | None = None,
) -> Reading:
    """`system=None` keeps stored system prompts; a string replaces them ("" removes them)."""
    schema = schema or ConversationSchema()
    with contextlib.closing(_connect(path)) as conn:
        order_column = _check_schema(conn, schema, path)
    fields = {k: v for k, v in asdict(schema).items() if v}
    fields["order_column"] = order_column
    reading = Reading(iter(()), fields=fields, system=system or None)
    reading.examples = _examples(path, schema, order_column, max_conversations, system, reading)
    return reading


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise TunelabError("source_not_found", f"{path} does not exist.", path=path)
    # Read-only at the file level, so nothing (not even a journal) is written beside it.
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as err:
        raise TunelabError(
            "invalid_database", f"cannot read the SQLite database: {err}", path=path
        ) from err
    return conn


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return {
        name: [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(name)})")]
        for (name,) in names
    }


def _check_schema(conn: sqlite3.Connection, schema: ConversationSchema, path: Path) -> str:
    """Raise if the mapped tables and columns are missing; return the order column."""
    tables = _table_columns(conn)
    needed = [
        (schema.messages_table, "--messages-table", None),
        (schema.messages_table, "--conversation-id-column", schema.conversation_id_column),
        (schema.messages_table, "--role-column", schema.role_column),
        (schema.messages_table, "--content-column", schema.content_column),
    ]
    if schema.order_column:
        needed.append((schema.messages_table, "--order-column", schema.order_column))
    if schema.system_column:
        needed += [
            (schema.conversations_table, "--conversations-table", None),
            (
                schema.conversations_table,
                "--conversation-key-column",
                schema.conversation_key_column,
            ),
            (schema.conversations_table, "--system-column", schema.system_column),
        ]
    for table, flag, column in needed:
        _require(tables, table, column, flag, path)
    if schema.order_column:
        return schema.order_column
    present = tables[schema.messages_table]
    return next((c for c in DEFAULT_ORDER_COLUMNS if c in present), "rowid")


def _require(
    tables: dict[str, list[str]], table: str, column: str | None, flag: str, path: Path
) -> None:
    if table not in tables:
        shown = ", ".join(tables) or "none"
        problem = f"there is no table `{table}` (tables: {shown})."
    elif column is not None and column not in tables[table]:
        problem = f"table `{table}` has no column `{column}` (columns: {', '.join(tables[table])})."
    else:
        return
    raise TunelabError(
        "db_schema_mismatch",
        problem,
        hint=f"map it with {flag}, or look at the database with --preview",
        path=path,
    )


def _rows_query(schema: ConversationSchema, order_column: str) -> str:
    m = {key: _quote(value) for key, value in asdict(schema).items() if value}
    order = "rowid" if order_column == "rowid" else _quote(order_column)
    if schema.system_column:
        system, join = (
            f"c.{m['system_column']}",
            f"LEFT JOIN {m['conversations_table']} AS c "
            f"ON c.{m['conversation_key_column']} = msg.{m['conversation_id_column']}",
        )
    else:
        system, join = "NULL", ""
    return (
        f"SELECT msg.{m['conversation_id_column']}, msg.{m['role_column']}, "
        f"msg.{m['content_column']}, {system} FROM {m['messages_table']} AS msg {join} "
        f"ORDER BY msg.{m['conversation_id_column']}, msg.{order}, msg.rowid"
    )


def _examples(
    path: Path,
    schema: ConversationSchema,
    order_column: str,
    max_conversations: int,
    system: str | None,
    reading: Reading,
) -> Iterator[ChatExample]:
    conn = _connect(path)
    try:
        rows = conn.execute(_rows_query(schema, order_column))
        produced = 0
        for number, (conversation_id, group) in enumerate(
            itertools.groupby(rows, key=lambda row: row[0]), start=1
        ):
            messages = _messages(list(group), conversation_id, system, path)
            if not any(m["role"] == "assistant" for m in messages):
                reading.skipped += 1
                continue
            yield ChatExample(tuple(messages), source_line=number)
            produced += 1
            if produced == max_conversations:
                return
    except sqlite3.DatabaseError as err:
        raise TunelabError("invalid_database", f"reading failed: {err}", path=path) from err
    finally:
        conn.close()


def _messages(rows: list[tuple], conversation_id: object, system: str | None, path: Path):
    stored_system = rows[0][3]
    messages = []
    if system is None and isinstance(stored_system, str) and stored_system.strip():
        messages.append({"role": "system", "content": stored_system})
    for number, (_, raw_role, content, _) in enumerate(rows, start=1):
        role = normalise_role(raw_role)
        if role is None or not isinstance(content, str):
            problem = f"role {raw_role!r}" if role is None else "no text content"
            raise bad_record(
                path, None, f"conversation {conversation_id!r}, message {number}: {problem}."
            )
        if system is not None and role == "system":
            continue
        messages.append({"role": role, "content": content})
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def preview_conversations(
    path: Path, schema: ConversationSchema | None = None, system: str | None = None
) -> DatabasePreview:
    """What the database holds, and the first conversation as `format` would write it."""
    schema = schema or ConversationSchema()
    with contextlib.closing(_connect(path)) as conn:
        tables = [
            {"name": name, "rows": _count(conn, name), "columns": columns}
            for name, columns in _table_columns(conn).items()
        ]
        preview = DatabasePreview(path=str(path), tables=tables)
        try:
            _check_schema(conn, schema, path)
        except TunelabError as err:
            preview.schema_problem = err.message
            return preview
        _add_message_stats(conn, schema, preview)
    reading = read_conversations(path, schema=schema, max_conversations=1, system=system)
    first = next(reading.examples, None)
    preview.sample = list(first.messages) if first else None
    return preview


def _count(conn: sqlite3.Connection, table: str) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {_quote(table)}").fetchone()[0]


def _add_message_stats(
    conn: sqlite3.Connection, schema: ConversationSchema, preview: DatabasePreview
) -> None:
    table, conv = _quote(schema.messages_table), _quote(schema.conversation_id_column)
    role = _quote(schema.role_column)
    counts = [n for (n,) in conn.execute(f"SELECT COUNT(*) FROM {table} GROUP BY {conv}")]
    preview.n_conversations = len(counts)
    preview.n_messages = sum(counts)
    if counts:
        mean = round(preview.n_messages / len(counts), 2)
        preview.messages_per_conversation = {"min": min(counts), "mean": mean, "max": max(counts)}
    query = f"SELECT {role}, COUNT(*) FROM {table} GROUP BY {role} ORDER BY 2 DESC"
    preview.roles = {str(value): n for value, n in conn.execute(query)}
