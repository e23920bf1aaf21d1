"""The switch that must not notice an attack on its controller: a persistent session of the real switch (two
pings of 0.2 s every 0.5 s, as issue 20 measured it), and how late its answers came.

Overhead is each ping's time beyond its interval: what the controller (and the path) added. The first batch is
left out: the session sends its first ping alone until the link is up (``sim_switch/dial/session.py``), so the
second one's overhead is the first one's interval, whatever the controller does. ``tests/test_hostile.py``
holds it under attack against the same session alone; ``bench/run.py`` prints the ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dialout.config import Scenario, Schedule, SwitchConfig
from sim_switch.dial.tls import client_ssl_context
from tests.switches import session

INTERVAL_S = 0.2
EVERY_S = 0.5
BATCH = 2


@dataclass(frozen=True)
class VictimRun:
    pings: int
    failed: int
    overheads_s: tuple[float, ...]  # of the pings answered, in order

    @property
    def p99_s(self) -> float:
        return percentile(self.overheads_s, 0.99)

    @property
    def p50_s(self) -> float:
        return percentile(self.overheads_s, 0.50)

    def describe(self) -> str:
        return (
            f"{self.pings} pings, {self.failed} failed, overhead p50 {self.p50_s * 1000:.1f} ms, "
            f"p99 {self.p99_s * 1000:.1f} ms, max {max(self.overheads_s, default=0) * 1000:.1f} ms"
        )


def percentile(values: tuple[float, ...], fraction: float) -> float:
    """The nearest-rank percentile (of 16 values, p99 is the largest)."""
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def victim(url: str, certs: Path, switch: str, batches: int) -> VictimRun:
    """``batches`` batches of the session (and the first, which dials), on one HTTP/2 connection as the switch
    keeps it."""
    schedule = Schedule(every_s=EVERY_S, interval_s=INTERVAL_S, batch=BATCH, count=(batches + 1) * BATCH)
    config = SwitchConfig(certs_dir=certs, switch_id=switch, request_timeout_s=30)
    result = await session(Scenario("victim", schedule), url, client_ssl_context(certs, switch), config)
    steady = result.pings[BATCH:]
    answered = tuple(ping.elapsed_s - ping.interval_s for ping in steady if ping.ok)
    return VictimRun(len(result.pings), sum(1 for ping in result.pings if not ping.ok), answered)
