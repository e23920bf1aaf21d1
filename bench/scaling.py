"""The controller on more cores and with its account kept: h2load -c 10 -m 10 against a controller of 2 workers
/ of 1, and against a controller that keeps its account in SQLite / in memory only, each pair in turns in one
run, the median of each. Client certificates optional (h2load presents none), on loopback only."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from processes import server

CLIENTS, STREAMS = 10, 10

AddRow = Callable[[str, str, float | None, str, bool | None], None]


def scaling_rows(add: AddRow, rate: Callable[[int, int, int], float], directory: Path, repeats: int) -> None:
    """``rate(port, clients, streams)``: one h2load run's requests per second against a controller on ``port``.
    ``directory``: where config.yaml and certs/ are (the store, ``account.sqlite3``, is made beside it)."""
    kept = directory / "config.yaml"
    memory = directory / "memory.yaml"
    memory.write_text(kept.read_text().replace("controller: {", "controller: {account: null, "))
    base = [sys.executable, "-m", "controller", "serve", "-q", "--client-certs-optional"]
    one, two, off = [], [], []
    with (
        server([*base, "--config", str(kept), "--workers", "1"]) as (_, port_one),
        server([*base, "--config", str(kept), "--workers", "2"]) as (_, port_two),
        server([*base, "--config", str(memory), "--workers", "1"]) as (_, port_off),
    ):
        for _ in range(repeats):  # in turns: a noisy moment of the shared machine hits all three alike
            one.append(rate(port_one, CLIENTS, STREAMS))
            two.append(rate(port_two, CLIENTS, STREAMS))
            off.append(rate(port_off, CLIENTS, STREAMS))
    workers, single, memory_only = (statistics.median(rates) for rates in (two, one, off))
    ratio = workers / single
    add(
        f"controller --workers 2 / 1, h2load -c {CLIENTS} -m {STREAMS}",
        f"{workers:.0f} / {single:.0f} req/s (account in SQLite)",
        ratio,
        ">= 1.7x",
        ratio >= 1.7,
    )
    ratio = single / memory_only
    add(
        f"controller account in SQLite / in memory, h2load -c {CLIENTS} -m {STREAMS}",
        f"{single:.0f} / {memory_only:.0f} req/s (1 worker)",
        ratio,
        ">= 0.9x",
        ratio >= 0.9,
    )
