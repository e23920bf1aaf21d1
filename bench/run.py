"""The bench: one table, every figure a ratio against a reference measured in the same run.

    .venv/bin/python bench/run.py            # full counts (a few minutes)
    .venv/bin/python bench/run.py --smoke    # tiny counts: checks that everything runs (CI)

1. controller efficiency: h2load against the controller / h2load against bench/bare_app.py (the same Hypercorn
   settings and TLS, no Quart), at -c 1 -m 100 and -c 10 -m 10. h2load cannot present a client certificate
   (nghttp2 issue #1479), so both serve with client certificates optional, on loopback only. Then where the
   difference goes: the CPU per request of the ASGI app alone, in this process (bench/app_cost.py).
2. switch as load generator: the sim-switch's CPU per ping (this process, every trace and the cross-check on) /
   the floor of a Python HTTP/2 client's (bench/floor_client.py: asyncio and h2, nothing else), 1 connection x
   100 in flight; its pings/s / h2load's, same controller, taking turns (the floor client's too, and h2load's
   beside a process as busy as the switch: bench/neighbour.py); the references
   beneath it, a bare httpx client keeping 100 requests in flight on one connection on the switch's own transport
   and on httpcore's HTTP/2.
3. multiplexing at depth: 1000 pings of 1 s, spill and queue: wall time, overhead p50/p99; spill against h2load in
   the same shape (-c 10 -m 100, taking turns: the controller's bound), and again against a controller of 2 workers.
4. memory: RSS per in-flight stream (1000 held open against idle), of the controller and of the switch.
5. fleet: 1000 switches, each its own certificate, client and connection, x 10 pings at 5 s: wall time, TLS
   handshake per switch, pings/s, errors (must be 0), each side's CPU; in this process and over 2 workers against
   a controller of 2 workers, then over 2 workers spread over 2 controllers of a worker each (the same cores).
6. failover: a session over 2 controllers, the first SIGKILLed: time to the first ping answered by the second.
7. scaling (bench/scaling.py): h2load -c 10 -m 10 against a controller of 2 workers / of 1; with its account in
   SQLite / in memory only; medians of 5 in turns, each with the controller's own CPU a request beside it.
8. restart (bench/restart.py): 1000 persistent switches, the controller (2 workers) stopped with SIGTERM and started
   again: each switch's way back after it listens / the backoff's cap + 2 s, pings lost, the account's two lives.
9. hostile peers (bench/hostile.py): a victim switch's p99 under each attack / alone; /diagnosis's answer (the
   endpoint's own function) at 10,000 connections / at 1,000, in CPU; the controller's RSS after 20,000 short
   connections / before.

Loopback only, bounded counts. Installs h2load (Debian's nghttp2-client) when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import app_cost  # noqa: E402
import hostile  # noqa: E402
import httpx  # noqa: E402
import restart  # noqa: E402
from floor_client import floor_rate  # noqa: E402
from hostile import hostile_rows  # noqa: E402
from neighbour import busy_neighbour  # noqa: E402
from processes import rss_kib, server  # noqa: E402
from scaling import scaling_rows  # noqa: E402

from dialout.asyncio_seam import smaller_tls_read_buffers  # noqa: E402
from dialout.collector import pace_for_many_objects  # noqa: E402
from dialout.config import (  # noqa: E402
    DEFAULT_MAX_CONCURRENT_STREAMS,
    Fleet,
    OneShot,
    Scenario,
    Schedule,
    StreamPolicy,
    SwitchConfig,
)
from dialout.pki import ensure_certs, generate_certs  # noqa: E402
from dialout.text import plural  # noqa: E402
from sim_switch.dial.client import run_scenario  # noqa: E402
from sim_switch.dial.session import run_session  # noqa: E402
from sim_switch.dial.settings import RunSettings  # noqa: E402
from sim_switch.dial.tls import client_ssl_context  # noqa: E402
from sim_switch.fleet.bottleneck import BOUND_FOR_S, CPU_BOUND, cpu_shares  # noqa: E402
from sim_switch.fleet.cpu_watch import CpuWatch  # noqa: E402
from sim_switch.fleet.run import run_fleet  # noqa: E402
from sim_switch.fleet.tally import tally  # noqa: E402
from sim_switch.fleet.verdict import judge_fleet  # noqa: E402
from sim_switch.fleet.workers import run_in_workers  # noqa: E402
from sim_switch.model.events import FailedOver, LinkUp, Reconnecting, TraceEvent  # noqa: E402
from sim_switch.model.results import RunResult  # noqa: E402
from sim_switch.render.fleet import bottleneck_sentence, fleet_json  # noqa: E402
from sim_switch.render.report import ping_error  # noqa: E402
from sim_switch.wire.transport import DialOptions, SwitchTransport  # noqa: E402


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
        met = {True: " (met)", False: " (NOT met)", None: ""}[row.met]
        print(f"{row.name:<58} {row.figure:<64} {shown:>7}  {row.goal}{met}", flush=True)


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True, env=env)
    return shutil.which("h2load") or "h2load"


def h2load_run(h2load: str, port: int, requests: int, clients: int, streams: int, interval_s: float = 0.0) -> str:
    """h2load's report of ``requests`` pings of ``interval_s``, every one of them answered 200 (else RuntimeError)."""
    done = subprocess.run(
        [
            *(h2load, "-n", str(requests), "-c", str(clients), "-m", str(streams)),
            f"https://127.0.0.1:{port}/ping?interval={interval_s:g}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    succeeded = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", done.stdout)
    if not succeeded or int(succeeded.group(1)) != requests:
        raise RuntimeError(f"h2load did not finish cleanly:\n{done.stdout}")
    return done.stdout


def h2load_rate(h2load: str, port: int, requests: int, clients: int, streams: int) -> float:
    """Requests a second of pings of 0 s."""
    report = h2load_run(h2load, port, requests, clients, streams)
    match = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", report)
    if not match:
        raise RuntimeError(f"h2load said no rate:\n{report}")
    return float(match.group(1))


def h2load_wall(h2load: str, port: int, requests: int, clients: int, streams: int, interval_s: float) -> float:
    """Seconds from h2load's first connection to its last answer."""
    report = h2load_run(h2load, port, requests, clients, streams, interval_s)
    match = re.search(r"finished in ([\d.]+)(m?s)", report)
    if not match:
        raise RuntimeError(f"h2load said no time:\n{report}")
    return float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


def median_rate(h2load: str, port: int, requests: int, clients: int, streams: int, repeats: int) -> float:
    return statistics.median(h2load_rate(h2load, port, requests, clients, streams) for _ in range(repeats))


async def switch_run(
    url: str, certs: Path, pings: tuple[float, ...], streams: StreamPolicy
) -> tuple[float, list[float]]:
    scenario = Scenario("bench", OneShot(pings), streams=streams)
    settings = RunSettings(scenario, SwitchConfig(request_timeout_s=120.0), client_ssl_context(certs, "switch-1"))
    result = await run_scenario(settings, url, lambda event: None)
    failed = [ping for ping in result.pings if not ping.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} pings failed, e.g. {ping_error(failed[0])}")
    return result.wall_time_s, sorted(ping.elapsed_s - ping.interval_s for ping in result.pings)


@dataclass(frozen=True)
class Rate:
    per_s: float  # requests a second
    cpu_us: float  # this process's CPU per request (microseconds): the client's own cost


async def bare_client_rate(url: str, certs: Path, requests: int, in_flight: int, wire: bool) -> Rate:
    """A client's ceiling: one httpx client, ``in_flight`` loops of GET /ping on one HTTP/2 connection, no
    tracing, no accounting; on the switch's own transport (``wire``) or on httpcore's HTTP/2 (the switch's until
    issue 19). What the sim-switch adds is the difference."""
    left = requests
    context = client_ssl_context(certs, "switch-1")
    transport = SwitchTransport(DialOptions(context, 10.0), StreamPolicy.QUEUE) if wire else None
    client = httpx.AsyncClient(http2=True, verify=context, trust_env=False, transport=transport)
    async with client:

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.get(f"{url}/ping?interval=0")
                if response.status_code != 200:
                    raise RuntimeError(f"/ping answered {response.status_code}")

        started, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            for _ in range(in_flight):
                group.create_task(loop())
        return Rate(requests / (time.perf_counter() - started), (time.process_time() - cpu) / requests * 1e6)


HOLD_S = 3.0  # the interval of the pings held open while memory is read


async def memory_in_flight(url: str, certs: Path, pid: int, count: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """RSS (KiB, idle then busy) of the controller and of this process, the switch: idle, and with ``count`` pings
    of HOLD_S held open, read once the controller counts every one of them in flight (its /connections), not at
    a guessed moment."""
    async with httpx.AsyncClient(http2=True, verify=client_ssl_context(certs, "switch-1"), trust_env=False) as observer:

        async def in_flight() -> int:
            response = await observer.get(f"{url}/connections?switch=switch-1")
            return sum(connection["in_flight"] for connection in response.json()["connections"])

        await in_flight()  # the observer's connection is open before the idle figure, like everything else
        await switch_run(url, certs, (0.0,), StreamPolicy.SPILL)  # the first TLS and httpx use of this process
        idle = rss_kib(pid), rss_kib()
        run = asyncio.create_task(switch_run(url, certs, (HOLD_S,) * count, StreamPolicy.SPILL))
        async with asyncio.timeout(HOLD_S * 0.9):
            while await in_flight() < count:  # (the observer's own request is a question: not in flight)
                await asyncio.sleep(0.05)  # polling interval
        busy = rss_kib(pid), rss_kib()
        await run
    return (idle[0], busy[0]), (idle[1], busy[1])


def memory_row(who: str, count: int, idle_busy: tuple[int, int], goal_kib: float) -> Row:
    idle, busy = idle_busy
    per_stream = (busy - idle) / count
    return Row(
        f"{who} RSS per in-flight stream ({count} held open vs idle)",
        f"{per_stream:.1f} KiB ({idle:,} -> {busy:,} KiB)",
        None,
        f"<= {goal_kib:g} KiB",
        per_stream <= goal_kib,
    )


# A fleet's wall at most twice its interval, the wait every ping has anyway (issue 32): the rest is its intake and its
# answers, both sides' CPU on this machine's cores.
FLEET_WALL_X = 2.0


def fleet_rows(rows: Table, url: str, certs: Path, fleet: Fleet) -> dict[int, float]:
    """The fleet in this process (--workers 1), then over 2 worker processes, against one controller; and the
    ratio of the two. Their walls, by the switch's workers."""
    walls = {workers: fleet_row(rows, (url,), certs, fleet, workers) for workers in (1, 2)}
    rows.append(
        Row(
            f"{_fleet_name(fleet)}: wall, --workers 2 / --workers 1",
            f"{walls[2]:.2f} / {walls[1]:.2f} s",
            walls[2] / walls[1],
            "(what a second core buys)",
            None,
        )
    )
    return walls


def replicas_row(rows: Table, urls: tuple[str, str], certs: Path, fleet: Fleet, one_controller_s: float) -> None:
    """The fleet over 2 workers spread over 2 controllers of a worker each, against 1 controller of 2 workers: the
    same processes on the same cores, so that the ratio is what splitting the controller into replicas costs
    (two replicas of 2 workers each would put 4 controller processes on this machine's 2 cores)."""
    wall = fleet_row(rows, urls, certs, fleet, 2, "each on 1 worker")
    rows.append(
        Row(
            f"{_fleet_name(fleet)}: wall, 2 controllers of 1 worker / 1 of 2 workers",
            f"{wall:.2f} / {one_controller_s:.2f} s",
            wall / one_controller_s,
            "(what splitting the controller in two costs on the same cores)",
            None,
        )
    )


def _fleet_name(fleet: Fleet) -> str:
    return f"fleet: {fleet.switches} switches x {fleet.pings} pings at {fleet.interval_s:g} s"


def fleet_row(
    rows: Table, controllers: tuple[str, ...], certs: Path, fleet: Fleet, workers: int, how: str = "2 workers"
) -> float:
    """One fleet, its row, and its bottleneck line: the fleet in this process (``workers`` 1) or over worker
    processes. Its wall."""
    settings = RunSettings(Scenario("fleet", fleet), SwitchConfig(certs_dir=certs), None)
    with CpuWatch(controllers, (client_ssl_context(certs, "switch-1"), "switch-1"), workers) as watch:
        if workers == 1:
            fleet_tally = tally(asyncio.run(run_fleet(settings, controllers, lambda event: None)))
        else:
            fleet_tally = run_in_workers(settings, controllers, None, workers, lambda done, total: None, None)
    shares = cpu_shares(fleet_tally, watch.samples)
    report = fleet_json(fleet_tally, judge_fleet(fleet_tally), shares)
    handshake_ms = report["tls_handshake_s"].get("p50", 0.0) * 1000
    theirs = "/".join(f"{share:.0%}" for share in shares.controllers.values())
    figure = (
        f"{fleet_tally.wall_time_s:.2f} s wall, {report['pings_per_s']:.0f} pings/s, TLS p50 "
        f"{handshake_ms:.1f} ms, {report['failed']} errors, CPU: switch {shares.switch:.0%} per worker, "
        f"controller {theirs or '?'}"
    )
    rows.append(
        Row(
            f"{_fleet_name(fleet)}, --workers {workers}, {plural(len(controllers), 'controller')} ({how})",
            figure,
            fleet_tally.wall_time_s / fleet.interval_s,
            f"<= {FLEET_WALL_X:g}x, error-free",
            report["failed"] == 0 and fleet_tally.wall_time_s <= FLEET_WALL_X * fleet.interval_s,
        )
    )
    said = (
        bottleneck_sentence(shares)
        or f"neither side nor the machine at {CPU_BOUND:.0%}, over the run or for {BOUND_FOR_S:g} s of it"
    )
    print(f"   bottleneck: {said}", flush=True)
    if report["errors_by_kind"]:
        print(f"   errors: {report['errors_by_kind']}", flush=True)
    return fleet_tally.wall_time_s


def failover_row(rows: Table, urls: tuple[str, str], pids: tuple[int, int], certs: Path) -> None:
    """A session over [first, second]; the first is SIGKILLed: the time from the kill to the first ping answered
    by the second, against the backoff waits the session's policy made it take on the way."""
    schedule = Schedule(every_s=0.1, batch=1, interval_s=0.05, count=60)
    switch = SwitchConfig(certs_dir=certs, request_timeout_s=10)
    marks: dict[str, float] = {}
    waits: list[float] = []
    answered = asyncio.Event()

    def watch(event: TraceEvent) -> None:
        if isinstance(event, Reconnecting) and "kill" in marks:
            waits.append(event.delay_s)
        if isinstance(event, FailedOver):
            marks["failover"] = time.perf_counter()
        if isinstance(event, LinkUp):
            answered.set()

    async def run() -> RunResult:
        session = asyncio.create_task(
            run_session(
                RunSettings(Scenario("failover", schedule), switch, client_ssl_context(certs, "switch-1")), urls, watch
            )
        )
        await answered.wait()
        await asyncio.sleep(0.5)  # a few pings on the first controller
        marks["kill"] = time.perf_counter()
        os.kill(pids[0], signal.SIGKILL)
        return await session

    result = asyncio.run(run())
    took = marks["failover"] - marks["kill"]
    lost = sum(not ping.ok for ping in result.pings)
    rows.append(
        Row(
            "failover: SIGKILL the first of 2 controllers -> first ping answered by the second",
            f"{took * 1000:.0f} ms (backoff waits {' + '.join(f'{w:.2f}' for w in waits)} s), "
            f"{plural(lost, 'ping')} lost in flight",
            took / (sum(waits) or 1e-9),
            "(x the policy's own waits)",
            None,
        )
    )


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


@dataclass(frozen=True)
class Counts:
    requests: int  # per h2load run, and per switch run
    repeats: int  # runs per figure (the median is shown)
    depth: int
    app_requests: int  # per round of bench/app_cost.py
    fleet: Fleet
    restart: restart.RestartCounts
    scaling_repeats: int  # runs per figure of the scaling rows: throughput here moves ~10% a run, as the goals' margins


FULL = Counts(
    20_000,
    3,
    1000,
    3000,
    Fleet(switches=1000, id_pattern="fleet-{n:04d}", pings=10, interval_s=5.0),
    restart.FULL,
    5,
)
SMOKE = Counts(
    300, 1, 50, 200, Fleet(switches=20, id_pattern="fleet-{n:04d}", pings=2, interval_s=0.1), restart.SMOKE, 1
)


def controller_rows(rows: Table, h2load: str, port: int, bare_port: int, counts: Counts) -> None:
    """Rows 1: the controller against the bare ASGI app, then the app's share."""
    for clients, streams in ((1, 100), (10, 10)):
        ours = median_rate(h2load, port, counts.requests, clients, streams, counts.repeats)
        ceiling = median_rate(h2load, bare_port, counts.requests, clients, streams, counts.repeats)
        ratio = ours / ceiling
        name = f"controller / bare ASGI, h2load -c {clients} -m {streams}"
        rows.append(Row(name, f"{ours:.0f} / {ceiling:.0f} req/s", ratio, ">= 0.9x", ratio >= 0.9))
    with tempfile.TemporaryDirectory() as tmp:
        apps = app_cost.apps(Path(tmp))
        us = asyncio.run(app_cost.measure(apps, counts.app_requests, max(counts.repeats, 3)))
    figure = " / ".join(f"{us[name]:.0f}" for name in apps) + " us CPU"
    rows.append(
        Row(
            "app alone in process: ours / smallest Quart / bare ASGI",
            figure,
            us["controller app"] / us["bare ASGI"],
            "(where the difference goes)",
            None,
        )
    )


def switch_rows(rows: Table, url: str, certs: Path, counts: Counts, h2load: str) -> None:
    """Rows 2, taking turns so that a noisy moment hits all alike (h2load, the switch's reference, too)."""
    references: list[float] = []
    beside: list[float] = []
    ours: list[Rate] = []
    floor: list[Rate] = []
    wire: list[Rate] = []
    core: list[Rate] = []
    for _ in range(counts.repeats):
        references.append(h2load_rate(h2load, port_of(url), counts.requests, 1, 100))
        cpu = time.process_time()
        wall_s, _ = asyncio.run(switch_run(url, certs, (0.0,) * counts.requests, StreamPolicy.QUEUE))
        ours.append(Rate(counts.requests / wall_s, (time.process_time() - cpu) / counts.requests * 1e6))
        with busy_neighbour(ours[-1].cpu_us * ours[-1].per_s / 1e6):  # as busy as the switch was
            beside.append(h2load_rate(h2load, port_of(url), counts.requests, 1, 100))
        floored = asyncio.run(floor_rate(url, client_ssl_context(certs, "switch-1"), counts.requests, 100))
        floor.append(Rate(floored.per_s, floored.cpu_us))
        wire.append(asyncio.run(bare_client_rate(url, certs, counts.requests, 100, wire=True)))
        core.append(asyncio.run(bare_client_rate(url, certs, counts.requests, 100, wire=False)))
    switch, bare_floor, bare_wire, bare_core = (
        Rate(statistics.median(r.per_s for r in runs), statistics.median(r.cpu_us for r in runs))
        for runs in (ours, floor, wire, core)
    )
    rows.append(
        Row(
            "switch CPU per ping / the floor client's, 1 conn x 100 streams",
            f"{switch.cpu_us:.0f} / {bare_floor.cpu_us:.0f} us CPU (traces and cross-check on)",
            switch.cpu_us / bare_floor.cpu_us,
            "<= 1.4x",
            switch.cpu_us <= 1.4 * bare_floor.cpu_us,
        )
    )
    reference = statistics.median(references)
    rows.append(
        Row(
            "sim-switch / h2load, 1 connection x 100 streams",
            f"{switch.per_s:.0f} / {reference:.0f} pings/s",
            switch.per_s / reference,
            ">= 1.0x",
            switch.per_s >= reference,
        )
    )
    busy = switch.cpu_us * switch.per_s / 1e6
    rows.append(
        Row(
            "  h2load beside a neighbour as busy as the switch / alone",
            f"{statistics.median(beside):.0f} / {reference:.0f} pings/s (the neighbour at {busy:.0%} of a core)",
            statistics.median(beside) / reference,
            "(what any client that busy costs this machine)",
            None,
        )
    )
    rows.append(
        Row(
            "  the floor client / h2load, the same",
            f"{bare_floor.per_s:.0f} / {reference:.0f} pings/s",
            bare_floor.per_s / reference,
            "(what a Python client gets from this controller)",
            None,
        )
    )
    rows.append(
        Row(
            "  sim-switch / bare httpx on its transport, the same",
            f"{switch.per_s:.0f} / {bare_wire.per_s:.0f} pings/s",
            switch.per_s / bare_wire.per_s,
            "(what tracing and accounting add)",
            None,
        )
    )
    rows.append(
        Row(
            "  bare httpx: the switch's transport / httpcore's",
            f"{bare_wire.per_s:.0f} / {bare_core.per_s:.0f} pings/s",
            bare_wire.per_s / bare_core.per_s,
            "(the transport alone)",
            None,
        )
    )
    rows.append(
        Row(
            "switch CPU per ping: sim-switch / bare httpx on httpcore",
            f"{switch.cpu_us:.0f} / {bare_core.cpu_us:.0f} us CPU",
            switch.cpu_us / bare_core.cpu_us,
            "(the whole switch against httpcore bare)",
            None,
        )
    )
    rows.append(
        Row(
            "  CPU per ping, bare httpx: the switch's transport / httpcore's",
            f"{bare_wire.cpu_us:.0f} / {bare_core.cpu_us:.0f} us CPU",
            bare_wire.cpu_us / bare_core.cpu_us,
            "< 1.0x",
            bare_wire.cpu_us < bare_core.cpu_us,
        )
    )


def spill_rows(rows: Table, url: str, certs: Path, counts: Counts, h2load: str, against: str = "") -> None:
    """Rows 3: spill dials as many connections as the pings need, so all of them are out at once: about the
    interval. Measured against h2load in the same shape, taking turns: what the controller lets any client do, the
    reference that says whether a slow figure is the switch's or the controller's."""
    depth, streams = counts.depth, DEFAULT_MAX_CONCURRENT_STREAMS
    connections = -(-depth // streams)
    runs, references = [], []
    for _ in range(counts.repeats):
        runs.append(asyncio.run(switch_run(url, certs, (1.0,) * depth, StreamPolicy.SPILL)))
        references.append(h2load_wall(h2load, port_of(url), depth, connections, streams, 1.0))
    wall, over = sorted(runs)[len(runs) // 2]
    reference = statistics.median(references)
    name = f"{depth} pings x 1 s, streams: spill{against}"
    rows.append(Row(name, depth_figure(wall, over), wall, "<= 1.3x the interval", wall <= 1.3))
    rows.append(
        Row(
            f"  the same by h2load (-c {connections} -m {streams}): the controller's bound",
            f"{reference:.2f} s wall (medians of {counts.repeats}, taking turns)",
            wall / reference,
            "(the switch / h2load: any client's floor here)",
            None,
        )
    )


def queue_row(rows: Table, url: str, certs: Path, depth: int) -> None:
    """Row 3: queue keeps one connection, at the controller's limit a round: as many intervals as rounds."""
    wall, over = asyncio.run(switch_run(url, certs, (1.0,) * depth, StreamPolicy.QUEUE))
    name = f"{depth} pings x 1 s, streams: queue"
    rows.append(Row(name, depth_figure(wall, over), wall, "(one connection: the controller's limit a round)", None))


def depth_figure(wall: float, over: list[float]) -> str:
    p50, p99 = percentile(over, 0.5) * 1000, percentile(over, 0.99) * 1000
    return f"{wall:.2f} s wall; overhead p50 {p50:.0f} ms, p99 {p99:.0f} ms"


def port_of(url: str) -> int:
    port = httpx.URL(url).port
    assert port is not None  # (ours: https://127.0.0.1:PORT)
    return port


def memory_rows(rows: Table, url: str, certs: Path, pid: int, depth: int) -> None:
    """Rows 4."""
    controller_rss, switch_rss = asyncio.run(memory_in_flight(url, certs, pid, depth))
    rows.append(memory_row("controller", depth, controller_rss, 20))
    rows.append(memory_row("sim-switch", depth, switch_rss, 12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, to check that everything runs")
    parser.add_argument("--fleet-only", action="store_true", help="only the fleet rows")
    parser.add_argument("--hostile-only", action="store_true", help="only the hostile peers' rows")
    parser.add_argument("--scaling-only", action="store_true", help="only the rows of workers and of the account")
    parser.add_argument("--restart-only", action="store_true", help="only the row of a restart in front of sessions")
    parser.add_argument(
        "--switch-only", action="store_true", help="only the rows of one controller and one switch (1 to 4)"
    )
    args = parser.parse_args()
    counts = SMOKE if args.smoke else FULL
    rows = Table()
    # The switch and the fleet run in this process: at the collector's pace and with the TLS read buffers that
    # ``python -m sim_switch`` sets.
    pace_for_many_objects()
    smaller_tls_read_buffers()
    if not args.hostile_only:
        with tempfile.TemporaryDirectory() as tmp:
            served_rows(rows, Path(tmp), args, counts)
    if not (args.fleet_only or args.scaling_only or args.switch_only or args.restart_only):
        hostile_rows(lambda *row: rows.append(Row(*row)), hostile.SMOKE if args.smoke else hostile.FULL)
    return 0


def served_rows(rows: Table, tmp: Path, args: argparse.Namespace, counts: Counts) -> None:
    """Every row but the hostile peers': against controller processes of this run's own, in ``tmp``."""
    h2load = ensure_h2load()
    certs = tmp / "certs"
    generate_certs(certs, ["localhost", "127.0.0.1"], ["switch-1"])
    ensure_certs(certs, ["localhost", "127.0.0.1"], counts.fleet.switch_ids())
    config = tmp / "config.yaml"
    config.write_text(
        "controller: {host: 127.0.0.1, port: 0, certs_dir: certs, switches: [switch-1, 'fleet-*']}\n"
        "switch: {certs_dir: certs}\n"
    )

    def add(*row: object) -> None:
        rows.append(Row(*row))  # type: ignore[arg-type]

    def h2load_at(port: int, clients: int, streams: int) -> float:
        return h2load_rate(h2load, port, counts.requests, clients, streams)

    def controller_of(workers: int) -> list[str]:
        return [
            *(sys.executable, "-m", "controller", "serve", "--config", str(config)),
            *("-q", "--client-certs-optional", "--workers", str(workers)),
        ]

    if args.scaling_only:
        scaling_rows(add, h2load_at, counts.requests, tmp, counts.scaling_repeats)
        return
    if args.restart_only:
        restart_row(rows, tmp, certs, counts.restart)
        return
    # One process each: the memory rows read the serving process's RSS.
    controller = controller_of(1)
    if not args.fleet_only:
        bare = [sys.executable, "bench/bare_app.py", "--certs", str(certs)]
        with server(controller) as (pid, port), server(bare) as (_, bare_port):
            url = f"https://127.0.0.1:{port}"
            # Memory first: Python keeps the heap it grew, so a process that has already held many requests at
            # once would hold 1000 more in memory it has, and show next to nothing per stream.
            memory_rows(rows, url, certs, pid, counts.depth)
            controller_rows(rows, h2load, port, bare_port, counts)
            spill_rows(rows, url, certs, counts, h2load)
            queue_row(rows, url, certs, counts.depth)
            switch_rows(rows, url, certs, counts, h2load)
        if args.switch_only:
            return
        scaling_rows(add, h2load_at, counts.requests, tmp, counts.scaling_repeats)
    # The controller on 2 workers: the switch and the fleet as far as the controller lets them go.
    with server(controller_of(2)) as (_, port):
        url = f"https://127.0.0.1:{port}"
        if not args.fleet_only:
            spill_rows(rows, url, certs, counts, h2load, ", controller --workers 2")
        walls = fleet_rows(rows, url, certs, counts.fleet)
    # Two replicas sharing those 2 cores, a worker each.
    with server(controller) as (_, port), server(controller) as (_, port2):
        urls = (f"https://127.0.0.1:{port}", f"https://127.0.0.1:{port2}")
        replicas_row(rows, urls, certs, counts.fleet, walls[2])
    # One process each, so that killing the first ends it at once.
    with server(controller) as (pid, port), server(controller) as (pid2, port2):
        url, second = f"https://127.0.0.1:{port}", f"https://127.0.0.1:{port2}"
        failover_row(rows, (url, second), (pid, pid2), certs)
    restart_row(rows, tmp, certs, counts.restart)


def restart_row(rows: Table, tmp: Path, certs: Path, counts: restart.RestartCounts) -> None:
    """Row 8: against a controller of its own, with an account of its own."""
    ensure_certs(certs, ["localhost", "127.0.0.1"], counts.switch_ids())
    config = tmp / "restart.yaml"
    config.write_text(
        "controller: {host: 127.0.0.1, port: 0, certs_dir: certs, switches: ['fleet-*'], account: restart.sqlite}\n"
    )
    run = asyncio.run(restart.restart_in_front_of(counts, config, certs, tmp / "restart.sqlite"))
    bound_s = run.cap_s + restart.BACK_WITHIN_S
    slowest = run.back_s[-1] if run.back_s else float("inf")
    rows.append(
        Row(
            f"restart: SIGTERM, start again, {run.switches} persistent switches (controller --workers 2)",
            f"{len(run.back_s)} back after it listened: p50 {percentile(list(run.back_s), 0.5) * 1000:,.0f} ms, "
            f"max {slowest * 1000:,.0f} ms (down {run.down_s:.2f} s, exit {run.stop_code}); {run.lost.total()} of "
            f"{run.pings} pings lost ({run.retried} retried); {run.both_lives} in both lives",
            slowest / bound_s,
            f"<= 1x the cap + {restart.BACK_WITHIN_S:g} s ({bound_s:.1f} s), 0 lost, all in both lives",
            len(run.back_s) == run.switches and slowest <= bound_s and not run.lost and run.both_lives == run.switches,
        )
    )
    if run.slowest is not None:
        print(f"   {run.slowest.said()}", flush=True)
    for reason, count in run.lost.most_common():
        print(f"   lost: {count} x {reason}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
