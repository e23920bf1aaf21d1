"""CPU times from Linux's /proc, for both ends: a controller answering for its sibling workers
(``controller/http/cpu.py``) and a fleet watching its own workers and the machine (``sim_switch/fleet/cpu_watch.py``).
Each reader returns None where /proc cannot say (not Linux), so that its caller chooses what stands in.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's unit of CPU time


def children_of(pid: int) -> list[int] | None:
    """The children of ``pid``'s main thread, the one that starts processes (the children file is a thread's)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # not Linux, or a kernel without the children file
        return None


def cpu_s_of(pid: int) -> float | None:
    """A process's user and system time so far (None: ended and waited for since it was listed, or not Linux)."""
    try:
        # the fields after the command's ")": state is the first, utime the 12th and stime the 13th
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def machine_busy_s() -> float | None:
    """The seconds this machine's cores have been busy since boot, all of them together (/proc/stat's first line:
    every state but idle and waiting on I/O; guest time is in user time already)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(field) for field in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS_PER_S
