"""The garbage collector's pace, for a process that holds many objects alive at once: both ends do.

A run keeps thousands of container objects alive together: a task, a coroutine and a stream for every ping in
flight or waiting for one (a one-shot run of 20,000 pings makes its 20,000 tasks at once), a record for every
connection the controller has seen. CPython's collector, at its default pace, walks them again and again: a young
collection every 700 allocations, and a full one each time the long-lived objects have grown by a quarter. Measured
with ``gc.callbacks`` on a switch sending 20,000 pings of 0 s, 100 in flight on one connection: 43-50 us of CPU a
ping went to collections, three quarters of it in full ones; at the pace set here, 5-7 us, and no full collection.

Neither end relies on the collector to free anything in bulk (what a ping makes is freed by reference counting as
it ends, and so is a controller's finished connection: ``SeamTCPServer._release``, ``RememberingMatcher``), so a
slower pace costs little memory: at most ``YOUNG_THRESHOLD`` young objects, not all of them garbage, wait for a
collection that would free cycles. (When each connection was left in cycles, a storm of short ones made every
young collection free ~440 of them at once: 64-159 ms with the loop held.)
"""

from __future__ import annotations

import gc

# Young objects allocated (net) between collections: about a thousand pings' worth rather than a few dozen.
YOUNG_THRESHOLD = 50_000


def pace_for_many_objects() -> None:
    """Collect young objects less often, and never walk again what exists now (~100,000 objects of imported
    modules, the config, the app): called once a process has loaded what it runs, before its event loop starts.
    Forked workers inherit both, and share the frozen objects with their parent copy-on-write."""
    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
