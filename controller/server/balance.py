"""Workers on one listening socket, each new connection taken by a worker with the fewest open (``serve --workers``).

Every worker's event loop watches the same listening socket, and the kernel wakes them all when a connection
comes. Left to itself, the first awake takes it: ten connections dialled at once landed 9 to 1 (a busy loop
turns fastest). With a set of sockets for each worker (SO_REUSEPORT) the kernel spreads them by a hash of
their addresses: 7 to 3 or 8 to 2 in a third of h2load's runs of ten, and the worker with more held the run
to 3,000-3,400 req/s where 5 and 5 made 5,200. So each worker counts its open connections in memory the
workers share, and one with more than another live worker leaves the connection to it (``turn``).

Leaving it costs the worker that declines a loop turn each time it finds the listener still ready, until the
other has accepted (about one of that worker's turns). A worker stalled longer than ``DECLINE_MAX_S`` (its loop
held, or not scheduled) is not waited for: the connection is taken, a little out of balance, rather than kept
waiting.
"""

from __future__ import annotations

import ctypes
import enum
import multiprocessing
import time
from collections.abc import Callable

GONE = -1  # a worker not accepting: not started yet, stopping, or dead
DECLINE_MAX_S = 0.05  # the longest a worker leaves a waiting connection to a less loaded one that does not take it


class Turn(enum.Enum):
    """What a worker does with a connection waiting on the listener."""

    TAKE = "take"  # no live worker has fewer open
    LEAVE = "leave"  # to a worker with fewer open
    TAKE_OVERDUE = "take overdue"  # left to one with fewer for DECLINE_MAX_S, which did not take it: out of balance

    @property
    def takes(self) -> bool:
        return self is not Turn.LEAVE


class Loads:
    """Each worker's open connections, in memory shared by the workers: made by the parent before it forks
    them, each worker's part taken with ``of``."""

    def __init__(self, workers: int) -> None:
        self._open = multiprocessing.RawArray(ctypes.c_int32, [GONE] * workers)

    def of(self, number: int, clock: Callable[[], float] = time.monotonic) -> Share:
        """Worker ``number``'s (from 1) part."""
        return Share(self._open, number - 1, clock)

    def gone(self, number: int) -> None:
        """Worker ``number`` has ended (the parent saw it): the others no longer leave connections to it."""
        self._open[number - 1] = GONE


class Share:
    """One worker's part of ``Loads``: whether it takes the next connection, and its count kept."""

    def __init__(self, loads: ctypes.Array[ctypes.c_int32], index: int, clock: Callable[[], float]) -> None:
        self._loads = loads
        self._index = index
        self._clock = clock
        self._open = 0
        self._declined_from: float | None = None  # the first of this run of declines
        self._declined_at = 0.0  # the last

    def join(self) -> None:
        """This worker accepts from now on, with nothing open."""
        self._open = 0
        self._loads[self._index] = 0

    def leave(self) -> None:
        """This worker accepts no more (it is stopping)."""
        self._loads[self._index] = GONE

    def turn(self) -> Turn:
        """Whether this worker takes a connection that is waiting now: when no live worker has fewer open."""
        others = [count for index, count in enumerate(self._loads) if index != self._index and count != GONE]
        if not others or self._open <= min(others):
            self._declined_from = None
            return Turn.TAKE
        now = self._clock()
        if self._declined_from is None or now - self._declined_at > DECLINE_MAX_S:
            self._declined_from = now  # a new run of declines: the one before ended with the connection taken
        self._declined_at = now
        if now - self._declined_from < DECLINE_MAX_S:
            return Turn.LEAVE
        self._declined_from = None
        return Turn.TAKE_OVERDUE

    def opened(self) -> None:
        self._open += 1
        if self._loads[self._index] != GONE:
            self._loads[self._index] = self._open

    def closed(self) -> None:
        self._open -= 1
        if self._loads[self._index] != GONE:
            self._loads[self._index] = self._open
