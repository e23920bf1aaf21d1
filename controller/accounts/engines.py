"""The two engines an account's store runs on, and all that differs between them: SQLite, a file beside
config.yaml (the default: nothing to install or run), and PostgreSQL, a server that controllers on several
machines share. ``store.py`` writes its SQL once, with ``?`` for parameters; an engine says how it connects, how
its tables are made, and the few words its SQL spells otherwise."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

# A write that finds the store locked (another process's transaction) waits this long before it fails and is
# retried later: the ledger's thread waits, never the event loop.
BUSY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5

# The tables, in each engine's words for {id} (a row's own number), {seq} (an ever-growing one) and {real}.
TABLES = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per process that served on this store: a restart is a new life. ``written``: up to when its
    # records are in the store (its last write's snapshot), four times a second while it runs: another process's
    # question waits for it to pass the moment it was asked.
    "CREATE TABLE lives (id {id}, host TEXT NOT NULL, pid BIGINT NOT NULL, started {real} NOT NULL,"
    " stopped {real}, written {real})",
    "CREATE TABLE connections (id BIGINT PRIMARY KEY, life BIGINT NOT NULL, switch TEXT, peer TEXT NOT NULL,"
    " alpn TEXT, tls_version TEXT, via TEXT, cleartext INTEGER NOT NULL, http_version TEXT,"
    " opened_at TEXT NOT NULL, closed_at TEXT, hello {real}, opened {real} NOT NULL, closed {real},"
    " streams BIGINT NOT NULL, in_flight BIGINT NOT NULL, peak_in_flight BIGINT NOT NULL, closed_for TEXT,"
    " hello_turn BIGINT, done_turn BIGINT, upstream TEXT NOT NULL, proxy_number TEXT, from_trusted_proxy INTEGER)",
    # In the order they ended ({seq}): retention drops from the front.
    "CREATE TABLE streams ({seq}connection BIGINT NOT NULL, number BIGINT NOT NULL, stream_id BIGINT,"
    " path TEXT NOT NULL, query TEXT NOT NULL, started {real} NOT NULL, ended {real} NOT NULL, answered {real},"
    " loop_lag {real}, refused TEXT)",
    "CREATE INDEX streams_by_connection ON streams (connection)",
    # Exact, whatever retention has dropped: added to, never recounted.
    "CREATE TABLE switch_totals (switch TEXT PRIMARY KEY, connections BIGINT NOT NULL, streams BIGINT NOT NULL,"
    " peak_in_flight BIGINT NOT NULL)",
)
# Schema 2: what retention looks up (``Store._prune``, every few seconds in every process), found without reading
# every row. A million streams read end to end took 130-160 ms of CPU each time, the write lock held throughout.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS streams_by_end ON streams (ended)",
    "CREATE INDEX IF NOT EXISTS connections_by_close ON connections (closed)",
)
OURS = ("meta", "lives", "connections", "streams", "switch_totals")


Rows = Sequence[Sequence[object]]  # a table's rows, each its columns' values in their order


class Cursor(Protocol):
    description: Any
    rowcount: int

    def fetchone(self) -> Any: ...  # noqa: ANN401 - a row of any columns

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...  # noqa: ANN401

    def executemany(self, sql: str, rows: Any) -> Any: ...  # noqa: ANN401


class Connection(Protocol):
    """What both drivers' connections have (DB-API, in autocommit: ``store.py`` says BEGIN and COMMIT)."""

    def execute(self, sql: str, args: Any = ...) -> Cursor: ...  # noqa: ANN401

    def cursor(self) -> Cursor: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Engine:
    location: str  # as the log and `account show` name it (a URL without its password)
    begin_write: str  # the BEGIN that takes the write lock at once (SQLite: else two writers deadlock)
    greatest: str  # the larger of two values
    seq: str  # the streams' order of arrival
    errors: tuple[type[Exception], ...]  # what a failed statement raises

    def connect(self) -> Connection:
        raise NotImplementedError

    def sql(self, text: str) -> str:
        return text

    def insert(self, db: Connection, table: str, columns: str, rows: Rows, then: str = "") -> None:
        """``rows`` into ``table``'s ``columns`` (in their order), with ``then`` (an ON CONFLICT clause) after."""
        marks = ", ".join("?" for _ in columns.split(","))  # as many as the columns
        db.cursor().executemany(self.sql(f"INSERT INTO {table} ({columns}) VALUES ({marks}){then}"), rows)

    def tables(self) -> list[str]:
        """The statements that make an empty store, of the newest schema."""
        raise NotImplementedError

    def indexes(self) -> list[str]:
        """The statements that make schema 2's indexes (each one only if it is not there)."""
        return list(INDEXES)

    def lock_schema(self, db: Connection) -> None:
        """In a write transaction, before the schema's version is read: one process at a time migrates."""

    def made(self, db: Connection) -> tuple[bool, bool]:
        """Whether the store's tables are made, and whether any table is there (an SQLite file of someone
        else's, if they are not)."""
        raise NotImplementedError

    def bytes_on_disk(self, db: Connection) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class SQLite(Engine):
    path: Path = Path()

    def connect(self) -> Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL: a commit is not synced, a checkpoint is; a power cut loses at most the last commits,
        # never the file.
        db.execute("PRAGMA synchronous=NORMAL")
        return db  # type: ignore[return-value]

    def insert(self, db: Connection, table: str, columns: str, rows: Rows, then: str = "") -> None:
        """As one statement over the rows as one JSON array, not ``executemany``: Python's sqlite3 binds each row
        holding the GIL and steps it without, so a batch of 700 rows handed the GIL to and from the serving
        thread 700 times; this binds one text, and SQLite reads the rows from it without the GIL. (JSON holds
        what the rows hold: integers, floats, which round-trip exactly, text and null.)"""
        if not rows:
            return
        values = ", ".join(f"json_extract(value, '$[{index}]')" for index in range(len(columns.split(","))))
        # WHERE true: where an upsert follows, SQLite would read ON as a join's (its INSERT page, "parsing ambiguity")
        sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM json_each(?) WHERE true{then}"
        db.execute(sql, (json.dumps(rows, allow_nan=False),))

    def tables(self) -> list[str]:
        words = {"id": "INTEGER PRIMARY KEY", "seq": "", "real": "REAL"}
        return [table.format(**words) for table in TABLES] + self.indexes()

    def made(self, db: Connection) -> tuple[bool, bool]:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        return "meta" in names, bool(names)

    def bytes_on_disk(self, db: Connection) -> int:
        return sum(path.stat().st_size for path in (self.path, Path(f"{self.path}-wal")) if path.exists())


@dataclass(frozen=True)
class PostgreSQL(Engine):
    url: str = ""

    def connect(self) -> Connection:
        import psycopg  # only a PostgreSQL account needs it

        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)  # type: ignore[return-value]

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def tables(self) -> list[str]:
        words = {
            "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            "seq": "seq BIGSERIAL, ",
            "real": "DOUBLE PRECISION",
        }
        return [table.format(**words) for table in TABLES] + self.indexes()

    def indexes(self) -> list[str]:
        # SQLite's rowid is its table's own order; PostgreSQL's seq is a column: without an index its max() and
        # the front of the table are found by reading all of it.
        return [*INDEXES, "CREATE UNIQUE INDEX IF NOT EXISTS streams_by_seq ON streams (seq)"]

    def lock_schema(self, db: Connection) -> None:
        # BEGIN takes no lock here (SQLite's BEGIN IMMEDIATE does): two replicas starting together would both
        # make the same index, and one of them fail.
        db.execute("LOCK TABLE meta IN EXCLUSIVE MODE")

    def made(self, db: Connection) -> tuple[bool, bool]:
        (made,) = db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
        return bool(made), False  # a database holds other things too: only ours are looked at

    def bytes_on_disk(self, db: Connection) -> int:
        (size,) = db.execute(
            "SELECT sum(pg_total_relation_size(to_regclass(name))) FROM unnest(%s::text[]) AS name", (list(OURS),)
        ).fetchone()
        return int(size or 0)


def engine_of(location: Path | str) -> Engine:
    """The engine of ``controller.account``: a PostgreSQL URL, or an SQLite file."""
    if isinstance(location, str):
        import psycopg

        return PostgreSQL(_shown(location), "BEGIN", "GREATEST", "seq", (psycopg.Error,), url=location)
    return SQLite(str(location), "BEGIN IMMEDIATE", "max", "rowid", (sqlite3.Error,), path=location)


def _shown(url: str) -> str:
    """``url`` without its password, for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
