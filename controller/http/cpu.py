"""The controller's CPU time so far, summed over its worker processes (``serve --workers N``): what a fleet reads
in ``GET /connections`` (``cpu_s``, ``processes``) to tell which side of its run was CPU-bound. Any worker may
answer, so each answers for all: it reads its siblings' times from /proc (Linux), as the children of the parent
that forked them all. Elsewhere, and in a controller of one process, it is this process's own time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
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
    try:
        pids = Path(f"/proc/{_supervisor}/task/{_supervisor}/children").read_text().split()
    except OSError:  # not Linux, or a kernel without the children file
        return own
    seconds, processes = 0.0, 0
    for pid in pids:
        try:
            # the fields after the command's ")": state is the first, utime the 12th and stime the 13th
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended since the list was read: its time is gone with it
            continue
        seconds += (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
        processes += 1
    return ControllerCpu(seconds, processes) if processes else own
