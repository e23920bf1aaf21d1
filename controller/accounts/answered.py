"""The times of a connection's latest answered streams, packed: what the switch's cross-check reads of them.

A connection kept its last 1,000 answered ``StreamSpan``s alive for this, each with its path, its query and its
record's other fields: 330 bytes a span (tracemalloc), 330 KB a connection that has carried as many, and the
registry keeps 10,000 connections after they close; a thousand switches for a day, gigabytes. What the
cross-check reads of each (its stream id and number, when it started and was answered, and the loop's lag the
account recorded) is five floats in one array here, 40 bytes a stream, in a ring of fixed size.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.accounts.connections import StreamSpan

_FIELDS = 5  # stream id (NaN: HTTP/1.1), number, started, answered (monotonic seconds), loop lag (NaN: unknown)


@dataclass(frozen=True, slots=True)
class AnsweredTime:
    """One answered stream, as the cross-check reads it."""

    stream_id: int | None
    number: int
    started: float
    answered: float
    loop_lag: float | None  # as the account recorded it; None: to be read from the loop's lag history


class AnsweredTimes:
    """The latest ``size`` answered streams' times, oldest first."""

    __slots__ = ("_next", "_size", "_values")

    def __init__(self, size: int) -> None:
        self._size = size
        self._values = array("d")
        self._next = 0  # once full: where the oldest is, and the next goes

    def add(self, span: StreamSpan) -> int:
        """Keep ``span``'s times (it was answered: ``span.answered`` is set); its slot, for ``rewrite``."""
        assert span.answered is not None
        stream_id = math.nan if span.stream_id is None else span.stream_id
        lag = math.nan if span.loop_lag is None else span.loop_lag
        values = self._values
        if len(values) < self._size * _FIELDS:
            values.extend((stream_id, span.number, span.started, span.answered, lag))
            return len(values) // _FIELDS - 1
        slot = self._next
        self._next = (slot + 1) % self._size
        at = slot * _FIELDS  # one item at a time: no array made a stream
        values[at] = stream_id
        values[at + 1] = span.number
        values[at + 2] = span.started
        values[at + 3] = span.answered
        values[at + 4] = lag
        return slot

    def rewrite(self, slot: int, number: int, answered: float) -> None:
        """Stream ``number``'s answer went to the wire at ``answered`` (monotonic), after it was kept in ``slot``:
        the write a loop turn gathers comes after the stream's end. Nothing if a later one has the slot now."""
        at = slot * _FIELDS
        if self._values[at + 1] == number:
            self._values[at + 3] = answered

    def __len__(self) -> int:
        return len(self._values) // _FIELDS

    def __iter__(self) -> Iterator[AnsweredTime]:
        values, count = self._values, len(self)
        for index in range(count):
            at = (self._next + index) % count * _FIELDS
            stream_id, number, started, answered, lag = values[at : at + _FIELDS]
            yield AnsweredTime(
                None if math.isnan(stream_id) else int(stream_id),
                int(number),
                started,
                answered,
                None if math.isnan(lag) else lag,
            )
