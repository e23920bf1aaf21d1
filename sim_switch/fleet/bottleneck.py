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
from urllib.parse import urlsplit

from dialout.config import is_loopback_host
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
class MachineStretch:
    """This machine's longest stretch with its cores CPU_BOUND busy or more (the stretch's share: of all its cores),
    and who took them, in cores' worth over it."""

    stretch: Stretch
    cores: int
    switch: float | None  # the switch side (None: not read)
    controllers: float | None  # the controllers on this machine (None: none on it said)
    local: int = 0  # how many controllers that is

    @property
    def others(self) -> float | None:
        """Every other process's (None when the switch side's is not known)."""
        if self.switch is None:
            return None
        return max(0.0, self.stretch.share * self.cores - self.switch - (self.controllers or 0.0))


@dataclass(frozen=True)
class CpuShares:
    switch: float  # per process that ran switches, as a share of one core, over the whole run
    processes: int
    controllers: dict[str, float] = field(default_factory=dict)  # URL -> its share per process; empty if unknown
    controller_processes: dict[str, int] = field(default_factory=dict)  # URL -> its worker processes, if more than 1
    switch_stretch: Stretch | None = None  # the switch side's longest stretch at CPU_BOUND, if BOUND_FOR_S or more
    controller_stretches: dict[str, Stretch] = field(default_factory=dict)  # the same, by controller
    machine: MachineStretch | None = None  # this machine's busiest stretch, all its cores CPU_BOUND or more


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
        series = [(_when(s, url), s.controllers[url].cpu_s) for s in run if url in s.controllers]
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
        machine=machine_stretch(run, [url for url in read if _on_this_machine(url)], start),
    )


def _when(sample: CpuSample, url: str) -> float:
    """When ``url``'s reading in ``sample`` was taken."""
    at = sample.controllers[url].at
    return sample.at if at is None else at


def _cores(first: CpuSample, last: CpuSample, url: str) -> float:
    """The cores' worth ``url`` took between its readings in ``first`` and ``last``."""
    seconds = _when(last, url) - _when(first, url)
    return (last.controllers[url].cpu_s - first.controllers[url].cpu_s) / seconds if seconds > 0 else 0.0


def _on_this_machine(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def longest_bound_stretch(series: Sequence[tuple[float, float]], processes: int, start: float) -> Stretch | None:
    """The longest run of consecutive readings (when, CPU seconds so far) between which ``processes`` spent
    CPU_BOUND of a core each or more, if it lasted BOUND_FOR_S; times from ``start``."""
    found = _longest_bound(series, processes)
    if found is None:
        return None
    (began, began_cpu_s), (ended, ended_cpu_s) = series[found[0]], series[found[1]]
    return Stretch(began - start, ended - start, (ended_cpu_s - began_cpu_s) / (ended - began) / processes)


def _longest_bound(series: Sequence[tuple[float, float]], processes: int) -> tuple[int, int] | None:
    """``longest_bound_stretch``'s first and last readings, by index."""
    longest: tuple[int, int] | None = None
    began: int | None = None  # the current stretch's first reading
    for index, ((at, cpu_s), (then, then_cpu_s)) in enumerate(itertools.pairwise(series)):
        if then <= at or (then_cpu_s - cpu_s) / (then - at) / processes < CPU_BOUND:
            began = None
            continue
        began = index if began is None else began
        if longest is None or then - series[began][0] > series[longest[1]][0] - series[longest[0]][0]:
            longest = (began, index + 1)
    if longest is None or series[longest[1]][0] - series[longest[0]][0] < BOUND_FOR_S:
        return None
    return longest


def machine_stretch(run: Sequence[CpuSample], local: Sequence[str], start: float) -> MachineStretch | None:
    """This machine's longest stretch of the run with its cores CPU_BOUND busy or more (BOUND_FOR_S at least),
    and who took them: the switch side, the controllers at ``local`` URLs (on this machine), and the rest."""
    read = [(sample, sample.machine) for sample in run if sample.machine is not None]
    if not read:
        return None
    cores = read[0][1].cores
    series = [(sample.at, machine.busy_s) for sample, machine in read]
    found = _longest_bound(series, cores)
    if found is None:
        return None
    first, last = read[found[0]][0], read[found[1]][0]
    seconds = last.at - first.at
    busy = (series[found[1]][1] - series[found[0]][1]) / seconds
    switch = None
    if first.switch_cpu_s is not None and last.switch_cpu_s is not None:
        switch = (last.switch_cpu_s - first.switch_cpu_s) / seconds
    said = [url for url in local if url in first.controllers and url in last.controllers]
    controllers = sum(_cores(first, last, url) for url in said)
    # At most every core: a reading's ticks (10 ms) can make a full stretch look a few percent fuller.
    stretch = Stretch(first.at - start, last.at - start, min(1.0, busy / cores))
    return MachineStretch(stretch, cores, switch, controllers if said else None, len(said))


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
