"""Timeouts of one length for many tasks, on one timer: a run's pings, each bounded by the request timeout.

``asyncio.timeout`` puts a timer a ping in the loop's heap, and a one-shot run fires every ping at once: 20,000 pings
make a heap of 20,000, where each timer costs ~14 comparisons in Python (``TimerHandle.__lt__``) going in and as
many coming out. Timeouts of one length come due in the order they are set, so a queue in that order needs no
sorting: one timer, for the one due first, and each one as cheap to set as an append. A bound ends as
``asyncio.timeout``'s does: its task cancelled when it comes due, ``TimeoutError`` raised from the cancellation,
unless someone else cancelled the task too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Deadlines:
    """Bounds of ``length_s`` each (``bound()``), set in the order they come due."""

    def __init__(self, length_s: float) -> None:
        self.length_s = length_s
        self._due: deque[Bound] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def bound(self) -> Bound:
        """``async with deadlines.bound():`` -- as ``async with asyncio.timeout(length_s):``."""
        return Bound(self)

    def close(self) -> None:
        """No more bounds: the timer goes (a run that ends before its first timeout leaves none in the loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    def _start(self, bound: Bound, loop: asyncio.AbstractEventLoop) -> None:
        self._due.append(bound)
        if self._timer is None:
            self._timer = loop.call_at(bound.when, self._expire)

    def _expire(self) -> None:
        """Cancel the tasks whose bound has come due and is still held; then wait for the next one held."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._due:
            bound = self._due[0]
            if bound.held and bound.when > now:
                self._timer = loop.call_at(bound.when, self._expire)
                return
            self._due.popleft()
            if bound.held:
                bound.expire()


class Bound:
    """One task's timeout: entered in that task, as ``asyncio.timeout`` is."""

    __slots__ = ("_cancelling", "_deadlines", "_expired", "_task", "held", "when")

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines
        self.held = False
        self.when = 0.0
        self._expired = False
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> Bound:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline bounds a task")
        loop = asyncio.get_running_loop()
        self._task, self._cancelling = task, task.cancelling()
        self.when = loop.time() + self._deadlines.length_s
        self.held = True
        self._deadlines._start(self, loop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.held = False  # left in the queue: dropped when it reaches the front
        task, self._task = self._task, None  # (the queue keeps the bound a while, not its task)
        if not self._expired or task is None:
            return
        # The cancellation was ours, unless the task was cancelled by someone else as well: theirs goes on.
        if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expire(self) -> None:
        self.held = False
        self._expired = True
        if self._task is not None:
            self._task.cancel()
