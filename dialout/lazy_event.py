"""An ``asyncio.Event`` that makes its deque of waiters at the first wait, for the controller's many events that
are set and cleared and hardly ever waited on.

A request in flight holds four such events (Hypercorn's stream buffer has two, Quart's request body two), and each
``asyncio.Event`` makes a ``collections.deque`` at once: ~0.7 KiB (a 64-slot block), 3 of the controller's ~26 KiB
a stream in flight (bench/RESULTS.md, tracemalloc). ``LazyEvent`` writes the private state of Python 3.11's
``asyncio.Event`` (``_waiters``, ``_value``): ``tests/test_seams.py`` pins it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal


class LazyEvent(asyncio.Event):
    """``asyncio.Event``; until the first wait, the empty tuple (shared, of no size of its own) stands for its
    deque of waiters: ``set`` and ``__repr__`` only iterate it, ``wait`` alone appends."""

    def __init__(self) -> None:  # not Event's: its deque is what this spares
        self._waiters = ()  # type: ignore[assignment]
        self._value = False

    async def wait(self) -> Literal[True]:
        if not self._value and not isinstance(self._waiters, deque):
            self._waiters = deque()
        return await super().wait()
