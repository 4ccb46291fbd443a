"""One connection to the registry's database, SQLite or PostgreSQL, and its transactions.

The connection is in autocommit mode: a read sees the latest commit and holds nothing, and
every write is an explicit transaction (`write()`). On SQLite, in WAL mode so that readers
run beside one writer, that transaction is immediate: the write lock is taken up front, so
two writers queue on the busy timeout instead of failing mid-transaction, and a lock that
outlasts the timeout is retried rather than shown to the user as "database is locked". On
PostgreSQL it is a plain `BEGIN`: PostgreSQL locks rows, not the database; compare-and-set
updates re-check their condition after waiting for a concurrent writer, and the store's
claim skips rows other workers hold (`FOR UPDATE SKIP LOCKED`).

A registry in a place that cannot be written (a read-only mount) is opened read-only, so
that listing and showing still work; a write says why it cannot. Numbered migrations
(`registry.migrations`) run on open.

A SQLite connection must not be shared between threads: one `Database` per thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import Connection, Executable, Result, Table, create_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from tunelab.errors import TunelabError
from tunelab.io import can_create
from tunelab.registry import postgres
from tunelab.registry.migrations import MIGRATIONS

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000
LOCK_RETRIES = 20  # beyond the busy timeout: 10 minutes of a held lock before giving up


class Database:
    """The registry's database at `target`: a SQLite file or a PostgreSQL URL."""

    def __init__(self, target: str | Path) -> None:
        if postgres.is_url(target):
            self.path: str | Path = str(target)
            self.read_only, self.dialect = False, "postgresql"
            self._engine, self._conn = postgres.connect(str(target))
            self._migrate()
            return
        self.path, self.dialect = Path(target), "sqlite"
        self.read_only = not can_create(self.path)
        try:
            self._open_read_only() if self.read_only else self._open()
        except DBAPIError as err:
            raise _unusable(self.path, err) from None

    def _open(self) -> None:
        assert isinstance(self.path, Path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect(str(self.path))
        _retry_locked(lambda: self._conn.exec_driver_sql("PRAGMA journal_mode = WAL"))
        self._migrate()

    def _open_read_only(self) -> None:
        if not Path(self.path).exists():  # nothing recorded yet: an empty registry in memory
            self.read_only = False
            self._connect(":memory:")
            self._migrate()
            self.read_only = True
            return
        # Read-only but shared: a writer elsewhere (a worker of the user who owns it) keeps
        # the -wal/-shm files SQLite needs to read consistently. On a read-only mount there
        # are none and none can be made: `immutable` then tells SQLite not to look for them.
        self._connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            self.version()
        except OperationalError:
            self.close()
            self._connect(f"file:{self.path}?mode=ro&immutable=1", uri=True)
        if self.version() < len(MIGRATIONS):
            raise self.read_only_error()

    def _connect(self, target: str, uri: bool = False) -> None:
        self._engine = create_engine(
            "sqlite://",
            creator=lambda: _connect_sqlite(target, uri),
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
        )
        self._conn = self._engine.connect()

    def read_only_error(self) -> TunelabError:
        return TunelabError(
            "registry_read_only",
            f"the registry {self.path} is in a place that cannot be written.",
            hint="set TUNELAB_HOME to a writable directory, or make this one writable",
        )

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()

    # -- statements and transactions --------------------------------------------------------

    def execute(self, statement: Executable) -> Result:
        """Run a statement outside any write: a read of the latest committed state."""
        return self._conn.execute(statement)

    def insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT in this database's dialect, which offers `on_conflict_do_*`."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def upsert(self, table: Table, *, key: tuple[str, ...]) -> Executable:
        """An INSERT that replaces the other columns of a row with the same `key`."""
        statement = self.insert(table)
        replaced = {
            column.name: statement.excluded[column.name]
            for column in table.columns
            if column.name not in key and column.identity is None
        }
        return statement.on_conflict_do_update(index_elements=list(key), set_=replaced)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (immediate on SQLite: the write lock is held from the start)."""
        if self.read_only:
            raise self.read_only_error()
        begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
        try:
            _retry_locked(lambda: self._conn.exec_driver_sql(begin))
        except OperationalError as err:
            if "readonly" in str(err.orig) or "read-only" in str(err.orig):
                raise self.read_only_error() from None
            raise
        try:
            yield self._conn
        except BaseException:
            if self._in_transaction():  # SQLite may have rolled back already
                self._conn.exec_driver_sql("ROLLBACK")
            raise
        _retry_locked(lambda: self._conn.exec_driver_sql("COMMIT"))

    def _in_transaction(self) -> bool:
        if self.dialect != "sqlite":
            return True  # PostgreSQL only warns of a ROLLBACK outside a transaction
        raw = cast(sqlite3.Connection, self._conn.connection.dbapi_connection)
        return raw.in_transaction

    # -- schema version and migrations ------------------------------------------------------

    def version(self, *, lock: bool = False) -> int:
        """How many migrations the database has had."""
        if self.dialect == "postgresql":
            return postgres.schema_version(self._conn, lock=lock)
        return int(self._conn.exec_driver_sql("PRAGMA user_version").scalar_one())

    def _set_version(self, number: int) -> None:
        if self.dialect == "postgresql":
            postgres.set_schema_version(self._conn, number)
        else:
            self._conn.exec_driver_sql(f"PRAGMA user_version = {int(number)}")

    def _migrate(self) -> None:
        if self.version() >= len(MIGRATIONS):
            return
        with self.write() as conn:
            version = self.version(lock=True)  # another process may have migrated meanwhile
            for number in range(version + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                self._set_version(number)


def _connect_sqlite(target: str, uri: bool) -> sqlite3.Connection:
    db = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, uri=uri)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _unusable(path: Path | str, err: DBAPIError) -> TunelabError:
    reason = err.orig
    if "not a database" in str(reason) or "malformed" in str(reason):
        return TunelabError(
            "registry_corrupt",
            f"{path} is not a tunelab registry (SQLite says: {reason}).",
            hint="move the file aside (tunelab then starts a new registry), or set "
            "TUNELAB_HOME to another directory",
        )
    return TunelabError(
        "registry_unavailable",
        f"the registry {path} cannot be opened: {reason}.",
        hint="check the file and its directory, or set TUNELAB_HOME to another directory",
    )


def _retry_locked(action: Callable[[], T]) -> T:
    """Run `action`, retrying while SQLite reports the database locked or busy.

    The busy timeout already waits 30 s; this covers the cases where SQLite returns BUSY
    without waiting (e.g. switching to WAL on a brand-new file) and very long writers.
    """
    for attempt in range(LOCK_RETRIES):
        try:
            return action()
        except OperationalError as err:
            text = str(err.orig)
            if ("locked" not in text and "busy" not in text) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable: the last attempt returns or raises")
