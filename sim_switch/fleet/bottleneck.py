"""Which side of a fleet run was CPU-bound, said in words, so that nobody blames the controller for the
simulator's own queueing.

The switch side's CPU comes from the tally (the processes that ran the switches); each controller's from its own
``GET /connections`` (``cpu_s``, its process CPU time), read before and after the run. A process near a whole
core is what queues: its latencies are mostly waiting for itself.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import httpx

from dialout.text import plural
from sim_switch.fleet.tally import FleetTally

CPU_BOUND = 0.8  # of one core: above this a process is what the run waited for


@dataclass(frozen=True)
class CpuShares:
    switch: float  # per process that ran switches, as a share of one core
    processes: int
    controllers: dict[str, float] = field(default_factory=dict)  # URL -> its process's share; empty if unknown


def cpu_shares(tally: FleetTally, before: dict[str, float], after: dict[str, float]) -> CpuShares:
    """``before``, ``after``: each controller's CPU seconds (``read_controller_cpu``) around the run; a controller
    missing from either is left out."""
    wall_s = tally.wall_time_s or 1e-9
    controllers = {url: (after[url] - before[url]) / wall_s for url in after if url in before}
    return CpuShares(tally.cpu_s / wall_s / tally.processes, tally.processes, controllers)


def bottleneck(shares: CpuShares) -> str | None:
    """A sentence when one side was CPU-bound, None when neither was."""
    switch_bound = shares.switch >= CPU_BOUND
    busy = {url: share for url, share in shares.controllers.items() if share >= CPU_BOUND}
    switch_side = f"the switch side at {shares.switch:.0%} of a core per process ({shares.processes})"
    controllers = ", ".join(f"{url} at {share:.0%}" for url, share in shares.controllers.items())
    if switch_bound and busy:
        return (
            f"both sides were CPU-bound: {switch_side}, the controller {controllers}; on one machine they "
            "compete for its cores"
        )
    if switch_bound:
        theirs = f", the controller {controllers}" if controllers else " (the controller did not say its own)"
        return (
            f"the switch side was the bottleneck: {switch_side}{theirs}; the latencies are mostly the "
            "simulator's own queueing: split it further (--workers, --shard on more machines)"
        )
    if busy:
        named = ", ".join(f"{url} at {share:.0%}" for url, share in busy.items())
        return (
            f"the controller was the bottleneck: {named} of a core, {switch_side}; "
            f"{plural(len(shares.controllers), 'controller')} served the fleet"
        )
    return None


def read_controller_cpu(urls: tuple[str, ...], ssl_context: ssl.SSLContext | None, switch_id: str) -> dict[str, float]:
    """Each controller's process CPU seconds so far, from its ``GET /connections`` (asked as ``switch_id``, for
    nobody's connections in particular); a controller that does not say (not dialout's, or down) is left out."""
    said: dict[str, float] = {}
    with httpx.Client(verify=ssl_context or False, trust_env=False, timeout=5) as client:
        for url in urls:
            try:
                answer = client.get(f"{url.rstrip('/')}/connections", params={"switch": switch_id}).json()
                said[url] = float(answer["cpu_s"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
    return said
