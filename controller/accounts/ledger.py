"""The account kept in a store as the controller serves: what the registry records in memory, written in batches
off the serving path, and read back by everything asked after the fact (``/connections``, ``/diagnosis``,
``explain``, the switch's cross-check), so that it survives a restart and spans the processes on one store.

Writes: the registry marks a connection changed and hands over each stream that ended (a list append each: the
ping's whole cost); every ``FLUSH_S`` the ledger turns them into rows and one thread of its own writes them in one
transaction. A store that is slow or locked never delays a ping: the rows wait in memory (at most
``MAX_WAITING_ROWS``; beyond that the oldest streams are dropped and counted), the controller says so once, and
once when the store takes writes again with what was late and what was dropped.

Reads: a read first waits (at most ``READ_WAIT_S``) for what this process recorded to be written, so that a
question sees every answer given before it, then reads the store in pieces, letting the loop go between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from controller.accounts.connections import (
    DEFAULT_HISTORY,
    STREAM_HISTORY,
    ControllerConnection,
    StreamSpan,
    SwitchTotals,
)
from controller.accounts.store import ID_BLOCK, Batch, ConnectionRow, Store, StreamRow, SwitchRow
from dialout.config import Retention
from dialout.loop_lag import PERIOD_S, LagHistory, LoopLag
from dialout.refusals import Refusal
from dialout.text import Address, plural

logger = logging.getLogger(__name__)

FLUSH_S = 0.25  # a question waits at most about this for the latest answers; one transaction per this
PRUNE_S = 5.0  # retention is applied this often (each pass reads the table's oldest rows)
ALIVE_WITHIN_S = 2.0  # a process that wrote nothing for this long is not waited for by a question
MAX_WAITING_ROWS = 200_000  # rows held in memory while the store takes none: some 40 MB
READ_WAIT_S = 1.0  # a read waits this long for this process's latest rows, then reads what the store has
ROWS_PER_STEP = 2_000  # rows read between the points where a read lets the loop go (about 1 ms of work)


@dataclass(frozen=True)
class Clock:
    """This process's monotonic seconds as wall-clock seconds and back: one offset, taken once, so that the
    intervals between stored times are the monotonic clock's."""

    offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def wall(self, monotonic: float) -> float:
        return monotonic + self.offset

    def monotonic(self, wall: float) -> float:
        return wall - self.offset


@dataclass(frozen=True)
class Records:
    """The account as read back: connections (oldest first), their ended streams (in the order they ended), and
    each switch's totals, exact over every life of the store."""

    connections: list[ControllerConnection]
    spans: list[StreamSpan]
    totals: dict[str, SwitchTotals]


class Ledger:
    def __init__(self, location: Path | str, retention: Retention) -> None:
        """``location``: an SQLite file, or a PostgreSQL URL (``controller.account``)."""
        self.retention = retention
        self.clock = Clock()
        self._db = Store(location, create=True)
        self.path = self._db.location  # as the log names it
        self.life, ended = self._db.begin_life()
        for life in ended:
            left = (
                f"{plural(life.connections, 'connection')} it left open, closed as of its last record"
                if life.connections
                else "it left no connection open"
            )
            logger.warning("account: life %d (pid %d) ended without stopping: %s", life.life, life.pid, left)
        self._blocks = [self._db.reserve_ids()]  # connection ids this process may give, block by block
        self._next_id = self._blocks[0].start
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="account")
        # Reads on a thread and a connection of their own: they never wait for a write (SQLite's WAL), nor the
        # loop for a distant store (PostgreSQL).
        self._reader = Store(location, create=False)
        self._reading = ThreadPoolExecutor(1, thread_name_prefix="account-reads")
        self._changed: dict[int, ControllerConnection] = {}
        self._ended: list[StreamSpan] = []
        self._waiting = Batch(self.life, 0.0)  # rows a failed write left, written first next time
        self._pruned = -PRUNE_S  # when retention was last applied (monotonic): at the first write
        self._totals: dict[str, SwitchTotals] = {}
        self._written_totals: dict[str, tuple[int, int, int]] = {}
        self._writing: asyncio.Future[None] | None = None
        self._failing_since: float | None = None
        self.written_rows = 0
        self.dropped_rows = 0
        self.late_rows = 0
        self.failures = 0

    @property
    def waiting_rows(self) -> int:
        """Rows not yet written: recorded since the last write, and what failed writes left."""
        return len(self._changed) + len(self._ended) + self._waiting.rows

    # -- what the registry tells it, on the serving path: nothing but a note

    def next_id(self) -> int:
        """A connection id no other process on this store gives. (Should the store take no writes for a long while,
        this process's last block runs out, and it counts on past it: only another process could clash.)"""
        while len(self._blocks) > 1 and self._next_id >= self._blocks[0].stop:
            self._blocks.pop(0)
            self._next_id = self._blocks[0].start
        self._next_id += 1
        return self._next_id - 1

    def _ids_left(self) -> int:
        return sum(len(block) for block in self._blocks[1:]) + max(0, self._blocks[0].stop - self._next_id)

    def changed(self, connection: ControllerConnection) -> None:
        self._changed[connection.id] = connection

    def ended(self, span: StreamSpan) -> None:
        self._ended.append(span)
        self._changed[span.connection.id] = span.connection

    # -- the writes

    def count_totals_of(self, totals: dict[str, SwitchTotals]) -> None:
        """Whose totals to add to the store's: the registry's, exact since this process began."""
        self._totals = totals

    async def run(self) -> None:
        """Write every ``FLUSH_S`` until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    async def flush(self, retain: bool = False) -> None:
        """Write what was recorded up to now; a write already under way is waited for first. ``retain``: apply
        retention in the same transaction, due or not (it is every ``PRUNE_S``): at the last write of a life."""
        # Asked of the write itself, not of a flag its done-callback clears: that callback runs a turn after the
        # write is done, and awaiting a done future does not let the loop turn, so a flush that came in that turn
        # spun for ever (a controller deaf to everything, SIGTERM too).
        while self._writing is not None and not self._writing.done():
            await asyncio.shield(self._writing)
        # Written even when nothing changed: another process's question waits for this one to have written up
        # to the moment it was asked (``lives.written``).
        batch, need_ids = self._take(), self._ids_left() <= ID_REFILL
        # Kept until the write is done, not until this call is: a read that stops waiting (READ_WAIT_S) must not
        # let a second write begin beside this one.
        self._writing = writing = asyncio.get_running_loop().run_in_executor(
            self._thread, self._write, batch, need_ids, retain
        )
        await asyncio.shield(writing)

    def _take(self) -> Batch:
        """Rows of what changed since the last write, after what the last failed write left."""
        lags = LoopLag.of_running_loop().history() if self._ended else None
        connections = [self._connection_row(c) for c in self._changed.values()]
        streams = [self._stream_row(span, lags) for span in self._ended]
        self._changed, self._ended = {}, []
        waiting, self._waiting = self._waiting, Batch(self.life, 0.0)
        return Batch(
            self.life,
            self.clock.wall(time.monotonic()),
            [*waiting.connections, *connections],
            [*waiting.streams, *streams],
            [*waiting.totals, *self._grown()],
        )

    def _grown(self) -> list[SwitchRow]:
        grown = []
        for switch, now in self._totals.items():
            before = self._written_totals.get(switch, (0, 0, 0))
            if (now.connections, now.streams, now.peak_in_flight) != before:
                grown.append(
                    SwitchRow(switch, now.connections - before[0], now.streams - before[1], now.peak_in_flight)
                )
                self._written_totals[switch] = (now.connections, now.streams, now.peak_in_flight)
        return grown

    def _write(self, batch: Batch, need_ids: bool, retain: bool) -> None:
        """On the ledger's thread: the batch, and a block of ids when this process's runs low."""
        prune = retain or time.monotonic() - self._pruned >= PRUNE_S
        try:
            self._db.write(batch, self.retention if prune else None)
            if need_ids:
                self._blocks.append(self._db.reserve_ids())  # one append: whole, as the loop reads it
        except self._db.errors as exc:
            self._failed(batch, exc)
            return
        if prune:
            self._pruned = time.monotonic()
        self.written_rows += batch.rows
        if self._failing_since is not None:
            logger.warning(
                "account: writing to %s again after %.1f s: %s written late, %s dropped",
                self.path,
                time.monotonic() - self._failing_since,
                plural(batch.rows, "row"),
                plural(self.dropped_rows, "row"),
            )
            self.late_rows += batch.rows
            self._failing_since = None

    def _failed(self, batch: Batch, exc: Exception) -> None:
        self.failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning(
                "account: cannot write to %s (%s); serving on, holding up to %d rows to write when it can",
                self.path,
                exc,
                MAX_WAITING_ROWS,
            )
        over = batch.rows - MAX_WAITING_ROWS
        streams = batch.streams[over:] if over > 0 else batch.streams
        self.dropped_rows += len(batch.streams) - len(streams)
        latest = {row[0]: row for row in batch.connections}  # a connection's last row is all of it
        self._waiting = Batch(self.life, batch.taken, list(latest.values()), streams, _merged(batch.totals))

    def _connection_row(self, c: ControllerConnection) -> ConnectionRow:
        wall = self.clock.wall
        return (
            c.id,
            c.life or self.life,
            c.switch,
            str(c.peer),
            c.alpn,
            c.tls_version,
            c.via,
            int(c.cleartext),
            c.http_version,
            c.opened_at,
            c.closed_at,
            None if c.hello_at is None else wall(c.hello_at),
            wall(c.opened),
            None if c.closed is None else wall(c.closed),
            c.streams,
            c.in_flight,
            c.peak_in_flight,
            c.closed_for,
            c.hello_turn,
            c.done_turn,
            json.dumps(sorted(c.upstream)),
            c.proxy_number,
            None if c.from_trusted_proxy is None else int(c.from_trusted_proxy),
        )

    def _stream_row(self, span: StreamSpan, lags: LagHistory | None) -> StreamRow:
        wall = self.clock.wall
        assert span.ended is not None
        lag = None
        if lags is not None and span.answered is not None:  # as the cross-check reads it (stream_times)
            lag = lags.held_during(span.started - PERIOD_S, span.answered)
        return (
            span.connection.id,
            span.number,
            span.stream_id,
            span.path,
            span.query.decode("latin-1"),
            wall(span.started),
            wall(span.ended),
            None if span.answered is None else wall(span.answered),
            lag,
            None if span.refused is None else span.refused.value,
        )

    async def close(self) -> None:
        """Write what is left, and record this life's end: the store left as retention says."""
        await self.flush(retain=True)
        try:
            unused = range(self._next_id, self._blocks[-1].stop) if len(self._blocks) == 1 else range(0)
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.end_life, self.life, unused)
        except self._db.errors as exc:
            logger.warning("account: cannot record the stop in %s: %s", self.path, exc)
        if self._waiting.rows:
            logger.warning("account: %s never written to %s", plural(self._waiting.rows, "row"), self.path)
        self._thread.shutdown()
        self._reading.shutdown()
        self._db.close()
        self._reader.close()

    # -- the reads

    async def read(
        self,
        switch: str | None = None,
        since: float | None = None,
        in_flight: Iterable[StreamSpan] = (),
        limits: tuple[int, int] = (DEFAULT_HISTORY, STREAM_HISTORY),
    ) -> Records:
        """The latest connections (of ``switch``; open, or closed after ``since``, monotonic) and the latest ended
        streams of them, at most ``limits`` of each, in this process's monotonic seconds; with ``in_flight``, this
        process's requests being answered now, among the streams of their connections."""
        asked = time.time()
        with contextlib.suppress(TimeoutError):  # the store is slow: what it has is the answer
            await asyncio.wait_for(self._all_written(asked), READ_WAIT_S)
        since_wall = None if since is None else self.clock.wall(since)
        history, stream_history = limits
        connections: dict[int, ControllerConnection] = {}
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._reading, self._reader.connection_rows, switch, history, since_wall)
        for count, row in enumerate(rows):
            connections[row[0]] = self._connection(row)
            if count % ROWS_PER_STEP == ROWS_PER_STEP - 1:
                await asyncio.sleep(0)
        ids = None if switch is None and since is None else list(connections)
        spans: list[StreamSpan] = []
        streams = await loop.run_in_executor(self._reading, self._reader.stream_rows, ids, stream_history)
        for count, stream in enumerate(streams):
            owner = connections.get(stream[0])
            if owner is not None:
                spans.append(self._span(owner, stream))
            if count % ROWS_PER_STEP == ROWS_PER_STEP - 1:
                await asyncio.sleep(0)
        for span in in_flight:
            owner = connections.get(span.connection.id)
            if owner is not None:
                spans.append(dataclasses.replace(span, connection=owner))
        spans.sort(key=_started)  # as the registry holds them: in the order they began
        totals = {
            row.switch: SwitchTotals(row.connections, row.streams, row.peak_in_flight)
            for row in await loop.run_in_executor(self._reading, self._reader.switch_rows)
            if switch is None or row.switch == switch
        }
        return Records(list(connections.values()), spans, totals)

    async def _all_written(self, moment: float) -> None:
        """This process's records written, and every other running process's up to ``moment`` (wall-clock)."""
        await self.flush()
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(self._reading, self._reader.behind, self.life, moment, ALIVE_WITHIN_S):
            await asyncio.sleep(FLUSH_S / 10)  # another process writes within FLUSH_S: look again soon

    def _connection(self, row: ConnectionRow) -> ControllerConnection:
        mono = self.clock.monotonic
        (id_, life, switch, peer, alpn, tls_version, via, cleartext, http_version, opened_at, closed_at) = row[:11]
        (hello, opened, closed, streams, in_flight, peak, closed_for, hello_turn, done_turn, upstream) = row[11:21]
        proxy_number, from_trusted_proxy = row[21:]
        return ControllerConnection(
            id=id_,
            life=life,
            proxy_number=proxy_number,
            from_trusted_proxy=None if from_trusted_proxy is None else bool(from_trusted_proxy),
            peer=Address.parse(peer) or Address(peer, 0),
            switch=switch,
            alpn=alpn,
            tls_version=tls_version,
            tls={},
            opened_at=opened_at,
            closed_at=closed_at,
            streams=streams,
            in_flight=in_flight,
            peak_in_flight=peak,
            via=via,
            cleartext=bool(cleartext),
            upstream=set(json.loads(upstream)) if upstream != "[]" else set(),
            http_version=http_version,
            closed_for=closed_for,
            hello_at=None if hello is None else mono(hello),
            opened=mono(opened),
            hello_turn=hello_turn,
            done_turn=done_turn,
            closed=None if closed is None else mono(closed),
        )

    def _span(self, owner: ControllerConnection, row: StreamRow) -> StreamSpan:
        mono = self.clock.monotonic
        _, number, stream_id, path, query, started, ended, answered, lag, refused = row
        span = StreamSpan(
            owner,
            number,
            path,
            mono(started),
            mono(ended),
            query.encode("latin-1"),
            stream_id,
            None if answered is None else mono(answered),
            None if refused is None else Refusal(refused),
            lag,
        )
        owner.keep_answered(span)
        return span


ID_REFILL = ID_BLOCK // 4  # ids left when the next block is reserved


def _started(span: StreamSpan) -> float:
    return span.started


def _merged(totals: Iterable[SwitchRow]) -> list[SwitchRow]:
    """Increments of the same switch, added: a store down for an hour holds one row per switch, not one per write."""
    merged: dict[str, SwitchRow] = {}
    for row in totals:
        was = merged.get(row.switch)
        merged[row.switch] = (
            row
            if was is None
            else SwitchRow(
                row.switch,
                was.connections + row.connections,
                was.streams + row.streams,
                max(was.peak_in_flight, row.peak_in_flight),
            )
        )
    return list(merged.values())
