"""Dial-out that survives: persistent sessions redial with backoff, retry only what is safe, and account for
every ping across controller restarts (graceful and not)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import h2.events
import httpx
import pytest
from h2.errors import ErrorCodes

from dialout.config import ControllerConfig, ReconnectPolicy, RetryPolicy, Scenario, Schedule, SwitchConfig
from sim_switch.dial.failures import classify
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import LinkDown, LinkUp, Reconnecting, TraceEvent
from sim_switch.model.failures import Failure, FailureKind
from sim_switch.model.results import RunResult
from sim_switch.model.verdict import judge
from sim_switch.render.failures import sentence
from sim_switch.render.report import ping_error, problem_lines, verdict_line
from tests.attacks import RawH2Client
from tests.conftest import SWITCH_IDS
from tests.servers import ControllerProcess, RunningController, run_controller, write_config
from tests.switches import as_on_a_quiet_machine, async_switch_client
from tests.switches import session as run_session_for

FAST_REDIAL = ReconnectPolicy(initial_s=0.05, max_s=0.5, multiplier=2, jitter=0.2, give_up_after_s=60)


def session(schedule: Schedule) -> Scenario:
    return Scenario("session", schedule)


def switch_config(certs_dir: Path, **changes: object) -> SwitchConfig:
    return SwitchConfig(certs_dir=certs_dir, request_timeout_s=30, reconnect=FAST_REDIAL, **changes)  # type: ignore[arg-type]


E = TypeVar("E", bound=TraceEvent)


class Waiter:
    """Trace events in, asyncio events out: a test waits for a LinkDown instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self._wanted: dict[type[TraceEvent], asyncio.Event] = {}

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)
        for kind, happened in self._wanted.items():
            if isinstance(event, kind):
                happened.set()

    def on(self, kind: type[TraceEvent]) -> asyncio.Event:
        return self._wanted.setdefault(kind, asyncio.Event())

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]


def outcomes(result: RunResult) -> Counter[str]:
    return Counter(ping.outcome for ping in result.pings)


def test_backoff_grows_caps_and_jitters() -> None:
    policy = ReconnectPolicy(initial_s=0.1, max_s=1.0, multiplier=2, jitter=0.2)
    assert [policy.delay_s(attempt, 0.5) for attempt in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay_s(1, 0.0) == pytest.approx(0.08)  # 1 - jitter
    assert policy.delay_s(1, 0.999999) == pytest.approx(0.12, abs=1e-6)  # just under 1 + jitter


async def test_a_quiet_session_is_all_ok_on_one_connection(controller: RunningController, certs_dir: Path) -> None:
    schedule = Schedule(every_s=0.1, batch=2, interval_s=0.05, count=6)
    result = await run_session_for(
        session(schedule), controller.url, client_ssl_context(certs_dir, "switch-1"), switch_config(certs_dir)
    )
    verdict = judge(result)
    assert verdict.ok, problem_lines(verdict)
    assert outcomes(result) == Counter({"ok": 6})
    assert (len(result.connections), result.reconnects) == (1, 0)
    assert as_on_a_quiet_machine(verdict_line(verdict)).startswith(
        "SESSION OK: 6 pings, 6 ok, 0 retried then ok, 0 failed; 0 reconnects, 1 connection"
    )
    assert result.controller_view is not None
    assert result.controller_view.agrees


async def test_the_link_is_up_when_the_controllers_settings_arrive_not_when_a_ping_is_answered(
    controller: RunningController, certs_dir: Path
) -> None:
    """The first ping dials alone; the others of its batch go as soon as the controller's SETTINGS arrive on its
    connection, not when it is answered (with pings of a minute, a minute later)."""
    waiter = Waiter()
    schedule = Schedule(every_s=30.0, batch=3, interval_s=2.0, count=3)
    result = await run_session_for(
        session(schedule), controller.url, client_ssl_context(certs_dir, "switch-1"), switch_config(certs_dir), waiter
    )
    assert judge(result).ok, problem_lines(judge(result))
    first_answer_s = min(ping.first_byte_at_s or 0.0 for ping in result.pings)
    [up] = waiter.of(LinkUp)
    assert up.at_s < first_answer_s
    assert all(ping.headers_sent_at_s is not None and ping.headers_sent_at_s < first_answer_s for ping in result.pings)
    assert len(result.connections) == 1


async def test_a_switch_dials_until_the_controller_comes_up(certs_dir: Path) -> None:
    # A bound socket that does not listen: dialling it is refused, and the port stays ours until we serve on it.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    waiter = Waiter()
    link_down = waiter.on(LinkDown)
    schedule = Schedule(every_s=0.1, batch=2, interval_s=0.0, count=4)
    run = asyncio.create_task(
        run_session_for(
            session(schedule),
            f"https://127.0.0.1:{port}",
            client_ssl_context(certs_dir, "switch-1"),
            switch_config(certs_dir),
            waiter,
        )
    )
    await link_down.wait()
    reserved.close()
    async with run_controller(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS), port=port):
        result = await run
    assert judge(result).ok, problem_lines(judge(result))
    assert result.reconnects == 1
    assert outcomes(result)["failed"] == 0
    assert outcomes(result)["retried-then-ok"] >= 1
    [first_redial, *_] = waiter.of(Reconnecting)
    assert first_redial.attempt == 1
    assert isinstance(first_redial.loss, Failure)
    assert first_redial.loss.kind is FailureKind.DOWN  # connection refused
    assert any(up.again for up in waiter.of(LinkUp))


# --- what the controller does when it is told to stop -----------------------------------------------------


class LogWaiter(logging.Handler):
    """Sets an asyncio event when the controller logs a line containing ``needle``."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def waiting_for_log(logger_name: str, needle: str) -> Iterator[LogWaiter]:
    logger = logging.getLogger(logger_name)
    waiter = LogWaiter(needle)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(waiter)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(old_level)


@pytest.fixture
def ping_received() -> Iterator[LogWaiter]:
    with waiting_for_log("controller.http.app", "GET /ping: received") as waiter:
        yield waiter


async def test_a_stream_that_arrives_during_shutdown_is_refused_as_not_processed(
    certs_dir: Path, ping_received: LogWaiter
) -> None:
    async with (
        run_controller(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)) as running,
        async_switch_client(certs_dir, "switch-1") as client,
    ):
        in_flight = asyncio.create_task(client.get(f"{running.url}/ping?interval=0.5"))
        await ping_received.seen.wait()
        running.stop.set()
        await running.stopping.wait()
        with pytest.raises(httpx.RemoteProtocolError) as refused:
            await client.get(f"{running.url}/ping?interval=0")
        finished = await in_flight
    assert finished.status_code == 200  # the ping in flight was let finish
    failure = classify(refused.value, request_sent=True)
    assert failure.kind is FailureKind.REFUSED_STREAM
    assert failure.retry_safe
    assert sentence(failure).startswith("the controller refused the stream: REFUSED_STREAM, not processed")


async def test_a_stream_that_crosses_an_idle_connections_goaway_is_refused_as_not_processed(certs_dir: Path) -> None:
    """The shutdown's GOAWAY to an idle connection and a request of the switch's cross on the wire: the request is
    refused as never processed (REFUSED_STREAM), as on a busy connection, not reset with h2's NO_ERROR, which
    leaves a switch unable to tell (1,000 persistent switches lost 385 pings so in bench/restart.py)."""
    events: list[h2.events.Event] = []
    async with run_controller(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)) as running:
        peer = await RawH2Client.connect(running.port, client_ssl_context(certs_dir, "switch-1"))
        await peer.settled()
        running.stop.set()
        await running.stopping.wait()  # the GOAWAY is written; the peer has not read it
        stream_id = peer.request("/ping?interval=0")
        await peer.keep_reading(ignore_goaway=True, on_event=events.append)
    [goaway] = [event for event in events if isinstance(event, h2.events.ConnectionTerminated)]
    assert goaway.last_stream_id == 0
    [reset] = [event for event in events if isinstance(event, h2.events.StreamReset)]
    assert (reset.stream_id, reset.error_code) == (stream_id, ErrorCodes.REFUSED_STREAM)


async def test_an_idle_connection_hears_goaway_and_the_next_ping_is_safe_to_retry(certs_dir: Path) -> None:
    async with (
        run_controller(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)) as running,
        async_switch_client(certs_dir, "switch-1") as client,
    ):
        assert (await client.get(f"{running.url}/ping?interval=0")).status_code == 200
        running.stop.set()
        await running.stopping.wait()
        with pytest.raises(httpx.HTTPError) as lost:
            await client.get(f"{running.url}/ping?interval=0")
    # The GOAWAY said the connection would take no more; httpcore dialled again and the listener was closed.
    assert isinstance(lost.value, httpx.ConnectError)
    failure = classify(lost.value, request_sent=True)
    assert failure.kind is FailureKind.DOWN
    assert failure.retry_safe


# --- the whole story with real controller processes -----------------------------------------------------------


async def run_across_a_restart(tmp_path: Path, kill: signal.Signals, retry: str = "safe") -> tuple[RunResult, int]:
    """A persistent session against `python -m controller`, which is stopped with ``kill`` while pings are in
    flight and started again on the same port. Returns the session's result and the old controller's exit code."""
    config = write_config(tmp_path)
    certs_dir = tmp_path / "certs"
    with ControllerProcess.start(config, "--verbose") as first:
        port = first.port
        schedule = Schedule(every_s=0.4, batch=2, interval_s=0.3, count=16)
        cfg = switch_config(certs_dir, retry=retry)
        run = asyncio.create_task(
            run_session_for(session(schedule), first.url, client_ssl_context(certs_dir, "switch-1"), cfg)
        )
        for _ in range(4):  # a few pings have been answered; now one is in flight
            await asyncio.to_thread(first.wait_for, r"GET /ping: received")
        first.process.send_signal(kill)
        exit_code = await asyncio.to_thread(first.process.wait, 60)
    with ControllerProcess.start(config, "--port", str(port)):
        result = await run
    return result, exit_code


async def test_sigterm_restart_loses_no_ping(tmp_path: Path) -> None:
    result, exit_code = await run_across_a_restart(tmp_path, signal.SIGTERM)
    verdict = judge(result)
    assert exit_code == 0
    assert verdict.ok, problem_lines(verdict)
    counts = outcomes(result)
    assert counts["failed"] == 0
    assert counts["ok"] + counts["retried-then-ok"] == 16
    # On a new connection to the restarted controller: redialled after a failed ping (a reconnect), or, if the
    # new controller was up before the next ping needed a connection, without one; the switch's records of the
    # first connection are what the new controller cannot know (uptime_s), not a disagreement.
    assert len(result.connections) >= 2
    # The restarted controller judges the redial: backed off, then multiplexed again; no storm. (Its account kept
    # the first life's connection too: each run is judged apart, each multiplexed.)
    assert result.controller_view is not None
    assert result.controller_view.findings
    assert {finding.kind for finding in result.controller_view.findings} == {"multiplexed"}


async def test_sigkill_fails_the_pings_in_flight_and_the_session_recovers(tmp_path: Path) -> None:
    result, exit_code = await run_across_a_restart(tmp_path, signal.SIGKILL)
    verdict = judge(result)
    assert exit_code == -signal.SIGKILL
    assert not verdict.ok
    counts = outcomes(result)
    assert counts["failed"] >= 1  # the ping the controller had received when it died, at least
    assert counts["ok"] + counts["retried-then-ok"] + counts["failed"] == 16
    failed = [ping for ping in result.pings if ping.outcome == "failed"]
    assert all("not safe to retry: it may have been processed" in (ping_error(ping) or "") for ping in failed)
    assert result.pings[-1].ok  # the session came back
    assert verdict_line(verdict).startswith(f"SESSION FAILED: {counts['failed']} of 16 pings failed for good")


async def test_sigkill_with_idempotent_retries_loses_nothing(tmp_path: Path) -> None:
    result, _ = await run_across_a_restart(tmp_path, signal.SIGKILL, retry=RetryPolicy.IDEMPOTENT)
    counts = outcomes(result)
    assert counts["failed"] == 0, [ping_error(ping) for ping in result.pings if ping.failure]
    assert counts["retried-then-ok"] >= 1
    assert judge(result).ok


async def test_shutdown_skips_connections_that_are_already_over(certs_dir: Path) -> None:
    """A connection the switch has closed lingers in Hypercorn until its idle timer runs out: the shutdown must
    pass it by (writing a GOAWAY to it once crashed the controller)."""
    with waiting_for_log("controller.accounts.connections", "closed: switch-1") as closed:
        async with run_controller(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS)) as running:
            async with httpx.AsyncClient(
                http2=True, verify=client_ssl_context(certs_dir, "switch-1"), trust_env=False
            ) as client:
                assert (await client.get(f"{running.url}/ping?interval=0")).status_code == 200
            await closed.seen.wait()
            running.stop.set()
            await running.stopping.wait()
    [record] = running.registry.connections()
    assert record.closed_at is not None
