"""The bench runs from a clean checkout: a smoke run with tiny counts (its figures live in bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import REPO
from tests.tools import require


def test_bench_smoke_prints_its_table() -> None:
    require("h2load")  # the bench would install it itself (bench/run.py), which a test must not
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("measure")
    names = [line.split("  ")[0] for line in lines[1:]]
    assert any(name.startswith("controller / bare ASGI, h2load -c 1 -m 100") for name in names)
    assert any(name.startswith("sim-switch / h2load") for name in names)
    assert any(line.startswith("  the floor client / h2load, the same") for line in lines)
    assert any(name.startswith("switch CPU per ping / the floor client's") for name in names)
    assert any(name.startswith("switch CPU per ping: sim-switch / bare httpx on httpcore") for name in names)
    assert any(line.startswith("  CPU per ping, bare httpx: the switch's transport / httpcore's") for line in lines)
    assert any("streams: spill" in name for name in names)
    assert any(line.startswith("  the same by h2load (-c 1 -m 100): the controller's bound") for line in lines)
    assert any(name.startswith("app alone in process") for name in names)
    assert any(name.startswith("sim-switch RSS per in-flight stream") for name in names)
    fleet = [line for line in lines[1:] if line.startswith("fleet: 20 switches")]
    runs = [line for line in fleet if "error-free" in line]
    assert len(runs) == 3
    assert ", --workers 1, 1 controller " in runs[0]
    assert ", --workers 2, 1 controller " in runs[1]
    assert ", --workers 2, 2 controllers (each on 1 worker)" in runs[2]
    # The wall's goal is judged but not asserted: a speed goal is the bench's to measure, not a test's.
    assert all("0 errors" in line and "<= 2x, error-free (" in line for line in runs)
    assert any("--workers 2 / --workers 1" in line for line in fleet)
    assert any("2 controllers of 1 worker / 1 of 2 workers" in line for line in fleet)
    [failover] = [line for line in lines[1:] if line.startswith("failover: SIGKILL")]
    assert " ms (backoff waits " in failover
    # Each of 20 sessions back after the controller's restart, no ping lost, and the account holding both lives.
    [restart] = [line for line in lines[1:] if line.startswith("restart: SIGTERM, start again, 20 persistent")]
    assert " 20 back after it listened: " in restart
    assert " 0 of " in restart
    assert restart.endswith("all in both lives (met)")
    hostile = [line for line in lines[1:] if line.startswith("hostile: ")]
    floods = [line for line in hostile if "victim p99 / alone" in line]
    assert [line.split(":")[1].split(" x ")[0].strip() for line in floods] == [
        "rapid-reset",
        "ping-flood",
        "settings-flood",
        "continuation-flood",
        "silent",
        "200 short connections (50 at once)",
    ]
    assert all("GOAWAY ENHANCE_YOUR_CALM" in line for line in floods[:4])
    assert all(" failed" in line and "<= 5x, no ping failed" in line for line in floods)
    assert any("short connections (50 at once): controller RSS after / before" in line for line in hostile)
    assert any(line.startswith("hostile: /diagnosis at 1,000 connections / at 100") for line in hostile)
    rows = [line for line in lines[1:] if not line.startswith("   ")]  # indented lines are notes, not rows
    assert all(any(unit in line for unit in ("req/s", "pings/s", "wall", "KiB", "us CPU", " ms")) for line in rows)
