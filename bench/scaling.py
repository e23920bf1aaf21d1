"""The controller on more cores and with its account kept: h2load -c 10 -m 10 against a controller of 2 workers
/ of 1, and against a controller that keeps its account in SQLite / in memory only, each in turns in one run,
the median of each. Client certificates optional (h2load presents none), on loopback only.

Throughput on this shared 2-core machine moves by 10-20% from one run to the next (two workers, taking both cores,
feel every neighbour), as much as the goals' margins, so each row has a second measure beside it: the
controller's own CPU time a request, read from /proc around the same runs, which a neighbour's load moves far
less. Two workers that cost what one does a request scale with the cores they are given."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from processes import cpu_s, server, workers_cpu_s

CLIENTS, STREAMS = 10, 10

AddRow = Callable[[str, str, float | None, str, bool | None], None]
Rate = Callable[[int, int, int], float]


@dataclass(frozen=True)
class Runs:
    """One controller's h2load runs: requests a second, and its CPU microseconds a request, each run's."""

    per_s: list[float]
    cpu_us: list[float]

    @property
    def median_per_s(self) -> float:
        return statistics.median(self.per_s)

    @property
    def median_cpu_us(self) -> float:
        return statistics.median(self.cpu_us)


def scaling_rows(add: AddRow, rate: Rate, requests: int, directory: Path, repeats: int) -> None:
    """``rate(port, clients, streams)``: one h2load run of ``requests`` against a controller on ``port``, its
    requests a second. ``directory``: where config.yaml and certs/ are (the store, ``account.sqlite3``, beside)."""
    kept = directory / "config.yaml"
    memory = directory / "memory.yaml"
    memory.write_text(kept.read_text().replace("controller: {", "controller: {account: null, "))
    base = [sys.executable, "-m", "controller", "serve", "-q", "--client-certs-optional"]
    one, two, off = Runs([], []), Runs([], []), Runs([], [])
    with (
        server([*base, "--config", str(kept), "--workers", "1"]) as (pid_one, port_one),
        server([*base, "--config", str(kept), "--workers", "2"]) as (pid_two, port_two),
        server([*base, "--config", str(memory), "--workers", "1"]) as (pid_off, port_off),
    ):
        for _ in range(repeats):  # in turns: a noisy moment of the shared machine hits all three alike
            _run(one, rate, port_one, pid_one, requests)
            _run(two, rate, port_two, pid_two, requests, workers_cpu_s)
            _run(off, rate, port_off, pid_off, requests)
    workers, single, memory_only = two.median_per_s, one.median_per_s, off.median_per_s
    ratio = workers / single
    add(
        f"controller --workers 2 / 1, h2load -c {CLIENTS} -m {STREAMS}",
        f"{workers:.0f} / {single:.0f} req/s (account in SQLite; medians of {repeats})",
        ratio,
        ">= 1.7x",
        ratio >= 1.7,
    )
    add(
        "  the same, the controller's CPU a request: 1 worker / 2 workers",
        f"{one.median_cpu_us:.0f} / {two.median_cpu_us:.0f} us CPU (both workers' together)",
        one.median_cpu_us / two.median_cpu_us,
        "(~1x)",
        None,
    )
    ratio = single / memory_only
    add(
        f"controller account in SQLite / in memory, h2load -c {CLIENTS} -m {STREAMS}",
        f"{single:.0f} / {memory_only:.0f} req/s (1 worker; medians of {repeats})",
        ratio,
        ">= 0.9x",
        ratio >= 0.9,
    )
    add(
        "  the same, the controller's CPU a request: in memory / in SQLite",
        f"{off.median_cpu_us:.0f} / {one.median_cpu_us:.0f} us CPU (the account's cost, with less of the noise)",
        off.median_cpu_us / one.median_cpu_us,
        "(>= 0.9x: as above)",
        None,
    )


def _run(runs: Runs, rate: Rate, port: int, pid: int, requests: int, cpu: Callable[[int], float] = cpu_s) -> None:
    before = cpu(pid)
    runs.per_s.append(rate(port, CLIENTS, STREAMS))
    runs.cpu_us.append((cpu(pid) - before) / requests * 1e6)
