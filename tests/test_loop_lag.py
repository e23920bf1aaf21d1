"""The loop's own lag, as a judgment made from a time sees it (``dialout/loop_lag.py``)."""

from __future__ import annotations

import asyncio
import random
import time

from dialout.loop_lag import NOISE_S, PERIOD_S, LagHistory, LoopLag

BLOCKED_S = 0.15


async def test_a_loop_held_up_shows_as_lag_in_its_window_only() -> None:
    async with LoopLag().running() as lag:
        await asyncio.sleep(3 * PERIOD_S)  # a few wake-ups on time
        quiet_until = time.monotonic()
        time.sleep(BLOCKED_S)
        await asyncio.sleep(2 * PERIOD_S)  # the next wake-up comes, late, and says by how much
        held = lag.worst(quiet_until)
    assert held.worst_s >= BLOCKED_S - PERIOD_S
    assert str(held) == f"{held.worst_s * 1000:.0f} ms"
    assert lag.worst(time.monotonic()).worst_s == 0.0  # nothing since
    assert lag.worst(0.0, quiet_until - PERIOD_S).worst_s < NOISE_S + BLOCKED_S / 2  # before the hold: on time


def test_a_lag_counts_for_every_moment_it_held_the_loop() -> None:
    """A sample is the loop blocked from ``at - lag`` to ``at``: one taken after a window's end still held what
    happened in it (the turn that made the last answers late ends after them), one over before it did not."""
    history = LagHistory([(10.0, 0.5), (20.3, 0.4), (30.0, 0.05)])
    assert history.held_during(20.0, 20.1) == 0.4  # taken at 20.3, the loop held since 19.9
    assert history.held_during(19.0, 19.85) == 0.0  # a window that ended before that hold began
    assert history.held_during(10.5, 25.0) == 0.4  # the 10.0 sample ended before the window began
    assert history.held_during(0.0, 40.0) == 0.5
    assert LagHistory([]).held_during(0.0, 1.0) == 0.0


def test_a_window_sees_every_hold_that_overlaps_it_and_no_other() -> None:
    """Bisection against the definition, over a sampler's own kind of history (spans that never overlap: the
    sampler is due again only after it has run) and windows of every size, ends on and between the spans'."""
    rng = random.Random(31)
    samples: list[tuple[float, float]] = []
    due = 0.0
    for _ in range(400):
        lag = rng.choice((NOISE_S, 0.01, 0.05, 0.3, 1.2))
        samples.append((due + lag, lag))
        due += lag + PERIOD_S + rng.random() * 0.05
    history = LagHistory(samples)
    edges = [t for at, lag in samples for t in (at, at - lag)] + [rng.uniform(0.0, due) for _ in range(200)]
    for _ in range(2000):
        since = rng.choice(edges)
        until = since + rng.choice((0.0, 0.001, 0.1, 1.0, 10.0))
        overlapping = [lag for at, lag in samples if at >= since and at - lag <= until]
        assert history.held_during(since, until) == max(overlapping, default=0.0)
