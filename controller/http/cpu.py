"""The controller's CPU time so far, summed over its worker processes (``serve --workers N``): what a fleet reads
in ``GET /connections`` (``cpu_s``, ``processes``) to tell which side of its run was CPU-bound. Any worker may
answer, so each answers for all: it reads its siblings' times from /proc (Linux), as the children of the parent
that forked them all. Elsewhere, and in a controller of one process, it is this process's own time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dialout.proc_cpu import children_of, cpu_s_of

_supervisor: int | None = None  # the parent's pid, in a worker of serve --workers N


@dataclass(frozen=True)
class ControllerCpu:
    cpu_s: float  # user and system time of every process serving, as far as readable
    processes: int


def count_the_workers_together() -> None:
    """Called in each forked worker: from now on, this process answers for the parent's children."""
    global _supervisor
    _supervisor = os.getppid()


def controller_cpu() -> ControllerCpu:
    own = ControllerCpu(time.process_time(), 1)
    if _supervisor is None:
        return own
    pids = children_of(_supervisor)
    if pids is None:
        return own
    # a worker ended since the list was read: its time is gone with it
    times = [seconds for seconds in map(cpu_s_of, pids) if seconds is not None]
    return ControllerCpu(sum(times), len(times)) if times else own
