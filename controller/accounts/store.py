"""The account on disk: an SQLite file (WAL), its tables and their version, and the reads and writes of them.

Everything here is synchronous DB-API on one ``sqlite3`` connection: the writes run on the ledger's own thread
(``controller/accounts/ledger.py``), so that a slow or locked store never holds the event loop; the reads run on
whichever thread opened their own connection (WAL: a reader never waits for the writer, nor the writer for it).

Times are stored as wall-clock seconds (Unix time), so that they mean the same in every process and after a
restart; each process turns its monotonic readings into them with one offset taken at its start (``Clock``), so
that the intervals between them stay exact.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dialout.config import Retention
from dialout.errors import DialoutError
from dialout.pages import Page

SCHEMA_VERSION = 1
# Connection ids are handed to each process in blocks, so that processes on one store never give two connections
# the same number, and no connection waits for the store to get one.
ID_BLOCK = 1024
# A write that finds the file locked (another process's transaction) waits this long before it fails and is retried
# later: the ledger's thread waits, never the event loop.
BUSY_TIMEOUT_S = 5.0

_TABLES = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per process that served on this store: a restart is a new life.
    # ``written``: up to when its records are in the store (its last write's snapshot), four times a second while
    # it runs: another process's question waits for it to pass the moment it was asked.
    "CREATE TABLE lives (id INTEGER PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL,"
    " stopped REAL, written REAL)",
    "CREATE TABLE connections (id INTEGER PRIMARY KEY, life INTEGER NOT NULL, switch TEXT, peer TEXT NOT NULL,"
    " alpn TEXT, tls_version TEXT, via TEXT, cleartext INTEGER NOT NULL, http_version TEXT, opened_at TEXT NOT NULL,"
    " closed_at TEXT, hello REAL, opened REAL NOT NULL, closed REAL, streams INTEGER NOT NULL,"
    " in_flight INTEGER NOT NULL, peak_in_flight INTEGER NOT NULL, closed_for TEXT, hello_turn INTEGER,"
    " done_turn INTEGER, upstream TEXT NOT NULL, proxy_number TEXT, from_trusted_proxy INTEGER)",
    # In the order they ended (rowid): retention drops from the front.
    "CREATE TABLE streams (connection INTEGER NOT NULL, number INTEGER NOT NULL, stream_id INTEGER,"
    " path TEXT NOT NULL, query TEXT NOT NULL, started REAL NOT NULL, ended REAL NOT NULL, answered REAL,"
    " loop_lag REAL, refused TEXT)",
    "CREATE INDEX streams_by_connection ON streams (connection)",
    # Exact, whatever retention has dropped: added to, never recounted.
    "CREATE TABLE switch_totals (switch TEXT PRIMARY KEY, connections INTEGER NOT NULL, streams INTEGER NOT NULL,"
    " peak_in_flight INTEGER NOT NULL)",
)

CONNECTION_COLUMNS = (
    "id, life, switch, peer, alpn, tls_version, via, cleartext, http_version, opened_at, closed_at, hello, opened,"
    " closed, streams, in_flight, peak_in_flight, closed_for, hello_turn, done_turn, upstream, proxy_number,"
    " from_trusted_proxy"
)
STREAM_COLUMNS = "connection, number, stream_id, path, query, started, ended, answered, loop_lag, refused"

# One connection's row, and one ended stream's, in the columns' order.
ConnectionRow = tuple[
    int,
    int,
    str | None,
    str,
    str | None,
    str | None,
    str | None,
    int,
    str | None,
    str,
    str | None,
    float | None,
    float,
    float | None,
    int,
    int,
    int,
    str | None,
    int | None,
    int | None,
    str,
    str | None,
    int | None,
]
StreamRow = tuple[int, int, int | None, str, str, float, float, float | None, float | None, str | None]


class StoreError(DialoutError):
    """The account's store cannot be used: one line, exit 2."""

    page = Page.ACCOUNT


@dataclass(frozen=True)
class SwitchRow:
    switch: str
    connections: int
    streams: int
    peak_in_flight: int


@dataclass(frozen=True)
class Batch:
    """What one write puts in the store, in one transaction: connections new or changed since the last (the whole
    row: the last write of a row wins), the streams that ended, and what each switch's totals grew by; and up to
    when (wall-clock) the writing life's records are then written."""

    life: int
    taken: float
    connections: Sequence[ConnectionRow] = ()
    streams: Sequence[StreamRow] = ()
    totals: Sequence[SwitchRow] = ()  # increments, but peak_in_flight: the highest seen

    @property
    def rows(self) -> int:
        return len(self.connections) + len(self.streams)


@dataclass(frozen=True)
class Size:
    """What ``python -m controller account show`` says of a store."""

    location: str
    schema: int
    bytes_on_disk: int
    lives: int
    connections: int
    streams: int
    oldest: float | None  # wall-clock seconds: its oldest connection's opening
    newest: float | None


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """An open connection to the store at ``path``, its schema made (``create``) or checked: a store of a newer
    dialout, or a file that is not one, is refused in one line."""
    if not create and not path.exists():
        raise StoreError(f"no account at {path}: the controller makes it when it first serves (controller.account)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL: a commit is not synced, a checkpoint is; a power cut loses at most the last commits,
        # never the file.
        db.execute("PRAGMA synchronous=NORMAL")
        _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot use {path} as the account (controller.account): {exc}") from exc
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Make the tables of an empty store, or check the version of a made one."""
    with _transaction(db, immediate=True):
        (made,) = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'meta'").fetchone()
        if not made:
            (anything,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if anything:
                raise StoreError(f"{path} is an SQLite database, but not a dialout account: name another file")
            for statement in _TABLES:
                db.execute(statement)
            db.execute("INSERT INTO meta VALUES ('schema', ?), ('next_connection', '1')", (str(SCHEMA_VERSION),))
            return
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} holds an account of schema {version}, made by a newer dialout (this one reads up to "
            f"{SCHEMA_VERSION}): run that dialout, or name another file as controller.account"
        )
    # Older versions migrate here, one step each, when there are any.


class _transaction:
    """``BEGIN`` ... ``COMMIT`` (``ROLLBACK`` on error) on a connection in autocommit mode."""

    def __init__(self, db: sqlite3.Connection, immediate: bool = False) -> None:
        self._db, self._begin = db, "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> None:
        self._db.execute(self._begin)

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


@dataclass(frozen=True)
class Ended:
    """A life that ended without stopping (killed, or its machine lost power): its connections left open were
    closed in the account as of its last record."""

    life: int
    pid: int
    connections: int


def begin_life(db: sqlite3.Connection) -> tuple[int, list[Ended]]:
    """Record this process's start: its life's number, and the lives of this host that ended without stopping
    (their process is gone), now closed."""
    host = socket.gethostname()
    with _transaction(db, immediate=True):
        ended = [_close_life(db, life, pid) for life, pid in _gone(db, host)]
        now = time.time()
        cursor = db.execute(
            "INSERT INTO lives (host, pid, started, written) VALUES (?, ?, ?, ?)", (host, os.getpid(), now, now)
        )
    assert cursor.lastrowid is not None
    return cursor.lastrowid, ended


def _gone(db: sqlite3.Connection, host: str) -> list[tuple[int, int]]:
    """This host's lives not stopped whose process is not running."""
    found = []
    for life, pid in db.execute("SELECT id, pid FROM lives WHERE stopped IS NULL AND host = ?", (host,)).fetchall():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            found.append((life, pid))
        except PermissionError:
            pass  # someone else's process by that number: running
    return found


def _close_life(db: sqlite3.Connection, life: int, pid: int) -> Ended:
    """Close what life ``life`` left open, as of the last time it wrote anything."""
    (last,) = db.execute(
        "SELECT max(coalesce(max(s.ended), 0), coalesce(max(c.opened), 0), l.started) FROM lives l"
        " LEFT JOIN connections c ON c.life = l.id LEFT JOIN streams s ON s.connection = c.id WHERE l.id = ?",
        (life,),
    ).fetchone()
    at = datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat(timespec="milliseconds")
    closed = db.execute(
        "UPDATE connections SET closed = ?, closed_at = ?, in_flight = 0 WHERE life = ? AND closed IS NULL",
        (last, at, life),
    ).rowcount
    db.execute("UPDATE lives SET stopped = ? WHERE id = ?", (last, life))
    return Ended(life, pid, closed)


def end_life(db: sqlite3.Connection, life: int, unused: range) -> None:
    """Record this process's stop, and give back the ids ``unused`` if no process reserved any after them (a
    restart then numbers on from the last connection, not from the next block)."""
    with _transaction(db, immediate=True):
        db.execute("UPDATE lives SET stopped = ? WHERE id = ?", (time.time(), life))
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'next_connection' AND value = ?",
            (str(unused.start), str(unused.stop)),
        )


def reserve_ids(db: sqlite3.Connection) -> range:
    """The next ``ID_BLOCK`` connection ids, this process's alone."""
    with _transaction(db, immediate=True):
        (first,) = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'next_connection'").fetchone()
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_connection'", (str(first + ID_BLOCK),))
    return range(first, first + ID_BLOCK)


def write(db: sqlite3.Connection, batch: Batch, retention: Retention | None) -> None:
    """One batch in one transaction, and then what ``retention`` drops, if given."""
    with _transaction(db, immediate=True):
        db.execute("UPDATE lives SET written = ? WHERE id = ?", (batch.taken, batch.life))
        db.executemany(
            f"INSERT OR REPLACE INTO connections ({CONNECTION_COLUMNS}) VALUES ({_marks(CONNECTION_COLUMNS)})",
            batch.connections,
        )
        db.executemany(f"INSERT INTO streams ({STREAM_COLUMNS}) VALUES ({_marks(STREAM_COLUMNS)})", batch.streams)
        db.executemany(
            "INSERT INTO switch_totals VALUES (?, ?, ?, ?) ON CONFLICT (switch) DO UPDATE SET"
            " connections = connections + excluded.connections, streams = streams + excluded.streams,"
            " peak_in_flight = max(peak_in_flight, excluded.peak_in_flight)",
            [dataclasses.astuple(row) for row in batch.totals],
        )
        if retention is not None:
            prune(db, retention, time.time())


def prune(db: sqlite3.Connection, retention: Retention, now: float) -> int:
    """Drop what ``retention`` does not keep, oldest first: the rows dropped. (In the caller's transaction.)"""
    cutoff = now - retention.max_age_s
    dropped = db.execute(
        "DELETE FROM connections WHERE closed IS NOT NULL AND (closed < ? OR id <= "
        "(SELECT id FROM connections ORDER BY id DESC LIMIT 1 OFFSET ?))",
        (cutoff, retention.max_connections),
    ).rowcount
    dropped += db.execute(
        "DELETE FROM streams WHERE ended < ? OR rowid <= (SELECT max(rowid) FROM streams) - ?",
        (cutoff, retention.max_streams),
    ).rowcount
    return dropped


def prune_now(db: sqlite3.Connection, retention: Retention) -> int:
    with _transaction(db, immediate=True):
        return prune(db, retention, time.time())


def size(db: sqlite3.Connection, path: Path) -> Size:
    (schema,) = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema'").fetchone()
    tables = ("lives", "connections", "streams")
    lives, connections, streams = (db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables)
    oldest, newest = db.execute("SELECT min(opened), max(opened) FROM connections").fetchone()
    on_disk = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return Size(str(path), schema, on_disk, lives, connections, streams, oldest, newest)


def export(db: sqlite3.Connection) -> Iterator[str]:
    """Every record as one JSON document, in pieces (a store of a million streams is not built in memory):
    ``schema``, ``lives``, ``switches`` (the exact totals), ``connections`` and ``streams``, each row an object of
    its columns, times in wall-clock seconds."""
    (schema,) = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema'").fetchone()
    yield f'{{"schema": {schema}'
    tables = (
        ("lives", "SELECT * FROM lives ORDER BY id"),
        ("switches", "SELECT * FROM switch_totals ORDER BY switch"),
        ("connections", f"SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY id"),
        ("streams", f"SELECT {STREAM_COLUMNS} FROM streams ORDER BY rowid"),
    )
    for name, query in tables:
        cursor = db.execute(query)
        columns = [column[0] for column in cursor.description]
        yield f', "{name}": ['
        for index, row in enumerate(cursor):
            yield ("" if index == 0 else ", ") + json.dumps(dict(zip(columns, row, strict=True)))
        yield "]"
    yield "}"


def connection_rows(
    db: sqlite3.Connection, switch: str | None, limit: int, closed_since: float | None = None
) -> Iterable[ConnectionRow]:
    """The latest ``limit`` connections (of ``switch``; open, or closed after ``closed_since``), oldest first."""
    where, args = _where(("switch = ?", switch), ("(closed IS NULL OR closed >= ?)", closed_since))
    rows: list[ConnectionRow] = db.execute(
        f"SELECT {CONNECTION_COLUMNS} FROM connections{where} ORDER BY id DESC LIMIT ?", (*args, limit)
    ).fetchall()
    rows.reverse()
    return rows


def stream_rows(db: sqlite3.Connection, connections: Sequence[int] | None, limit: int) -> Iterable[StreamRow]:
    """The latest ``limit`` ended streams (of ``connections``), in the order they ended."""
    if connections is not None and not connections:
        return []
    where = f" WHERE connection IN ({', '.join('?' * len(connections))})" if connections is not None else ""
    rows: list[StreamRow] = db.execute(
        f"SELECT {STREAM_COLUMNS} FROM streams{where} ORDER BY rowid DESC LIMIT ?", (*(connections or ()), limit)
    ).fetchall()
    rows.reverse()
    return rows


def switch_rows(db: sqlite3.Connection) -> list[SwitchRow]:
    return [SwitchRow(*row) for row in db.execute("SELECT * FROM switch_totals ORDER BY switch")]


def behind(db: sqlite3.Connection, life: int, moment: float, alive_within_s: float) -> int:
    """How many other running lives have not yet written their records up to ``moment`` (wall-clock); a life
    that wrote nothing for ``alive_within_s`` is not waited for (it hangs, or died without stopping)."""
    (count,) = db.execute(
        "SELECT count(*) FROM lives WHERE id != ? AND stopped IS NULL AND written < ? AND written > ?",
        (life, moment, moment - alive_within_s),
    ).fetchone()
    return int(count)


def _where(*conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
    used = [(clause, value) for clause, value in conditions if value is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(clause for clause, _ in used), tuple(value for _, value in used)


def _marks(columns: str) -> str:
    return ", ".join("?" * len(columns.split(",")))
