"""Row 8: a controller restarted in front of many persistent switches (issue 32).

Each switch runs a session (``sim_switch.dial.session``) with its own certificate and its own loopback address,
with ``retry: safe`` and the default backoff, in this process. Once every switch's link is up, the controller
(a ``python -m controller serve`` of its own, on 2 workers) gets SIGTERM: it drains with GOAWAY and exits; then it
starts again on the same port and account. The row says how long each switch took to come back after the new
controller listened (to its first SETTINGS from it; the goal: within the backoff's cap plus 2 s), how many pings
were lost (the goal: none), and how many switches the account holds in both lives of the controller (the goal:
all).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from controller.accounts.store import Store
from dialout.config import Scenario, Schedule, SwitchConfig
from dialout.tls_files import switch_files
from sim_switch.dial.session import run_session
from sim_switch.dial.settings import RunSettings
from sim_switch.dial.tls import switch_ssl_context
from sim_switch.fleet.run import loopback_source
from sim_switch.model.events import LinkUp, Reconnecting, SettingsReceived, TraceEvent
from sim_switch.model.failures import Failure
from sim_switch.model.results import RunResult
from sim_switch.render.report import ping_error

REPO = Path(__file__).resolve().parent.parent
# A switch's back once the restarted controller listens, within its longest backoff wait and this.
BACK_WITHIN_S = 2.0
UP_WITHIN_S = 60.0  # every switch up at first after its ramp, or the bench says so and stops


@dataclass(frozen=True)
class RestartCounts:
    switches: int
    every_s: float  # each switch's pings, one at a time on this schedule
    interval_s: float  # each ping's
    ramp_s: float  # the switches' first dials spread over this long
    id_pattern: str = "fleet-{n:04d}"

    def switch_ids(self) -> list[str]:
        return [self.id_pattern.format(n=n) for n in range(1, self.switches + 1)]


FULL = RestartCounts(switches=1000, every_s=1.0, interval_s=0.2, ramp_s=2.0)
SMOKE = RestartCounts(switches=20, every_s=0.2, interval_s=0.05, ramp_s=0.2)


class Controller:
    """``python -m controller serve`` on 2 workers, its stderr drained (a full pipe would block its logging)."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, draining: asyncio.Task[None]) -> None:
        self.process = process
        self.port = port
        self._draining = draining

    @classmethod
    async def start(cls, config: Path, port: int) -> Controller:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "controller", "serve", "--config", str(config), "-q", "--workers", "2"),
            *("--port", str(port)),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            if "listening on https://" in line:
                port = int(line.rsplit(":", 1)[1])
                return cls(process, port, asyncio.create_task(cls._drain(process.stderr)))
        raise RuntimeError(f"the controller exited ({await process.wait()}) before listening")

    @staticmethod
    async def _drain(stderr: asyncio.StreamReader) -> None:
        while await stderr.read(65536):
            pass

    async def stop(self) -> int:
        """SIGTERM, and its exit code once it has drained and exited."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 60)
        await self._draining
        return code


@contextlib.asynccontextmanager
async def controller(config: Path, port: int = 0) -> AsyncIterator[Controller]:
    running = await Controller.start(config, port)
    try:
        yield running
    finally:
        if running.process.returncode is None:
            await running.stop()


@dataclass(frozen=True)
class Redial:
    """A switch's wait before a redial, as its session said it: when it began (perf_counter), how long, and why."""

    at: float
    attempt: int
    delay_s: float
    loss: str


@dataclass(frozen=True)
class Slowest:
    """The switch that came back last: its way back, to tell a backoff's wait from a dial that failed after the
    restarted controller listened."""

    switch: str
    back_s: float
    redials: tuple[Redial, ...]  # after the SIGTERM, times from the new controller's listening

    def said(self) -> str:
        failed_after = [r for r in self.redials if r.at > 0]  # a wait begun after it listened: a dial there failed
        waits = ", ".join(f"{r.delay_s:.2f} s from {r.at:+.2f}" for r in self.redials)
        why = "; ".join(f"{r.at:+.2f} s: {r.loss}" for r in failed_after) or "no dial failed after it listened"
        return (
            f"the slowest, {self.switch}: back {self.back_s:.2f} s after it listened; its waits (times from the "
            f"listen): {waits}; {why}"
        )


@dataclass(frozen=True)
class Restart:
    switches: int
    down_s: float  # from SIGTERM to the new controller listening
    stop_code: int  # the old controller's exit code
    back_s: tuple[float, ...]  # per switch back: from the new controller listening to its first SETTINGS
    cap_s: float  # the longest backoff wait a switch can take
    pings: int
    lost: Counter[str]  # failed for good: how many for each reason
    retried: int  # answered after a retry
    both_lives: int  # switches the account holds connections of on both sides of the restart
    slowest: Slowest | None


async def restart_in_front_of(counts: RestartCounts, config: Path, certs: Path, account: Path) -> Restart:
    switch = SwitchConfig(certs_dir=certs)
    cap_s = switch.reconnect.max_s * (1 + switch.reconnect.jitter)
    # Long enough for the ramp, the restart and the slowest switch's way back, with a few pings on either side.
    lasting_s = counts.ramp_s + 6 * counts.every_s + 3.0 + cap_s + BACK_WITHIN_S
    schedule = Schedule(every_s=counts.every_s, interval_s=counts.interval_s, duration_s=lasting_s)
    scenario = Scenario("restart", schedule)
    ids = counts.switch_ids()
    ups: dict[str, list[float]] = defaultdict(list)
    redials: dict[str, list[Redial]] = defaultdict(list)
    all_up = asyncio.Event()

    def watcher(switch_id: str) -> Callable[[TraceEvent], None]:
        def watch(event: TraceEvent) -> None:
            # Up: the link came up (after a ping failed), or a connection heard the controller's SETTINGS (a switch
            # with no ping out as its idle connection was told GOAWAY dials again at its next ping, and its link,
            # never down, does not come up again).
            if isinstance(event, LinkUp | SettingsReceived):
                ups[switch_id].append(time.perf_counter())
                if len(ups) == len(ids):
                    all_up.set()
            elif isinstance(event, Reconnecting):
                loss = event.loss.detail if isinstance(event.loss, Failure) else "went silent"
                redials[switch_id].append(Redial(time.perf_counter(), event.attempt, event.delay_s, loss))

        return watch

    async with controller(config) as first:
        url = f"https://127.0.0.1:{first.port}"

        async def one(place: int, switch_id: str) -> RunResult:
            await asyncio.sleep(place * counts.ramp_s / len(ids))
            settings = RunSettings(
                scenario,
                dataclasses.replace(switch, switch_id=switch_id),
                switch_ssl_context(switch_files(switch, switch_id)),
                ask=False,
                source_address=loopback_source(url, place),
            )
            return await run_session(settings, url, watcher(switch_id))

        sessions = [asyncio.create_task(one(place, switch_id)) for place, switch_id in enumerate(ids)]
        try:
            await asyncio.wait_for(all_up.wait(), counts.ramp_s + UP_WITHIN_S)
        except TimeoutError:
            raise RuntimeError(f"{len(ups)} of {len(ids)} switches up after {UP_WITHIN_S:g} s") from None
        await asyncio.sleep(2 * counts.every_s)  # a few pings on the first life
        signalled = time.perf_counter()
        stop_code = await first.stop()
        async with controller(config, first.port):
            listening = time.perf_counter()
            results = await asyncio.gather(*sessions)
    back = {
        switch_id: min(at for at in ups[switch_id] if at > signalled) - listening
        for switch_id in ids
        if ups[switch_id][-1] > signalled
    }
    last = max(back, key=back.__getitem__, default=None)
    slowest = None
    if last is not None:
        ways = tuple(
            dataclasses.replace(redial, at=redial.at - listening) for redial in redials[last] if redial.at > signalled
        )
        slowest = Slowest(last, back[last], ways)
    pings = [ping for result in results for ping in result.pings]
    return Restart(
        switches=len(ids),
        down_s=listening - signalled,
        stop_code=stop_code,
        back_s=tuple(sorted(back.values())),
        cap_s=cap_s,
        pings=len(pings),
        lost=Counter(ping_error(ping) or "?" for ping in pings if ping.outcome == "failed"),
        retried=sum(ping.outcome == "retried-then-ok" for ping in pings),
        both_lives=_both_lives(account, signalled_at=time.time() - (time.perf_counter() - signalled)),
        slowest=slowest,
    )


def _both_lives(account: Path, signalled_at: float) -> int:
    """Switches whose connections the account holds from before ``signalled_at`` (wall-clock) and from after."""
    store = Store(account, create=False)
    try:
        rows = store.connection_rows(None, 1_000_000)
    finally:
        store.close()
    sides: dict[str, set[bool]] = defaultdict(set)
    for row in rows:
        switch, opened_at = row[2], row[9]
        if switch is not None:
            sides[switch].add(datetime.datetime.fromisoformat(opened_at).timestamp() > signalled_at)
    return sum(len(seen) == 2 for seen in sides.values())
