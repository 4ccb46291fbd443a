"""SQLite conversation databases: default and mapped schemas, overrides, preview, read-only."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tunelab.data.sources.conversations_db import (
    ConversationSchema,
    preview_conversations,
    read_conversations,
)
from tunelab.errors import TunelabError


def build_default_db(path: Path) -> Path:
    """Three conversations in the default schema; messages inserted out of order."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE conversations (id INTEGER PRIMARY KEY, system_prompt TEXT, created_at TEXT);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER, role TEXT,
                               content TEXT, position INTEGER);
        INSERT INTO conversations VALUES (1, 'You are a baker.', '2025-01-01'),
                                         (2, NULL, '2025-01-02'),
                                         (3, '', '2025-01-03');
        INSERT INTO messages (conversation_id, role, content, position) VALUES
            (1, 'assistant', 'You need flour, eggs and sugar.', 2),
            (1, 'user', 'How do I bake a cake?', 1),
            (2, 'user', 'Anyone there?', 1),
            (3, 'human', 'Hi', 1),
            (3, 'gpt', 'Hello!', 2),
            (1, 'user', 'Thanks', 3),
            (1, 'assistant', 'Enjoy.', 4);
        """
    )
    conn.commit()
    conn.close()
    return path


def build_mapped_db(path: Path) -> Path:
    """Other table and column names; system prompts not stored; ordered by timestamp."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE chats (chat_uuid TEXT PRIMARY KEY, persona TEXT);
        CREATE TABLE turns (turn_id INTEGER PRIMARY KEY, chat TEXT, speaker TEXT, body TEXT,
                            sent_at TEXT);
        INSERT INTO chats VALUES ('b', 'Pirate'), ('a', 'Robot');
        INSERT INTO turns (chat, speaker, body, sent_at) VALUES
            ('b', 'assistant', 'Arr!', '10:01'),
            ('b', 'user', 'Hello', '10:00'),
            ('a', 'user', 'Beep?', '09:00'),
            ('a', 'assistant', 'Boop.', '09:05');
        """
    )
    conn.commit()
    conn.close()
    return path


MAPPED = ConversationSchema(
    conversations_table="chats",
    conversation_key_column="chat_uuid",
    system_column="persona",
    messages_table="turns",
    conversation_id_column="chat",
    role_column="speaker",
    content_column="body",
    order_column="sent_at",
)


def test_default_schema_orders_messages_and_adds_stored_system(tmp_path):
    reading = read_conversations(build_default_db(tmp_path / "c.db"))
    examples = list(reading.examples)
    assert [e.source_line for e in examples] == [1, 3]
    assert examples[0].messages == (
        {"role": "system", "content": "You are a baker."},
        {"role": "user", "content": "How do I bake a cake?"},
        {"role": "assistant", "content": "You need flour, eggs and sugar."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "Enjoy."},
    )
    # Empty stored prompt → no system message; human/gpt mapped to user/assistant.
    assert examples[1].messages == (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    )
    # Conversation 2 has no answer: skipped and counted.
    assert reading.skipped == 1
    assert reading.fields["order_column"] == "position"


def test_system_override_and_max_conversations(tmp_path):
    db = build_default_db(tmp_path / "c.db")
    reading = read_conversations(db, system="Be brief.", max_conversations=1)
    (only,) = reading.examples
    assert only.messages[0] == {"role": "system", "content": "Be brief."}
    assert sum(m["role"] == "system" for m in only.messages) == 1


def test_mapped_schema(tmp_path):
    reading = read_conversations(build_mapped_db(tmp_path / "m.db"), schema=MAPPED)
    robot, pirate = reading.examples
    assert robot.messages == (
        {"role": "system", "content": "Robot"},
        {"role": "user", "content": "Beep?"},
        {"role": "assistant", "content": "Boop."},
    )
    assert [m["content"] for m in pirate.messages] == ["Pirate", "Hello", "Arr!"]


def test_messages_table_alone_when_no_system_column(tmp_path):
    db = build_mapped_db(tmp_path / "m.db")
    schema = ConversationSchema(
        system_column="",
        messages_table="turns",
        conversation_id_column="chat",
        role_column="speaker",
        content_column="body",
    )
    reading = read_conversations(db, schema=schema)
    first = next(reading.examples)
    # No order column given: falls back to insertion order (no position/created_at/id).
    assert reading.fields["order_column"] == "rowid"
    assert first.messages == (
        {"role": "user", "content": "Beep?"},
        {"role": "assistant", "content": "Boop."},
    )


def test_schema_mismatch_names_the_flag(tmp_path):
    db = build_mapped_db(tmp_path / "m.db")
    with pytest.raises(TunelabError) as caught:
        read_conversations(db)
    assert caught.value.code == "db_schema_mismatch"
    assert "chats, turns" in caught.value.message
    with pytest.raises(TunelabError) as caught:
        read_conversations(db, schema=ConversationSchema(messages_table="turns", system_column=""))
    assert "--conversation-id-column" in caught.value.hint


def test_unknown_role_is_an_error(tmp_path):
    db = build_default_db(tmp_path / "c.db")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE messages SET role = 'narrator' WHERE content = 'Thanks'")
    conn.commit()
    conn.close()
    with pytest.raises(TunelabError) as caught:
        list(read_conversations(db).examples)
    assert "conversation 1, message 3" in caught.value.message
    assert caught.value.path == str(db)


def test_not_a_database(tmp_path):
    fake = tmp_path / "x.db"
    fake.write_text("hello")
    with pytest.raises(TunelabError) as caught:
        read_conversations(fake)
    assert caught.value.code == "invalid_database"


def test_preview_counts_and_sample(tmp_path):
    preview = preview_conversations(build_default_db(tmp_path / "c.db"))
    assert {t["name"]: t["rows"] for t in preview.tables} == {"conversations": 3, "messages": 7}
    assert preview.n_conversations == 3
    assert preview.n_messages == 7
    assert preview.messages_per_conversation == {"min": 1, "mean": 2.33, "max": 4}
    assert preview.roles == {"assistant": 2, "user": 3, "gpt": 1, "human": 1}
    assert preview.sample[0] == {"role": "system", "content": "You are a baker."}
    assert preview.schema_problem is None


def test_preview_of_unmatched_schema_still_lists_tables(tmp_path):
    preview = preview_conversations(build_mapped_db(tmp_path / "m.db"))
    assert [t["name"] for t in preview.tables] == ["chats", "turns"]
    assert "no table `messages`" in preview.schema_problem
    assert preview.sample is None


def test_database_is_never_modified(tmp_path):
    db = build_default_db(tmp_path / "c.db")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    list(read_conversations(db).examples)
    preview_conversations(db)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]  # no journal left beside it
