"""Which side of a fleet run was CPU-bound, so that nobody blames the controller for the simulator's own queueing
(``sim_switch/render/fleet.py`` says it in words).

The switch side's CPU comes from the tally (the processes that ran the switches); each controller's from its own
``GET /connections`` (``cpu_s``, its CPU time over its ``processes``, the workers of ``serve --workers N``), read
before and after the run. Both are shown per process, as a share of one core: a process near a whole core is what
queues, its latencies mostly waiting for itself.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from sim_switch.fleet.tally import FleetTally

CPU_BOUND = 0.8  # of one core: above this a process is what the run waited for


@dataclass(frozen=True)
class CpuShares:
    switch: float  # per process that ran switches, as a share of one core
    processes: int
    controllers: dict[str, float] = field(default_factory=dict)  # URL -> its share per process; empty if unknown
    controller_processes: dict[str, int] = field(default_factory=dict)  # URL -> its worker processes, if more than 1


@dataclass(frozen=True)
class ControllerCpu:
    """What a controller says of its CPU: seconds so far, over how many worker processes."""

    cpu_s: float
    processes: int = 1


def cpu_shares(tally: FleetTally, before: dict[str, ControllerCpu], after: dict[str, ControllerCpu]) -> CpuShares:
    """``before``, ``after``: each controller's CPU (``read_controller_cpu``) around the run; a controller missing
    from either is left out."""
    wall_s = tally.wall_time_s or 1e-9
    read = [url for url in after if url in before]
    # never below 0: a worker restarted during the run took its CPU time with it
    controllers = {url: max(0.0, after[url].cpu_s - before[url].cpu_s) / wall_s / after[url].processes for url in read}
    processes = {url: after[url].processes for url in read if after[url].processes > 1}
    return CpuShares(tally.cpu_s / wall_s / tally.processes, tally.processes, controllers, processes)


class Side(StrEnum):
    """Which side of a fleet run was CPU-bound (``--json``: ``cpu.bottleneck_side``)."""

    SWITCH = "switch"  # the simulator: its latencies are mostly its own queueing
    CONTROLLER = "controller"
    BOTH = "both"  # on one machine they compete for its cores


def bottleneck(shares: CpuShares) -> Side | None:
    """The side that was CPU-bound, None when neither was."""
    switch_bound = shares.switch >= CPU_BOUND
    controller_bound = any(share >= CPU_BOUND for share in shares.controllers.values())
    if switch_bound and controller_bound:
        return Side.BOTH
    if switch_bound:
        return Side.SWITCH
    return Side.CONTROLLER if controller_bound else None


def read_controller_cpu(
    urls: tuple[str, ...], ssl_context: ssl.SSLContext | None, switch_id: str
) -> dict[str, ControllerCpu]:
    """Each controller's CPU so far, from its ``GET /connections`` (asked as ``switch_id``, for nobody's
    connections in particular); a controller that does not say (not dialout's, or down) is left out, and one that
    does not count its processes (before workers) is one process."""
    said: dict[str, ControllerCpu] = {}
    with httpx.Client(verify=ssl_context or False, trust_env=False, timeout=5) as client:
        for url in urls:
            try:
                answer = client.get(f"{url.rstrip('/')}/connections", params={"switch": switch_id}).json()
                said[url] = ControllerCpu(float(answer["cpu_s"]), max(1, int(answer.get("processes", 1))))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
    return said
