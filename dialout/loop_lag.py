"""How late this process's event loop runs: what a judgment from a time must allow for (issue 28).

Every time either end judges (a storm from redial delays, a late answer from a ping's duration), what it measured
includes the time its own event loop was busy elsewhere or not scheduled at all: on a loaded machine, tens or
hundreds of milliseconds. ``LoopLag`` wakes every ``PERIOD_S`` and keeps how late each wake-up was; a judgment asks
for the worst lag over its own window, and says "inconclusive" where that lag could have made the verdict.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

PERIOD_S = 0.02  # cheap (a wake-up per 20 ms), and fine enough to see a lag that matters to a 100 ms judgment
NOISE_S = 0.002  # lags below this are the timer's own jitter: not kept
KEPT = 50_000  # lags kept (newest first out): far more than a long run's notable ones


@dataclass(frozen=True)
class Lag:
    """The worst lag seen over a window."""

    worst_s: float

    def __str__(self) -> str:
        return f"{self.worst_s * 1000:.0f} ms"


class LoopLag:
    """The running loop's lateness, sampled while ``running()`` is entered (by anyone: one sampler however many
    runs share the loop, as a fleet's switches do: ``of_running_loop``)."""

    def __init__(self) -> None:
        self._lags: collections.deque[tuple[float, float]] = collections.deque(maxlen=KEPT)
        self._sampler: asyncio.Task[None] | None = None
        self._users = 0
        self._next_sample: asyncio.Future[None] | None = None

    @classmethod
    def of_running_loop(cls) -> LoopLag:
        """The one ``LoopLag`` of the running loop."""
        return _per_loop.setdefault(asyncio.get_running_loop(), cls())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLag]:
        self._users += 1
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample())
        try:
            yield self
        finally:
            self._users -= 1
            if not self._users and self._sampler is not None:
                sampler, self._sampler = self._sampler, None
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

    async def sampled(self) -> None:
        """Until the sampler's next wake-up has been taken: a lag that is still going on (a loop turn that has not
        ended yet) is only known once it is over. At once when nothing samples."""
        if self._sampler is None:
            return
        if self._next_sample is None:
            self._next_sample = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._next_sample)

    async def _sample(self) -> None:
        while True:
            due = time.monotonic() + PERIOD_S
            await asyncio.sleep(PERIOD_S)
            now = time.monotonic()
            if now - due >= NOISE_S:
                self._lags.append((now, now - due))
            waiting, self._next_sample = self._next_sample, None
            if waiting is not None and not waiting.done():
                waiting.set_result(None)

    def history(self) -> LagHistory:
        """The lags kept so far, to ask of many windows at once."""
        return LagHistory(self._lags)

    def worst(self, since: float, until: float | None = None) -> Lag:
        """The worst lag whose wake-up came between ``since`` and ``until`` (now), monotonic."""
        end = time.monotonic() if until is None else until
        found = Lag(0.0)
        for at, lag in reversed(self._lags):
            if at < since:
                break
            if at <= end and lag > found.worst_s:
                found = Lag(lag)
        return found


class LagHistory:
    """Lags as kept at one moment, each window's question answered by bisection (a run asks it once a ping).

    A sample is the loop blocked from ``at - lag`` (when the sampler was due) to ``at``; the sampler is due again
    only after it has run, so the samples' spans never overlap and their starts are as ordered as their ends: a
    window's samples are one slice, found by bisecting each."""

    def __init__(self, lags: Iterable[tuple[float, float]]) -> None:
        kept = list(lags)
        self._at = [at for at, _ in kept]
        self._from = [at - lag for at, lag in kept]
        self._lags = [lag for _, lag in kept]

    def held_during(self, since: float, until: float) -> float:
        """The worst lag that held the loop at some moment between ``since`` and ``until`` (monotonic): one taken
        after ``until`` may still have held what happened then (a read made late by the very turn that was running
        when it was due)."""
        first = bisect.bisect_left(self._at, since)  # the first hold that ended inside the window or after it
        last = bisect.bisect_right(self._from, until)  # past the last one that began before the window ended
        return max(self._lags[first:last], default=0.0)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = weakref.WeakKeyDictionary()
