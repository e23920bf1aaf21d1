"""What the bench reads of a process from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def rss_kib(pid: int | str = "self") -> int:
    """The resident set size of process ``pid`` (default: this one), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")
