"""``python -m controller serve --workers N``: N processes on one port and one account. Real controller processes,
real clients with the switch's certificate; which worker took a connection is read from the log each one writes.
A connection goes to a worker with the fewest open (controller/server/balance.py), and a test that needs both
workers at work dials until it has seen both (bounded: once one worker's connections have closed, it may take
the next ones too)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from controller.server.balance import DECLINE_MAX_S, Loads, Turn
from tests.commands import run_module
from tests.servers import ControllerProcess, cpu_s, metrics_of, write_config
from tests.switches import async_switch_client

STOP_S = 30.0  # a generous bound on a worker's exit after its last line
DIALS = 200  # at most, to see both workers take a connection
HELD_CONNECTIONS = 8  # open at once: a split at random stays within one at every step once in 16
WORKER = r"controller (w\d) "


async def dial_until_both(controller: ControllerProcess, certs: Path, interval: float = 0) -> list[asyncio.Task[int]]:
    """New connections, each with one ping of ``interval``, until each worker has received one: their tasks (each
    the ping's status)."""
    seen: set[str] = set()
    pings: list[asyncio.Task[int]] = []
    for _ in range(DIALS):
        pings.append(asyncio.create_task(_ping(controller.url, certs, interval)))
        received = await asyncio.to_thread(controller.wait_for, WORKER + r"switch-1 conn #\d+ .*GET /ping: received")
        seen.add(received.group(1))
        if seen == {"w1", "w2"}:
            return pings
    raise AssertionError(f"{DIALS} connections, all taken by {seen}")


async def _ping(url: str, certs: Path, interval: float) -> int:
    async with async_switch_client(certs) as client:  # a client of its own: a connection of its own
        return (await client.get(f"{url}/ping?interval={interval}", timeout=60)).status_code


@pytest.mark.timing  # a worker stalled past DECLINE_MAX_S is not waited for: run loaded too
async def test_each_new_connection_goes_to_a_worker_with_the_fewest_open(tmp_path: Path) -> None:
    """Connections dialled one after another and kept open take turns over the workers, never two more on one
    than on the other but where the log says a worker was left waiting on one that did not take it in time (its
    loop held, or not scheduled: on a busy machine). On one shared socket left to itself, the worker first awake
    took 9 of 10; on a socket each (SO_REUSEPORT), the kernel's hash split 10 as 7-3 or worse in a third of runs."""
    config = write_config(tmp_path)
    held: Counter[str] = Counter()
    with ControllerProcess.start(config, "--workers", "2", "--verbose") as controller:
        for _ in range(2):  # both workers accepting: before that, one takes all, rightly
            controller.wait_for(WORKER + "accepting connections")
        async with contextlib.AsyncExitStack() as clients:
            for _ in range(HELD_CONNECTIONS):
                client = await clients.enter_async_context(async_switch_client(tmp_path / "certs"))
                assert (await client.get(f"{controller.url}/ping?interval=0")).status_code == 200
                received = await asyncio.to_thread(
                    controller.wait_for, WORKER + r"switch-1 conn #\d+ .*GET /ping: received"
                )
                held[received.group(1)] += 1
                overdue = sum(1 for line in controller.lines if "taken out of balance" in line)
                assert abs(held["w1"] - held["w2"]) <= 1 + overdue, (held, controller.lines)


def test_a_worker_leaves_a_connection_to_one_with_fewer_open_for_a_bounded_time() -> None:
    now = [0.0]
    loads = Loads(2)
    first, second = loads.of(1, lambda: now[0]), loads.of(2, lambda: now[0])
    first.join()
    first.opened()
    assert first.turn() is Turn.TAKE  # the other is not accepting (yet): nobody to leave it to
    second.join()
    assert (first.turn(), second.turn()) == (Turn.LEAVE, Turn.TAKE)
    now[0] += DECLINE_MAX_S / 2
    assert first.turn() is Turn.LEAVE  # the other has not taken it yet, and is still waited for
    now[0] += DECLINE_MAX_S / 2
    assert first.turn() is Turn.TAKE_OVERDUE  # waited for long enough: taken, out of balance
    now[0] += 10 * DECLINE_MAX_S
    assert first.turn() is Turn.LEAVE  # a new wait, not the end of the old one
    first.closed()
    assert (first.turn(), second.turn()) == (Turn.TAKE, Turn.TAKE)  # as many open: either
    second.opened()
    second.opened()
    assert second.turn() is Turn.LEAVE
    loads.gone(1)  # the parent saw worker 1 end
    assert second.turn() is Turn.TAKE
    first.join()  # started again
    second.leave()  # stopping
    first.opened()
    first.opened()
    assert first.turn() is Turn.TAKE
    second.closed()  # a stopping worker's connections close: it stays out
    assert first.turn() is Turn.TAKE


async def test_two_workers_keep_one_account(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--workers", "2", "--verbose") as controller:
        pids = controller.wait_for(r"serving with 2 worker processes \(pids (\d+), (\d+)\)").groups()
        pings = await dial_until_both(controller, tmp_path / "certs")
        assert {await ping for ping in pings} == {200}
        before = _cpu_s(pids)
        answer = httpx.get(f"{controller.admin_url}/connections", trust_env=False).json()
        # the CPU a fleet reads to find its bottleneck is both workers', whichever answered
        assert (answer["processes"], before <= answer["cpu_s"] <= _cpu_s(pids)) == (2, True), (before, answer)
        records = answer["connections"]
        ids = [record["id"] for record in records]
        assert len(records) == len(set(ids)) >= 2, (answer, controller.lines)  # every worker's, each number once
        assert len({record["life"] for record in records}) == 2  # the two workers' lives of the account
        explained = run_module("controller", "explain", "--config", str(config), "--url", controller.admin_url)
        assert f"switch-1: {len(records)} connections" in explained.stdout, explained.stdout


async def test_metrics_are_every_workers_and_outlive_a_worker(tmp_path: Path) -> None:
    """``/metrics`` on the admin listener (worker 1's) counts worker 2's pings too; a worker that dies and is
    started again keeps its counts in the sum; the files they are summed from are gone once the controller stops."""
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--workers", "2", "--verbose") as controller:
        kept_in = Path(controller.wait_for(r"/metrics sums every worker's, kept in (\S+) until the stop").group(1))
        pids = controller.wait_for(r"serving with 2 worker processes \(pids (\d+), (\d+)\)")
        pings = await dial_until_both(controller, tmp_path / "certs")
        assert {await ping for ping in pings} == {200}
        both = metrics_of(controller.admin_url)
        assert both[("dialout_pings_answered_total", (("status", "200"),))] == len(pings)
        assert both[("dialout_ping_lateness_seconds_count", ())] == len(pings)
        assert both[("dialout_controller_processes", ())] == 2
        os.kill(int(pids.group(2)), signal.SIGKILL)
        controller.wait_for(rf"worker 2 \(pid {pids.group(2)}\) was killed by SIGKILL; starting it again")
        after = metrics_of(controller.admin_url)
        assert after[("dialout_pings_answered_total", (("status", "200"),))] == len(pings)
        assert kept_in.is_dir()
    assert not kept_in.exists()


async def test_a_switch_on_two_workers_is_one_switch_connected(tmp_path: Path) -> None:
    """``dialout_switches_connected`` counts switches, not workers: switch-1 with pings in flight on both workers
    is one (it was two, each worker's count summed)."""
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--workers", "2", "--verbose") as controller:
        pings = await dial_until_both(controller, tmp_path / "certs", interval=3)
        in_flight = ("dialout_streams_in_flight", ())
        # Each worker brings its counts into the sum every REFRESH_S: until both have, with these pings in flight.
        async with asyncio.timeout(STOP_S):
            while (scraped := metrics_of(controller.admin_url))[in_flight] < len(pings):
                await asyncio.sleep(0.05)
        assert scraped[("dialout_switches_connected", ())] == 1
        assert {await ping for ping in pings} == {200}


def _cpu_s(pids: tuple[str, ...]) -> float:
    """The processes' user and system time so far (rounded as the controller rounds it)."""
    return round(sum(cpu_s(int(pid)) for pid in pids), 6)


async def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--workers", "2", "--verbose") as controller:
        pids = controller.wait_for(r"serving with 2 worker processes \(pids (\d+), (\d+)\)")
        assert {await ping for ping in await dial_until_both(controller, tmp_path / "certs")} == {200}  # both up
        os.kill(int(pids.group(2)), signal.SIGKILL)
        controller.wait_for(rf"worker 2 \(pid {pids.group(2)}\) was killed by SIGKILL; starting it again")
        controller.wait_for(rf"w2 account: life \d+ \(pid {pids.group(2)}\) ended without stopping")
        pings = await dial_until_both(controller, tmp_path / "certs")  # the new worker 2 serves
        assert {await ping for ping in pings} == {200}
        assert controller.process.poll() is None


async def test_sigterm_lets_every_worker_finish_its_pings(tmp_path: Path) -> None:
    """Pings in flight on both workers when SIGTERM comes: each is answered in full, every worker stops, the
    parent last, exit code 0."""
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--workers", "2", "--verbose") as controller:
        pings = await dial_until_both(controller, tmp_path / "certs", interval=2)
        controller.process.send_signal(signal.SIGTERM)
        assert [await ping for ping in pings] == [200] * len(pings)
        controller.wait_for(r"controller stopped: every worker stopped cleanly")
        assert await asyncio.to_thread(controller.process.wait) == 0
    for worker in ("w1", "w2"):
        assert controller.seen(rf"controller {worker} stopped: no stream was cut")


async def test_sigterm_as_the_workers_start_stops_them_all(tmp_path: Path) -> None:
    """SIGTERM the moment the workers are forked, before their loops handle it: each still stops as told (a
    worker that caught it with the parent's handler, inherited at the fork, served on, unwatched, until killed)."""
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--workers", "2") as controller:
        controller.wait_for(r"serving with 2 worker processes")
        controller.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(controller.process.wait), STOP_S) == 0
        assert controller.seen(r"controller stopped: every worker stopped cleanly")


@pytest.mark.parametrize(
    ("how", "said"),
    [
        (("--workers", "0"), "--workers: must be 1 to 256, got 0"),
        (("--config-workers", "0"), "controller.workers: must be auto or an integer from 1 to 256, got 0"),
    ],
)
def test_a_bad_number_of_workers_is_one_line(tmp_path: Path, how: tuple[str, str], said: str) -> None:
    config = write_config(tmp_path, controller=f"  workers: {how[1]}\n" if how[0] == "--config-workers" else "")
    args = how if how[0] == "--workers" else ()
    refused = run_module("controller", "serve", "--config", str(config), *args)
    assert refused.returncode == 2
    assert said in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert re.search(r"listening", refused.stderr) is None  # said before anything listens


async def test_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the parent (an OOM killer, a careless kill -9): the workers stop as on SIGTERM, not serve on
    unwatched, holding the port; the next controller to start removes the /metrics files no one was left to."""
    config = write_config(tmp_path)
    temporary = {"TMPDIR": str(tmp_path)}  # where the runs' /metrics files go: this test's alone
    with ControllerProcess.start(config, "--workers", "2", env=temporary) as controller:
        pids = controller.wait_for(r"serving with 2 worker processes \(pids (\d+), (\d+)\)")
        controller.process.kill()
        stopped = {controller.wait_for(r"controller (w\d) stopped: no stream was cut").group(1) for _ in range(2)}
        assert stopped == {"w1", "w2"}
        for pid in pids.groups():  # each worker's process ends (not ours to wait for: a pidfd says when)
            with contextlib.suppress(ProcessLookupError):  # already gone
                gone = os.pidfd_open(int(pid))
                try:
                    assert select.select([gone], [], [], STOP_S)[0], f"worker {pid} still runs"
                finally:
                    os.close(gone)
        [kept] = [found.group(1) for line in controller.lines if (found := re.search(r"kept in (\S+) until", line))]
    assert Path(kept).is_dir()  # the parent killed, no one removed them
    with ControllerProcess.start(config, "--workers", "2", env=temporary) as again:
        again.wait_for(r"serving with 2 worker processes")
        assert not Path(kept).exists()
