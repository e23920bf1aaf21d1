"""The account's store: its tables and their version, and the reads and writes of them, on either engine
(``engines.py``: an SQLite file by default, or PostgreSQL for controllers on several machines).

Everything here is synchronous DB-API on one connection (``Store``): the writes run on the ledger's own thread
and the reads on another (``controller/accounts/ledger.py``), so that a slow, locked or distant store never
holds the event loop. (SQLite in WAL mode: a reader never waits for the writer, nor the writer for it.)

Times are stored as wall-clock seconds (Unix time), so that they mean the same in every process, on every
machine and after a restart; each process turns its monotonic readings into them with one offset taken at its
start (``Clock``), so that the intervals between them stay exact.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.accounts.engines import Connection, Cursor, Engine, engine_of
from dialout.config import Retention
from dialout.errors import DialoutError
from dialout.pages import Page

# What retention drops, each found by an index (schema 2): closed connections too old or beyond the count, and
# streams too old or beyond theirs ({seq}: the engine's word for the streams' order).
PRUNE_CONNECTIONS = (
    "DELETE FROM connections WHERE closed IS NOT NULL AND (closed < ? OR id <= "
    "(SELECT id FROM connections ORDER BY id DESC LIMIT 1 OFFSET ?))"
)
PRUNE_STREAMS = "DELETE FROM streams WHERE ended < ? OR {seq} <= (SELECT max({seq}) FROM streams) - ?"
SCHEMA_VERSION = 2  # 2: the indexes retention looks up (engines.INDEXES)
# A connection's ``closed_for`` when its process was killed and the next one closed it: its record is as that
# process last wrote it (the switch's cross-check does not hold it to that).
CONTROLLER_GONE = "controller_gone"
# Connection ids are handed to each process in blocks, so that processes on one store never give two connections
# the same number, and no connection waits for the store to get one.
ID_BLOCK = 1024
# A life not stopped that wrote nothing for this long ended without stopping (its machine is gone, say): the
# next life to start closes what it left open. (A life on this machine whose process is gone is closed at once.)
SILENT_LIFE_S = 60.0

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


@dataclass(frozen=True)
class Ended:
    """A life that ended without stopping (killed, or its machine lost): its connections left open were closed in
    the account as of its last record."""

    life: int
    pid: int
    connections: int


class Store:
    """One connection to the account's store, its schema made (``create``) or checked: a store of a newer
    dialout, or an SQLite file that is not an account, is refused in one line."""

    def __init__(self, location: Path | str, *, create: bool) -> None:
        self.engine: Engine = engine_of(location)
        self.location = self.engine.location
        self.errors = self.engine.errors
        if not create and isinstance(location, Path) and not location.exists():
            raise StoreError(f"no account at {location}: the controller makes it when it first serves")
        try:
            self._db: Connection = self.engine.connect()
            self._migrate()
        except self.errors as exc:
            raise StoreError(f"cannot use {self.location} as the account (controller.account): {_said(exc)}") from exc

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: Sequence[object] = ()) -> Cursor:
        return self._db.execute(self.engine.sql(sql), args)

    def _transaction(self) -> _Transaction:
        """A transaction that takes the write lock at once: every one here writes."""
        return _Transaction(self, self.engine.begin_write)

    def _migrate(self) -> None:
        """Make the tables of an empty store, or check the version of a made one."""
        with self._transaction():
            made, others = self.engine.made(self._db)
            if not made:
                if others:
                    raise StoreError(
                        f"{self.location} is an SQLite database, but not a dialout account: name another file"
                    )
                for statement in self.engine.tables():
                    self._run(statement)
                self._run("INSERT INTO meta VALUES ('schema', ?), ('next_connection', '1')", (str(SCHEMA_VERSION),))
                return
            self.engine.lock_schema(self._db)
            row = self._run("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.location} holds an account of schema {version}, made by a newer dialout (this one reads "
                    f"up to {SCHEMA_VERSION}): run that dialout, or name another store as controller.account"
                )
            # Older versions migrate here, one step each, in the transaction that read the version.
            if version < 2:  # 1 -> 2: indexes only (made once, in a second or so for a million streams)
                for statement in self.engine.indexes():
                    self._run(statement)
            if version < SCHEMA_VERSION:
                self._run("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    # -- lives

    def begin_life(self) -> tuple[int, list[Ended]]:
        """Record this process's start: its life's number, and the lives that ended without stopping (of this
        host, whose process is gone; of any, silent for ``SILENT_LIFE_S``), now closed."""
        host, now = socket.gethostname(), time.time()
        with self._transaction():
            ended = [self._close_life(life, pid) for life, pid in self._gone(host, now)]
            (life,) = self._run(
                "INSERT INTO lives (host, pid, started, written) VALUES (?, ?, ?, ?) RETURNING id",
                (host, os.getpid(), now, now),
            ).fetchall()[0]  # all of it: a statement still stepping would hold the COMMIT
        return int(life), ended

    def _gone(self, host: str, now: float) -> list[tuple[int, int]]:
        found = []
        for life, pid, where, written in self._run(
            "SELECT id, pid, host, written FROM lives WHERE stopped IS NULL"
        ).fetchall():
            if where != host:
                if written is not None and written < now - SILENT_LIFE_S:
                    found.append((life, pid))
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                found.append((life, pid))
            except PermissionError:
                pass  # someone else's process by that number: running
        return found

    def _close_life(self, life: int, pid: int) -> Ended:
        """Close what life ``life`` left open, as of the last time it wrote anything."""
        greatest = self.engine.greatest
        (last,) = self._run(
            f"SELECT {greatest}(coalesce(written, started), coalesce((SELECT max(opened) FROM connections"
            " WHERE life = ?), 0)) FROM lives WHERE id = ?",
            (life, life),
        ).fetchone()
        at = datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat(timespec="milliseconds")
        closed = self._run(
            "UPDATE connections SET closed = ?, closed_at = ?, in_flight = 0, closed_for = ? WHERE life = ?"
            " AND closed IS NULL",
            (last, at, CONTROLLER_GONE, life),
        ).rowcount
        self._run("UPDATE lives SET stopped = ? WHERE id = ?", (last, life))
        return Ended(life, pid, closed)

    def end_life(self, life: int, unused: range) -> None:
        """Record this process's stop, and give back the ids ``unused`` if no process reserved any after them (a
        restart then numbers on from the last connection, not from the next block)."""
        with self._transaction():
            self._run("UPDATE lives SET stopped = ? WHERE id = ?", (time.time(), life))
            self._run(
                "UPDATE meta SET value = ? WHERE key = 'next_connection' AND value = ?",
                (str(unused.start), str(unused.stop)),
            )

    def reserve_ids(self) -> range:
        """The next ``ID_BLOCK`` connection ids, this process's alone."""
        with self._transaction():
            (end,) = self._run(
                "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + ? AS TEXT) WHERE key = 'next_connection'"
                " RETURNING CAST(value AS BIGINT)",
                (ID_BLOCK,),
            ).fetchall()[0]
        return range(int(end) - ID_BLOCK, int(end))

    # -- writes

    def write(self, batch: Batch, retention: Retention | None) -> None:
        """One batch in one transaction, and then what ``retention`` drops, if given."""
        updates = ", ".join(f"{name} = excluded.{name}" for name in _names(CONNECTION_COLUMNS)[1:])
        greatest = self.engine.greatest
        with self._transaction():
            self._run("UPDATE lives SET written = ? WHERE id = ?", (batch.taken, batch.life))
            insert = self.engine.insert
            insert(
                self._db,
                "connections",
                CONNECTION_COLUMNS,
                batch.connections,
                f" ON CONFLICT (id) DO UPDATE SET {updates}",
            )
            insert(self._db, "streams", STREAM_COLUMNS, batch.streams)
            insert(
                self._db,
                "switch_totals",
                "switch, connections, streams, peak_in_flight",
                [dataclasses.astuple(row) for row in batch.totals],
                " ON CONFLICT (switch) DO UPDATE SET"
                " connections = switch_totals.connections + excluded.connections,"
                " streams = switch_totals.streams + excluded.streams,"
                f" peak_in_flight = {greatest}(switch_totals.peak_in_flight, excluded.peak_in_flight)",
            )
            if retention is not None:
                self._prune(retention, time.time())

    def _prune(self, retention: Retention, now: float) -> int:
        """Drop what ``retention`` does not keep, oldest first: the rows dropped. (In the caller's transaction.)"""
        cutoff = now - retention.max_age_s
        dropped = self._run(PRUNE_CONNECTIONS, (cutoff, retention.max_connections)).rowcount
        dropped += self._run(PRUNE_STREAMS.format(seq=self.engine.seq), (cutoff, retention.max_streams)).rowcount
        return int(dropped)

    def prune(self, retention: Retention) -> int:
        with self._transaction():
            return self._prune(retention, time.time())

    # -- reads

    def size(self) -> Size:
        (schema,) = self._run("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema'").fetchone()
        tables = ("lives", "connections", "streams")
        lives, connections, streams = (
            int(self._run(f"SELECT count(*) FROM {table}").fetchone()[0]) for table in tables
        )
        oldest, newest = self._run("SELECT min(opened), max(opened) FROM connections").fetchone()
        on_disk = self.engine.bytes_on_disk(self._db)
        return Size(self.location, int(schema), on_disk, lives, connections, streams, oldest, newest)

    def export(self) -> Iterator[str]:
        """Every record as one JSON document, in pieces (a store of a million streams is not built in memory):
        ``schema``, ``lives``, ``switches`` (the exact totals), ``connections`` and ``streams``, each row an object
        of its columns, times in wall-clock seconds."""
        (schema,) = self._run("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema'").fetchone()
        yield f'{{"schema": {schema}'
        tables = (
            ("lives", "SELECT id, host, pid, started, stopped, written FROM lives ORDER BY id"),
            ("switches", "SELECT * FROM switch_totals ORDER BY switch"),
            ("connections", f"SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY id"),
            ("streams", f"SELECT {STREAM_COLUMNS} FROM streams ORDER BY {self.engine.seq}"),
        )
        for name, query in tables:
            cursor = self._run(query)
            columns = [column[0] for column in cursor.description]
            yield f', "{name}": ['
            for index, row in enumerate(cursor):
                yield ("" if index == 0 else ", ") + json.dumps(dict(zip(columns, row, strict=True)))
            yield "]"
        yield "}"

    def connection_rows(self, switch: str | None, limit: int, closed_since: float | None = None) -> list[ConnectionRow]:
        """The latest ``limit`` connections (of ``switch``; open, or closed after ``closed_since``), oldest first."""
        where, args = _where(("switch = ?", switch), ("(closed IS NULL OR closed >= ?)", closed_since))
        rows: list[ConnectionRow] = self._run(
            f"SELECT {CONNECTION_COLUMNS} FROM connections{where} ORDER BY id DESC LIMIT ?", (*args, limit)
        ).fetchall()
        rows.reverse()
        return rows

    def stream_rows(self, connections: Sequence[int] | None, limit: int) -> list[StreamRow]:
        """The latest ``limit`` ended streams (of ``connections``), in the order they ended."""
        if connections is not None and not connections:
            return []
        where = f" WHERE connection IN ({', '.join('?' * len(connections))})" if connections is not None else ""
        rows: list[StreamRow] = self._run(
            f"SELECT {STREAM_COLUMNS} FROM streams{where} ORDER BY {self.engine.seq} DESC LIMIT ?",
            (*(connections or ()), limit),
        ).fetchall()
        rows.reverse()
        return rows

    def switch_rows(self) -> list[SwitchRow]:
        return [SwitchRow(*row) for row in self._run("SELECT * FROM switch_totals ORDER BY switch").fetchall()]

    def behind(self, life: int, moment: float, alive_within_s: float) -> int:
        """How many other running lives have not yet written their records up to ``moment`` (wall-clock); a life
        that wrote nothing for ``alive_within_s`` is not waited for (it hangs, or died without stopping)."""
        (count,) = self._run(
            "SELECT count(*) FROM lives WHERE id != ? AND stopped IS NULL AND written < ? AND written > ?",
            (life, moment, moment - alive_within_s),
        ).fetchone()
        return int(count)


class _Transaction:
    """``BEGIN`` ... ``COMMIT`` (``ROLLBACK`` on error) on a connection in autocommit mode."""

    def __init__(self, store: Store, begin: str) -> None:
        self._store, self._begin = store, begin

    def __enter__(self) -> None:
        self._store._run(self._begin)

    def __exit__(self, kind: object, *_: object) -> None:
        self._store._run("COMMIT" if kind is None else "ROLLBACK")


def _said(exc: Exception) -> str:
    """A driver's error in one line (psycopg's may run to several)."""
    return " ".join(str(exc).split())


def _where(*conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
    used = [(clause, value) for clause, value in conditions if value is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(clause for clause, _ in used), tuple(value for _, value in used)


def _names(columns: str) -> list[str]:
    return [name.strip() for name in columns.split(",")]
