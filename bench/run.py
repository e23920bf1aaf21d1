"""The bench: one table, every figure a ratio against a reference measured in the same run.

    .venv/bin/python bench/run.py            # full counts (a few minutes)
    .venv/bin/python bench/run.py --smoke    # tiny counts: checks that everything runs (CI)

1. controller efficiency: h2load against the controller / h2load against bench/bare_app.py (the same Hypercorn
   settings and TLS, no Quart), at -c 1 -m 100 and -c 10 -m 10. h2load cannot present a client certificate
   (nghttp2 issue #1479), so both serve with client certificates optional, on loopback only.
2. switch as load generator: the sim-switch's pings/s (1 connection, 100 in flight) / h2load's, same controller.
3. multiplexing at depth: 1000 pings of 1 s, queue and spill: wall time, overhead p50/p99.
4. memory: controller RSS per in-flight stream (1000 in flight against idle).
5. fleet: 1000 switches, each its own certificate, client and connection, x 10 pings at 5 s: wall time, TLS
   handshake per switch, pings/s, errors (must be 0).

Loopback only, bounded counts. Installs h2load (Debian's nghttp2-client) when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.config import Fleet, Scenario, SwitchConfig  # noqa: E402
from controller.pki import ensure_certs, generate_certs  # noqa: E402
from sim_switch.client import run_scenario  # noqa: E402
from sim_switch.fleet import run_fleet  # noqa: E402
from sim_switch.fleet_report import fleet_json, judge_fleet  # noqa: E402
from sim_switch.tls import client_ssl_context  # noqa: E402


@dataclass(frozen=True)
class Row:
    name: str
    figure: str
    ratio: float | None
    goal: str
    met: bool | None


class Table:
    """Prints its header at once and each row as soon as it is measured: a long run shows progress, and a crash
    late in the run loses nothing already measured."""

    def __init__(self) -> None:
        print(f"{'measure':<58} {'figure':<64} {'ratio':>7}  goal", flush=True)

    def append(self, row: Row) -> None:
        shown = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        met = {True: "met", False: "NOT met", None: "-"}[row.met]
        print(f"{row.name:<58} {row.figure:<64} {shown:>7}  {row.goal} ({met})", flush=True)


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True, env=env)
    return shutil.which("h2load") or "h2load"


@contextmanager
def server(command: list[str]) -> Iterator[tuple[int, int]]:
    """Start a server that prints 'listening on https://127.0.0.1:PORT' on stderr; yield (pid, port)."""
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stderr is not None
    port = 0
    for line in process.stderr:
        if "listening on https://" in line:
            port = int(line.rsplit(":", 1)[1])
            break
    # Keep reading: a server whose stderr pipe fills up blocks on its next log line, shutdown included.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    try:
        if not port:
            raise RuntimeError(f"{command[2]} exited before listening")
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(timeout=60)
        process.stderr.close()


def h2load_rate(h2load: str, port: int, requests: int, clients: int, streams: int) -> float:
    done = subprocess.run(
        [h2load, "-n", str(requests), "-c", str(clients), "-m", str(streams), f"https://127.0.0.1:{port}/ping?interval=0"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    match = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", done.stdout)
    succeeded = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", done.stdout)
    if not match or not succeeded or int(succeeded.group(1)) != requests:
        raise RuntimeError(f"h2load did not finish cleanly:\n{done.stdout}")
    return float(match.group(1))


def median_rate(h2load: str, port: int, requests: int, clients: int, streams: int, repeats: int) -> float:
    return statistics.median(h2load_rate(h2load, port, requests, clients, streams) for _ in range(repeats))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def switch_run(url: str, certs: Path, pings: tuple[float, ...], streams: str) -> tuple[float, list[float]]:
    result = await run_scenario(Scenario("bench", pings, streams=streams), url, client_ssl_context(certs, "switch-1"),
                                120.0, lambda event: None, "switch-1")  # fmt: skip
    failed = [ping for ping in result.pings if not ping.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} pings failed, e.g. {failed[0].error}")
    return result.wall_time_s, sorted(ping.elapsed_s - ping.interval_s for ping in result.pings)


async def depth_with_rss(url: str, certs: Path, pid: int, count: int) -> tuple[float, list[float], int]:
    """A depth run (spill) and the controller's RSS while all ``count`` pings are in flight."""
    run = asyncio.create_task(switch_run(url, certs, (1.0,) * count, "spill"))
    await asyncio.sleep(0.6)  # measurement timing, not synchronisation: mid-way through the 1 s interval
    busy_rss = rss_kib(pid)
    wall_s, overheads = await run
    return wall_s, overheads, busy_rss


def fleet_row(url: str, certs: Path, fleet: Fleet) -> Row:
    scenario = Scenario("fleet", fleet=fleet)
    result = asyncio.run(run_fleet(scenario, url, certs, SwitchConfig(certs_dir=certs), lambda event: None))
    verdict = judge_fleet(result)
    report = fleet_json(result, verdict)
    handshake_ms = report["tls_handshake_s"].get("p50", 0.0) * 1000
    figure = (f"{result.wall_time_s:.2f} s wall, {report['pings_per_s']:.0f} pings/s, TLS p50 {handshake_ms:.1f} ms, "
              f"{report['failed']} errors")  # fmt: skip
    name = f"fleet: {fleet.switches} switches x {fleet.pings} pings at {fleet.interval_s:g} s"
    return Row(name, figure, result.wall_time_s / fleet.interval_s, "error-free", report["failed"] == 0)


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, to check that everything runs")
    args = parser.parse_args()
    requests, repeats, depth = (300, 1, 50) if args.smoke else (20_000, 3, 1000)
    fleet = Fleet(switches=20, id_pattern="fleet-{n:04d}", pings=2, interval_s=0.1) if args.smoke else \
        Fleet(switches=1000, id_pattern="fleet-{n:04d}", pings=10, interval_s=5.0)  # fmt: skip
    h2load = ensure_h2load()
    rows = Table()
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        generate_certs(certs, ["localhost", "127.0.0.1"], ["switch-1"])
        ensure_certs(certs, ["localhost", "127.0.0.1"], fleet.switch_ids())
        config = Path(tmp) / "config.yaml"
        config.write_text("controller: {host: 127.0.0.1, port: 0, certs_dir: certs, switches: [switch-1, 'fleet-*']}\n"
                          "switch: {certs_dir: certs}\n")  # fmt: skip
        controller = [sys.executable, "-m", "controller", "--config", str(config), "-q", "--client-certs-optional"]
        bare = [sys.executable, "bench/bare_app.py", "--certs", str(certs)]
        with server(controller) as (pid, port), server(bare) as (_, bare_port):
            url = f"https://127.0.0.1:{port}"
            rates = {}
            for clients, streams in ((1, 100), (10, 10)):
                ours = median_rate(h2load, port, requests, clients, streams, repeats)
                ceiling = median_rate(h2load, bare_port, requests, clients, streams, repeats)
                rates[(clients, streams)] = ours
                ratio = ours / ceiling
                name = f"controller / bare ASGI, h2load -c {clients} -m {streams}"
                rows.append(Row(name, f"{ours:.0f} / {ceiling:.0f} req/s", ratio, ">= 0.9x", ratio >= 0.9))
            wall_s, _ = asyncio.run(switch_run(url, certs, (0.0,) * requests, "queue"))
            switch_rate = requests / wall_s
            h2load_1x100 = rates[(1, 100)]
            rows.append(Row("sim-switch / h2load, 1 connection x 100 streams",
                            f"{switch_rate:.0f} / {h2load_1x100:.0f} pings/s", switch_rate / h2load_1x100, ">= 1.0x",
                            switch_rate >= h2load_1x100))  # fmt: skip
            idle_rss = rss_kib(pid)
            spill_wall, spill_over, busy_rss = asyncio.run(depth_with_rss(url, certs, pid, depth))
            queue_wall, queue_over = asyncio.run(switch_run(url, certs, (1.0,) * depth, "queue"))
            for policy, wall, over in (("spill", spill_wall, spill_over), ("queue", queue_wall, queue_over)):
                rows.append(Row(f"{depth} pings x 1 s, streams: {policy}",
                                f"{wall:.2f} s wall; overhead p50 {percentile(over, 0.5) * 1000:.0f} ms, "
                                f"p99 {percentile(over, 0.99) * 1000:.0f} ms", wall / 1.0, "<= 1.3x the interval",
                                wall <= 1.3))  # fmt: skip
            per_stream = (busy_rss - idle_rss) / depth
            rows.append(Row(f"controller RSS per in-flight stream ({depth} in flight vs idle)",
                            f"{per_stream:.1f} KiB ({idle_rss} -> {busy_rss} KiB)", None, "<= 20 KiB",
                            per_stream <= 20))  # fmt: skip
            rows.append(fleet_row(url, certs, fleet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
