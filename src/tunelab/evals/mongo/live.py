"""Read queries run on a real MongoDB, for execution match with `--mongo-uri`.

`LiveDatabase.connect(uri)` (or `LiveDatabase(database)` with any pymongo-compatible
`Database`, e.g. a mongomock one) runs a parsed `MongoQuery` on the server and returns what
`executor.execute` would: a list of plain-dict documents for find and aggregate, an int
for count, a list of values for distinct. BSON values come back as plain ones so that
`results_match` can compare two results: ObjectId as its hex string, Decimal128 as float,
dates as timezone-aware UTC datetimes, anything rarer as its text.

Errors: what a user's setup causes (pymongo not installed, a bad URI, no database named,
an unreachable server, refused credentials) is a `TunelabError`; the URI's password never
appears in a message. What a query causes is a `LiveQueryError`, a subclass of
`UnsupportedQuery` so that callers handle both executors alike: the server rejected it
(an unknown operator, bad arguments), it ran past `query_timeout_ms`, or it writes
(`$out`, `$merge`): those are refused before anything is sent, so only reads ever reach the
server. A gold query that fails this way is "execution not possible"; a predicted one is
not a match. Use a read-only database user all the same.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import unquote_plus

from tunelab.errors import TunelabError, usage_error
from tunelab.evals.mongo.executor import read_path
from tunelab.evals.mongo.syntax import MongoQuery, ObjectId, Regex, SubQuery
from tunelab.evals.mongo.values import UnsupportedQuery

__all__ = ["LiveDatabase", "LiveQueryError"]

_METHODS = frozenset({"find", "count", "distinct", "aggregate"})
_WRITING_STAGES = frozenset({"$out", "$merge"})
_EMPTY_HINT = (
    "Check --mongo-db (or the database in the URI): on an empty database every "
    "query returns nothing, and would match."
)
_UNREACHABLE_HINT = "Check that the server is running and that --mongo-uri names its host and port."


class LiveQueryError(UnsupportedQuery):
    """MongoDB gave no result for the query (it rejected it, or it timed out), or tunelab
    refused to send it because it writes. `name` is what failed: "mongodb", "timeout", or
    the writing stage."""

    def __init__(self, message: str, name: str = "mongodb") -> None:
        super().__init__(name, message)


class LiveDatabase:
    """One MongoDB database that parsed queries run on, read-only."""

    def __init__(self, database, *, query_timeout_ms: int = 30_000) -> None:
        self._pymongo = _require_pymongo()
        self.database = database
        self.query_timeout_ms = query_timeout_ms
        self._client = None  # set by connect(), which owns the client it opens

    @classmethod
    def connect(
        cls,
        uri: str,
        database: str | None = None,
        timeout_ms: int = 5000,
        *,
        query_timeout_ms: int = 30_000,
    ) -> LiveDatabase:
        """Connect and check that the server answers and the database has collections.

        `database` defaults to the URI's path (`mongodb://host/NAME`). `timeout_ms` bounds
        finding and connecting to the server; `query_timeout_ms` each query.
        """
        pymongo = _require_pymongo()
        shown, password = _redacted(uri)
        try:
            client = pymongo.MongoClient(
                uri,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                tz_aware=True,
                appname="tunelab",
            )
        except (pymongo.errors.PyMongoError, ValueError, TypeError) as err:
            raise usage_error(
                "invalid_mongo_uri",
                f"{shown} is not a usable MongoDB URI: {_scrubbed(err, password)}",
                hint="mongodb://[user:password@]host[:port]/database",
            ) from None
        try:
            live = cls(_database(client, database, shown), query_timeout_ms=query_timeout_ms)
            live._client = client
            live._check_reachable(shown, password, timeout_ms)
        except BaseException:
            client.close()
            raise
        return live

    def _check_reachable(self, shown: str, password: str, timeout_ms: int) -> None:
        errors = self._pymongo.errors
        try:
            self.database.client.admin.command("ping")
            has_collections = bool(self.database.list_collection_names())
        except errors.OperationFailure as err:
            raise TunelabError(
                "mongo_auth_failed",
                f"MongoDB at {shown} refused: {_scrubbed(_server_message(err), password)}",
                hint="Check the user, password and authSource in --mongo-uri, "
                "and that the user may read the database.",
            ) from None
        except errors.PyMongoError as err:
            raise TunelabError(
                "mongo_unreachable",
                f"no answer from MongoDB at {shown} within "
                f"{timeout_ms} ms: {_scrubbed(_short(err), password)}",
                hint=_UNREACHABLE_HINT,
            ) from None
        if not has_collections:
            raise TunelabError(
                "mongo_db_empty",
                f"database {self.database.name!r} at {shown} has no collections.",
                hint=_EMPTY_HINT,
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> LiveDatabase:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def execute(self, query: MongoQuery) -> list[dict] | int | list:
        """The query's result, shaped as `executor.execute` shapes it."""
        stage = _writing_stage(SubQuery(query))
        if stage is not None:
            raise LiveQueryError(f"{stage} writes to the database; only reads are run", stage)
        return _plain(self._run(query))

    def _run(self, query: MongoQuery):
        """The result as pymongo gives it: sub-queries need the raw BSON values (an
        ObjectId read from one must stay an ObjectId to match anything)."""
        if query.collection is None:
            raise UnsupportedQuery("collection", "the query names no collection")
        if query.method not in _METHODS:
            raise UnsupportedQuery(query.method)
        import bson  # ships with pymongo, an optional extra

        try:
            with self._pymongo.timeout(self.query_timeout_ms / 1000):
                return self._send(query)
        except (self._pymongo.errors.PyMongoError, bson.errors.BSONError, OverflowError) as err:
            raise self._query_error(err) from None

    def _send(self, query: MongoQuery):
        collection = self.database[query.collection]
        if query.method == "aggregate":
            return list(collection.aggregate(self._bson(query.pipeline or [])))
        query_filter = self._bson(query.filter or {})
        if query.method == "distinct":
            return collection.distinct(query.distinct_field, query_filter)
        # As in executor, a limit (or skip) of 0 is no limit (none skipped).
        window = {
            name: value for name, value in (("skip", query.skip), ("limit", query.limit)) if value
        }
        if query.method == "count":
            return collection.count_documents(query_filter, **window)
        projection = self._bson(query.projection) or None  # {} keeps every field
        return list(collection.find(query_filter, projection, sort=query.sort or None, **window))

    def _bson(self, value):
        """`value` with sub-queries run and the parser's values made BSON ones."""
        import bson  # the optional `mongo` extra

        if isinstance(value, SubQuery):
            return read_path(self._run(value.query), value.path)
        if isinstance(value, dict):
            return {key: self._bson(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._bson(item) for item in value]
        if isinstance(value, ObjectId):
            return bson.ObjectId(value.hex)
        if isinstance(value, Regex):
            return bson.Regex(value.pattern, value.flags)
        if isinstance(value, datetime) and value.tzinfo is not None:
            # BSON dates are UTC; naive UTC is what the server stores, and what mongomock
            # can compare with the naive datetimes it holds.
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def _query_error(self, err: Exception) -> Exception:
        errors = self._pymongo.errors
        lost = isinstance(err, errors.ConnectionFailure) and not err.timeout
        if lost or isinstance(err, errors.ServerSelectionTimeoutError):
            return TunelabError(
                "mongo_unreachable", f"lost MongoDB: {_short(err)}", hint=_UNREACHABLE_HINT
            )
        if getattr(err, "timeout", False):
            return LiveQueryError(f"no result within {self.query_timeout_ms} ms", "timeout")
        return LiveQueryError(_server_message(err))


def _require_pymongo():
    try:
        import pymongo  # the optional `mongo` extra
    except ImportError:
        raise TunelabError(
            "missing_dependency",
            "Running queries on MongoDB needs pymongo, which is not installed.",
            hint="pip install 'tunelab[mongo]'",
        ) from None
    return pymongo


def _database(client, name: str | None, shown: str):
    """The database named, or else the URI's."""
    import pymongo  # the optional `mongo` extra

    if not name:
        try:
            return client.get_default_database()
        except pymongo.errors.ConfigurationError:
            raise usage_error(
                "mongo_db_missing",
                f"{shown} names no database.",
                hint="Give --mongo-db NAME, or end the URI with /NAME.",
            ) from None
    try:
        return client[name]
    except pymongo.errors.InvalidName as err:
        raise usage_error(
            "invalid_mongo_db",
            f"{name!r} is not a database name: {err}",
            hint="Give --mongo-db a name without spaces, dots, slashes or $.",
        ) from None


def _writing_stage(value) -> str | None:
    """The first `$out` or `$merge` anywhere in the query, its sub-queries included."""
    if isinstance(value, SubQuery):
        value = [value.query.filter, value.query.projection, value.query.pipeline]
    if isinstance(value, dict):
        if _WRITING_STAGES & value.keys():
            return min(_WRITING_STAGES & value.keys())
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            if (stage := _writing_stage(item)) is not None:
                return stage
    return None


def _plain(value):
    import bson  # the optional `mongo` extra

    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return int(value)  # bson's Int64 too
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bson.Decimal128):
        return float(value.to_decimal())
    return str(value)  # ObjectId as its hex; rarer BSON types as text, which compares


def _redacted(uri: str) -> tuple[str, str]:
    """The URI to show (password masked, options dropped), and the password to scrub."""
    match = re.match(r"([^:/?#]+://)(.*)@(.*)", uri, re.DOTALL)  # the last @ ends userinfo
    if match is None:
        return uri.split("?", 1)[0], ""
    scheme, userinfo, rest = match.groups()
    user, colon, password = userinfo.partition(":")
    return f"{scheme}{user}{':***' if colon else ''}@{rest.split('?', 1)[0]}", password


def _scrubbed(message, password: str) -> str:
    message = str(message)
    for secret in {password, unquote_plus(password)} - {""}:
        message = message.replace(secret, "***")
    return message


def _server_message(err: Exception) -> str:
    details = getattr(err, "details", None)
    return (details or {}).get("errmsg") or str(err)


def _short(err: Exception) -> str:
    """pymongo's message without the timeouts and topology it appends."""
    return re.split(r" \(configured timeouts|, Timeout: ", str(err), maxsplit=1)[0]
