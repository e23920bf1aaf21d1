"""Each side's CPU time read every ``PERIOD_S`` while a fleet runs, on a thread of its own: a fleet's intake can
hold both sides near a core each for seconds and the run still average well below it over its wall (most of which
is the interval every ping waits), so the bottleneck is also judged on each side's longest busy stretch
(``bottleneck.longest_bound_stretch``), and on the machine's when neither side was bound.

The switch side is this process and the worker processes it starts while watched (their times from /proc: Linux;
elsewhere a run over workers has no switch series); children it had before, such as a bench's controllers, are not
the switch side's. Each controller's is its ``GET /connections`` (``cpu_s``), asked on one connection for the
whole run. The machine's is all its cores' busy time (/proc/stat). The /proc readers are ``dialout.proc_cpu``.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import httpx

from dialout.proc_cpu import children_of, cpu_s_of, machine_busy_s

PERIOD_S = 0.5  # /proc counts CPU in 10 ms ticks: +/-2% of a core a reading at this period
# How long a controller may take to say: at the run's ends, what its whole-run share rests on; between, a reading
# missed is one gap in the series.
ENDS_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ControllerCpu:
    """What a controller says of its CPU: seconds so far, over how many worker processes."""

    cpu_s: float
    processes: int = 1
    at: float | None = None  # when, in epoch seconds (half-way through its answer); None: its sample's


@dataclass(frozen=True)
class MachineCpu:
    """This machine's CPU: the seconds its cores have been busy, all of them together, and how many there are."""

    busy_s: float
    cores: int


@dataclass(frozen=True)
class CpuSample:
    # when this process's and this machine's readings were taken, in epoch seconds as a fleet's tally times its
    # run (FleetTally.started_at); each controller's has its own
    at: float
    switch_cpu_s: float | None  # this process and its workers together; None where the workers cannot be read
    controllers: dict[str, ControllerCpu]  # those that said
    machine: MachineCpu | None = None  # None: not read (not Linux)


class CpuWatch:
    """``with CpuWatch(urls, asking, workers) as watch:`` around a fleet run in this process (``workers`` 1) or
    over worker processes it starts; ``watch.samples`` after it, the first taken on entry and the last on exit.
    ``asking``: how to ask the controllers (a client certificate's context, None for cleartext, and as which
    switch: not one of the fleet, whose accounts would then count the asking); None not to ask them."""

    def __init__(
        self,
        urls: tuple[str, ...],
        asking: tuple[ssl.SSLContext | None, str] | None,
        workers: int,
        period_s: float = PERIOD_S,
    ) -> None:
        self.samples: list[CpuSample] = []
        ssl_context, self._switch_id = asking or (None, "")
        self._urls = urls if asking else ()
        self._workers, self._period_s = workers, period_s
        self._not_workers: frozenset[int] = frozenset()  # children from before: not the fleet's
        self._reaped_before_s = 0.0  # the CPU time of children ended and waited for before the watch
        self._client = httpx.Client(verify=ssl_context or False, trust_env=False, timeout=max(1.0, 2 * period_s))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dialout-cpu-watch", daemon=True)

    def __enter__(self) -> CpuWatch:
        self._not_workers = frozenset(children_of(os.getpid()) or ())
        self._reaped_before_s = _reaped_cpu_s()
        self._sample(ENDS_TIMEOUT_S)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self._sample(ENDS_TIMEOUT_S)
        self._client.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._period_s):
            self._sample()

    def _sample(self, timeout_s: float | None = None) -> None:
        """``timeout_s``: for the controllers' answers (None: the client's)."""
        at, switch_cpu_s, machine = time.time(), self._switch_side_cpu_s(), _machine_cpu()  # one instant
        controllers = ask_controller_cpu(self._client, self._urls, self._switch_id, timeout_s)
        self.samples.append(CpuSample(at, switch_cpu_s, controllers, machine))

    def _switch_side_cpu_s(self) -> float | None:
        """This process's CPU time so far, and its workers' if it runs the fleet over worker processes: those
        running from /proc, those ended and waited for (``join``) from the kernel's count of them. (Read in that
        order, a worker waited for in between is missed by one reading, never counted twice.)"""
        own = time.process_time()
        if self._workers == 1:
            return own
        reaped = _reaped_cpu_s() - self._reaped_before_s
        children = children_of(os.getpid())
        if children is None:
            return None
        running = (cpu_s_of(pid) for pid in children if pid not in self._not_workers)
        return own + reaped + sum(seconds for seconds in running if seconds is not None)


def _machine_cpu() -> MachineCpu | None:
    busy_s = machine_busy_s()
    return None if busy_s is None else MachineCpu(busy_s, os.cpu_count() or 1)


def _reaped_cpu_s() -> float:
    """The CPU time of this process's children that have ended and been waited for."""
    times = os.times()
    return times.children_user + times.children_system


def ask_controller_cpu(
    client: httpx.Client, urls: tuple[str, ...], switch_id: str, timeout_s: float | None = None
) -> dict[str, ControllerCpu]:
    """Each controller's CPU so far, from its ``GET /connections`` (asked as ``switch_id``, for nobody's
    connections in particular); a controller that does not say (not dialout's, or down) is left out, and one that
    does not count its processes (before workers) is one process."""
    said: dict[str, ControllerCpu] = {}
    for url in urls:
        try:
            timeout = client.timeout if timeout_s is None else httpx.Timeout(timeout_s)
            asked = time.time()
            answer = client.get(f"{url.rstrip('/')}/connections", params={"switch": switch_id}, timeout=timeout).json()
            # taken somewhere in its answer: half-way is the best guess
            at = asked + (time.time() - asked) / 2
            said[url] = ControllerCpu(float(answer["cpu_s"]), max(1, int(answer.get("processes", 1))), at)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            continue
    return said
