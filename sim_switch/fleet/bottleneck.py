"""Which side of a fleet run was CPU-bound, so that nobody blames the controller for the simulator's own queueing
(``sim_switch/render/fleet.py`` says it in words).

Each side's CPU is read every half second while the run goes (``cpu_watch``): the switch side's (the processes
that ran the switches), each controller's from its own ``GET /connections`` (``cpu_s``, its CPU time over its
``processes``, the workers of ``serve --workers N``). Both are shown per process, as a share of one core: a process
near a whole core is what queues, its latencies mostly waiting for itself. A side is CPU-bound over the whole run,
or for a stretch of it: a fleet's intake (handshakes, first requests) holds both sides near their cores for seconds
and then waits out the interval, and a whole run's average hides that.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sim_switch.fleet.cpu_watch import CpuSample
from sim_switch.fleet.tally import FleetTally

CPU_BOUND = 0.8  # of one core: above this a process is what the run waited for
BOUND_FOR_S = 1.0  # a stretch at CPU_BOUND shorter than this is a moment, not a bottleneck


@dataclass(frozen=True)
class Stretch:
    """A side's longest stretch at CPU_BOUND or more: from and to, in seconds into the run, and its share of a core
    per process over it."""

    from_s: float
    to_s: float
    share: float

    @property
    def seconds(self) -> float:
        return self.to_s - self.from_s


@dataclass(frozen=True)
class CpuShares:
    switch: float  # per process that ran switches, as a share of one core, over the whole run
    processes: int
    controllers: dict[str, float] = field(default_factory=dict)  # URL -> its share per process; empty if unknown
    controller_processes: dict[str, int] = field(default_factory=dict)  # URL -> its worker processes, if more than 1
    switch_stretch: Stretch | None = None  # the switch side's longest stretch at CPU_BOUND, if BOUND_FOR_S or more
    controller_stretches: dict[str, Stretch] = field(default_factory=dict)  # the same, by controller


def cpu_shares(tally: FleetTally, samples: Sequence[CpuSample]) -> CpuShares:
    """``samples``: both sides' CPU through the run (``CpuWatch``); a controller missing from the first or the
    last is left out. Stretches are looked for in the run itself, from its start (not in the switches' set-up
    before it: a thousand certificates loaded take a second of CPU)."""
    wall_s = tally.wall_time_s or 1e-9
    before, after = (samples[0].controllers, samples[-1].controllers) if samples else ({}, {})
    read = [url for url in after if url in before]
    # never below 0: a worker restarted during the run took its CPU time with it
    controllers = {url: max(0.0, after[url].cpu_s - before[url].cpu_s) / wall_s / after[url].processes for url in read}
    processes = {url: after[url].processes for url in read if after[url].processes > 1}
    start = tally.started_at
    run = [sample for sample in samples if start <= sample.at <= tally.ended_at]
    switch_series = [(s.at, s.switch_cpu_s) for s in run if s.switch_cpu_s is not None]
    stretches = {}
    for url in read:
        series = [(s.at, s.controllers[url].cpu_s) for s in run if url in s.controllers]
        stretch = longest_bound_stretch(series, after[url].processes, start)
        if stretch is not None:
            stretches[url] = stretch
    return CpuShares(
        switch=tally.cpu_s / wall_s / tally.processes,
        processes=tally.processes,
        controllers=controllers,
        controller_processes=processes,
        switch_stretch=longest_bound_stretch(switch_series, tally.processes, start),
        controller_stretches=stretches,
    )


def longest_bound_stretch(series: Sequence[tuple[float, float]], processes: int, start: float) -> Stretch | None:
    """The longest run of consecutive readings (when, CPU seconds so far) between which ``processes`` spent
    CPU_BOUND of a core each or more, if it lasted BOUND_FOR_S; times from ``start``."""
    longest: Stretch | None = None
    began: tuple[float, float] | None = None  # the current stretch's first reading
    for (at, cpu_s), (then, then_cpu_s) in itertools.pairwise(series):
        if then <= at or (then_cpu_s - cpu_s) / (then - at) / processes < CPU_BOUND:
            began = None
            continue
        began = began or (at, cpu_s)
        stretch = Stretch(began[0] - start, then - start, (then_cpu_s - began[1]) / (then - began[0]) / processes)
        if longest is None or stretch.seconds > longest.seconds:
            longest = stretch
    return longest if longest is not None and longest.seconds >= BOUND_FOR_S else None


class Side(StrEnum):
    """Which side of a fleet run was CPU-bound (``--json``: ``cpu.bottleneck_side``)."""

    SWITCH = "switch"  # the simulator: its latencies are mostly its own queueing
    CONTROLLER = "controller"
    BOTH = "both"  # on one machine they compete for its cores


def bottleneck(shares: CpuShares) -> Side | None:
    """The side that was CPU-bound, None when neither was."""
    switch_bound = shares.switch >= CPU_BOUND or shares.switch_stretch is not None
    controller_bound = bool(bound_controllers(shares))
    if switch_bound and controller_bound:
        return Side.BOTH
    if switch_bound:
        return Side.SWITCH
    return Side.CONTROLLER if controller_bound else None


def bound_controllers(shares: CpuShares) -> list[str]:
    """The controllers CPU-bound over the whole run or for a stretch of it."""
    return [
        url for url, share in shares.controllers.items() if share >= CPU_BOUND or url in shares.controller_stretches
    ]
