"""The loop's own lag, as a judgment made from a time sees it (``dialout/loop_lag.py``)."""

from __future__ import annotations

import asyncio
import time

from dialout.loop_lag import NOISE_S, PERIOD_S, LoopLag

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
