"""The registry on PostgreSQL: one queue that workers on many machines drain.

The store's queries and migrations are SQLAlchemy Core, one text for SQLite and PostgreSQL;
what is PostgreSQL's own lives here: recognising its URLs, connecting through psycopg 3
(never showing the URL's password in an error), and the schema version, which SQLite keeps
in `PRAGMA user_version` and PostgreSQL in the one-row `tunelab_schema` table. Read inside
a migration's transaction that row is locked (`FOR UPDATE`), so two processes opening a new
database migrate it once, as SQLite's immediate transaction guarantees.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from sqlalchemy import Connection, Engine, create_engine, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from tunelab.errors import TunelabError
from tunelab.registry.schema import tunelab_schema

_SCHEMA_LOCK = 748213  # an advisory lock id of tunelab's own


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def connect(url: str) -> tuple[Engine, Connection]:
    """An autocommit connection to the registry at `url`, its version table in place."""
    try:
        import psycopg  # noqa: F401 (SQLAlchemy's driver for PostgreSQL)
    except ImportError:
        raise TunelabError(
            "postgres_driver_missing",
            "TUNELAB_DATABASE_URL names PostgreSQL, but psycopg is not installed.",
            hint="pip install 'tunelab[postgres]'",
        ) from None
    try:
        driver_url = make_url(url).set(drivername="postgresql+psycopg")
    except ArgumentError:
        raise TunelabError(
            "database_url_invalid",
            "TUNELAB_DATABASE_URL is not a PostgreSQL URL that can be read.",
            hint="write it as postgresql://user:password@host:port/database",
        ) from None
    engine = create_engine(driver_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        connection = engine.connect()
    except DBAPIError as err:
        engine.dispose()
        raise TunelabError(
            "database_unreachable",
            f"cannot connect to the PostgreSQL registry: {redacted(str(err.orig), url)}",
            hint="check TUNELAB_DATABASE_URL and that the server accepts connections",
        ) from None
    _create_version_table(connection)
    return engine, connection


def _create_version_table(connection: Connection) -> None:
    """The version table, created once by whichever process comes first."""
    connection.execute(select(func.pg_advisory_lock(_SCHEMA_LOCK)))
    try:
        tunelab_schema.create(connection, checkfirst=True)
        if connection.execute(select(func.count()).select_from(tunelab_schema)).scalar() == 0:
            connection.execute(insert(tunelab_schema).values(version=0))
    finally:
        connection.execute(select(func.pg_advisory_unlock(_SCHEMA_LOCK)))


def schema_version(connection: Connection, *, lock: bool = False) -> int:
    """The number of migrations applied; `lock` holds the row to the end of the transaction."""
    query = select(tunelab_schema.c.version)
    return int(connection.execute(query.with_for_update() if lock else query).scalar_one())


def set_schema_version(connection: Connection, number: int) -> None:
    connection.execute(update(tunelab_schema).values(version=number))


def redacted(message: str, url: str) -> str:
    """The driver's message without the URL's password, as written or decoded."""
    written = urlsplit(url).password
    for secret in (written, unquote(written or "")):
        if secret:
            message = message.replace(secret, "***")
    return message
