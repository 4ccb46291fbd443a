"""The registry on PostgreSQL: one queue that workers on many machines drain.

`connect(url)` returns a connection that speaks the SQL `Store` writes for SQLite, so the
store keeps one set of queries and the same numbered migrations; what differs is translated
here, statement by statement (and cached):

- `?` placeholders become `%s`; `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING` and
  `INSERT OR REPLACE` an upsert on the table's key;
- each table gets a `rowid` identity column, so that ordering by insertion (`rowid`) works as
  in SQLite; `INTEGER` columns become `BIGINT`, `REAL` `DOUBLE PRECISION`, and an
  `AUTOINCREMENT` key an identity;
- `PRAGMA user_version` is a one-row `tunelab_schema` table. Read inside the migration's
  transaction it is locked (`FOR UPDATE`), so two processes opening a new database migrate
  it once, as SQLite's immediate transaction guarantees; other PRAGMAs are SQLite's own and
  do nothing here;
- `BEGIN IMMEDIATE` is a plain `BEGIN`: PostgreSQL locks rows, not the database. Compare-and-set
  updates (`UPDATE ... WHERE status IN (...)`) re-check their condition after waiting for a
  concurrent writer, and the store's claim adds `FOR UPDATE SKIP LOCKED`, so concurrent
  workers each take a different queued job without waiting on one another.
"""

from __future__ import annotations

import functools
import re

from tunelab.errors import TunelabError

# The key `INSERT OR REPLACE` replaces on, per table (SQLite replaces on any unique key).
UPSERT_KEYS = {
    "eval_outputs": ("run_id", "model", "item"),
    "job_metrics": ("job_id", "step"),
    "job_checkpoints": ("job_id", "step"),
    "models": ("id",),
}
_NOTHING = "SELECT 1 WHERE false"  # a statement with no effect and no rows
_SCHEMA_LOCK = 748213  # an advisory lock id of tunelab's own
_SCHEMA_LOCK = 748213  # an advisory lock id of tunelab's own


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


class Row(dict):
    """A row by column name or position, like `sqlite3.Row`."""

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _row_factory(cursor):
    names = [column.name for column in cursor.description or ()]
    return lambda values: Row(zip(names, values, strict=True))


class PostgresConnection:
    """A psycopg connection with the subset of `sqlite3.Connection` the store uses."""

    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise TunelabError(
                "postgres_driver_missing",
                "TUNELAB_DATABASE_URL names PostgreSQL, but psycopg is not installed.",
                hint="pip install 'tunelab[postgres]'",
            ) from None
        try:
            self._conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
        except psycopg.OperationalError as err:
            raise TunelabError(
                "database_unreachable",
                f"cannot connect to the PostgreSQL registry: {_redacted(str(err), url)}",
                hint="check TUNELAB_DATABASE_URL and that the server accepts connections",
            ) from None
        # The version table, created once by whichever process comes first.
        with self._conn.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_lock({_SCHEMA_LOCK})")
            cursor.execute("CREATE TABLE IF NOT EXISTS tunelab_schema (version BIGINT NOT NULL)")
            cursor.execute(
                "INSERT INTO tunelab_schema SELECT 0 "
                "WHERE NOT EXISTS (SELECT 1 FROM tunelab_schema)"
            )
            cursor.execute(f"SELECT pg_advisory_unlock({_SCHEMA_LOCK})")

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params=()):
        cursor = self._conn.cursor()
        cursor.execute(translate(sql, self.in_transaction), tuple(params))
        return cursor

    def executemany(self, sql: str, rows):
        cursor = self._conn.cursor()
        cursor.executemany(translate(sql, self.in_transaction), [tuple(r) for r in rows])
        return cursor

    def close(self) -> None:
        self._conn.close()


@functools.lru_cache(maxsize=512)
def translate(sql: str, in_transaction: bool = False) -> str:
    """The PostgreSQL statement for one the store writes for SQLite."""
    text = sql.strip()
    upper = text.upper()
    if upper == "BEGIN IMMEDIATE":
        return "BEGIN"
    if upper.startswith("PRAGMA USER_VERSION ="):
        return f"UPDATE tunelab_schema SET version = {int(text.split('=')[1])}"
    if upper == "PRAGMA USER_VERSION":
        lock = " FOR UPDATE" if in_transaction else ""
        return f"SELECT version FROM tunelab_schema{lock}"
    if upper.startswith("PRAGMA"):
        return _NOTHING
    if upper.startswith("CREATE TABLE"):
        return _create_table(text)
    text = text.replace("?", "%s")
    if upper.startswith("INSERT OR IGNORE"):
        return "INSERT" + text[len("INSERT OR IGNORE") :] + " ON CONFLICT DO NOTHING"
    if upper.startswith("INSERT OR REPLACE"):
        return _upsert("INSERT" + text[len("INSERT OR REPLACE") :])
    return text


def _create_table(sql: str) -> str:
    sql = re.sub(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b",
                 "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)  # fmt: skip
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    # Insertion order, which SQLite keeps as rowid and the store orders ties by.
    return sql.replace("(", "(\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY,", 1)


def _upsert(sql: str) -> str:
    match = re.match(r"INSERT INTO (\w+) \(([^)]*)\)", sql)
    table, columns = match.group(1), [c.strip() for c in match.group(2).split(",")]
    key = UPSERT_KEYS[table]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    return f"{sql} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


def _redacted(message: str, url: str) -> str:
    """The driver's message without the URL's password."""
    password = re.match(r"postgres(?:ql)?://[^:/@]*:([^@]*)@", url)
    return message.replace(password.group(1), "***") if password and password.group(1) else message
