"""A persistent session: the switch keeps calling home (RFC 8071), redials when the controller goes away, and
accounts for every ping.

Pings go out in batches on a schedule, like a switch's keep-alive. The first ping dials alone and the rest wait
for the link to come up, so that they then share its connection. When a ping fails in a way that is safe to
repeat (``Failure.retry_safe``, decided where the failure was caught), the ``Link`` goes down: one ping at a time
redials, after an exponential backoff with jitter, and the others wait for it rather than hammering a controller
that is down. The link is up again, and everyone waiting goes at once, when the controller's SETTINGS arrive on
the new connection (HTTP/2; over HTTP/1.1, at the first answer), not when the dialling ping is answered, which
with pings of a minute would hold them a minute. Each ping ends in exactly one of: ok, retried-then-ok, failed
(with its reason).

Dialling alone also keeps a controller that is down from seeing a burst of dials for every ping that waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx

from dialout.config import ReconnectPolicy, Request, RetryPolicy, Schedule
from dialout.loop_lag import LoopLag
from dialout.signals import TRIALS_OVER
from sim_switch.dial.client import Attempt, LinkHistory, attempt_ping, finish_run, new_pool, with_loop_lag
from sim_switch.dial.destinations import Destinations
from sim_switch.dial.keepalive import SilenceWatch
from sim_switch.dial.settings import Outgoing, RunSettings
from sim_switch.dial.streams import StreamPool
from sim_switch.dial.tracing import Tracer
from sim_switch.model.events import (
    EndedByController,
    FailedOver,
    GaveUpOnSilence,
    GoawayRead,
    KeepaliveAnswered,
    LinkDown,
    LinkGaveUp,
    LinkUp,
    Reconnecting,
    SettingsReceived,
    TraceEvent,
)
from sim_switch.model.failures import Failure, FailureKind, LinkLoss, WentSilent
from sim_switch.model.results import Failover, GiveUp, GiveUpReason, PingResult, RunResult
from sim_switch.wire.transport import SwitchTransport


class Link:
    """The switch's view of its call-home link: up, or down and being redialled by one ping (the leader), at one
    of its controllers (``Destinations``)."""

    def __init__(
        self, policy: ReconnectPolicy, tracer: Tracer, destinations: Destinations, unit_random: Callable[[], float]
    ) -> None:
        self._policy = policy
        self._tracer = tracer
        self._random = unit_random
        self.destinations = destinations
        self._up = False  # until the first dial succeeds
        self._changed = asyncio.Event()  # set (and replaced) whenever the link or its leader changes
        self._leader: int | None = None
        self._attempt = 0
        self._down_since_s: float | None = None  # since it went down (or its first dial); None while up
        self._down_reason: LinkLoss | None = None
        self._down_reported = False
        self._connected_to: str | None = None
        self._last_failure: Failure | None = None
        # Redials made before the link came up on SETTINGS alone: the backoff goes on from there if it goes down
        # again before any ping is answered on it (a controller that accepts and then drops every connection).
        self._unconfirmed_attempts = 0
        self.reconnects = 0
        self.failovers: list[Failover] = []
        self.given_up = False  # down for give_up_after_s, or the controller said it is over: the session ends
        self.ended_by_controller = False
        self.over = asyncio.Event()  # set with given_up: the schedule stops at once, not at its next batch

    async def wait_turn(self, ping: int) -> str | None:
        """Return the controller to try when ``ping`` may: the link is up, or this ping is the one (re)dialling;
        None once the link has given up."""
        while not self._up and self._leader != ping and not self.given_up:
            if self._leader is None:  # nobody is dialling: this ping does
                self._leader = ping
                self._went_down()
                break
            await self._changed.wait()
        return None if self.given_up else self.destinations.current

    def down_for_s(self) -> float:
        return 0.0 if self._up or self._down_since_s is None else self._tracer.now_s() - self._down_since_s

    def _went_down(self) -> None:
        """Down from now, unless it was already: a new leader for the redial does not restart the count."""
        if self._down_since_s is None:
            self._down_since_s = self._tracer.now_s()

    def give_up(self) -> None:
        """Down for ``give_up_after_s``: every ping waiting, and every one after, fails without dialling."""
        if self.given_up:
            return
        self.given_up = True
        self.over.set()
        loss: LinkLoss = self._down_reason or self._last_failure or Failure(FailureKind.OTHER, "down", True)
        bound_s = self._policy.give_up_after_s
        self._tracer.emit(
            LinkGaveUp(at_s=self._tracer.now_s(), down_s=self.down_for_s(), give_up_after_s=bound_s, loss=loss)
        )
        self._release()

    def end(self, said: str) -> None:
        """The controller said the session is over: pings waiting are not sent, and none after them."""
        if self.given_up:
            return
        self.given_up = self.ended_by_controller = True
        self.over.set()
        self._tracer.emit(EndedByController(at_s=self._tracer.now_s(), said=said))
        self._release()

    @property
    def last_failure(self) -> Failure | None:
        """The latest failure that took or kept the link down."""
        return self._last_failure

    async def failed(self, ping: int, reason: LinkLoss, url: str) -> None:
        """A ping to ``url`` failed in a way worth retrying. The first to fail leads the redial and sleeps the
        backoff; the others return at once and wait in ``wait_turn``. A failure at a controller the link has
        already left says nothing of the one it is on: that ping just goes again."""
        if url != self.destinations.current:
            return
        if isinstance(reason, Failure):
            self._last_failure = reason
        was_up = self._up
        if self._leader is None:
            self._leader = ping
            self._attempt = self._unconfirmed_attempts
            self._went_down()
            self._up = False
        if not self._down_reported:
            self._report_down(reason)
        if self._leader != ping:
            return
        self._attempt += 1
        # Where the redial goes: after losing an up link, where start_with says; after a failed dial, the next one.
        if not self.destinations.several:
            to_url = None
        elif was_up:
            to_url = self.destinations.start_again()
        else:
            to_url = self.destinations.move_on()
        delay_s = self._policy.delay_s(self._attempt, self._random())
        self._tracer.emit(
            Reconnecting(
                at_s=self._tracer.now_s(),
                ping=ping,
                attempt=self._attempt,
                delay_s=delay_s,
                to_url=to_url,
                start_again=was_up,
                loss=reason,
            )
        )
        await asyncio.sleep(delay_s)

    def lost(self, url: str, reason: LinkLoss) -> None:
        """The switch itself gave up on ``url`` (it went silent): down at once, and the redial skips it."""
        if url != self.destinations.current:
            return
        self._up = False
        self._report_down(reason)
        self._went_down()
        if self.destinations.several:
            self.destinations.move_on()
        self._release()

    def settings_heard(self, connection: int | None) -> None:
        """The controller's SETTINGS on ``connection``: if the link is being dialled there, it is up, and every
        ping waiting goes at once on it. Its backoff starts over only once a ping is answered (``succeeded``)."""
        records = self._tracer.connections
        url = records[connection - 1].controller if connection and connection <= len(records) else None
        if self._up or self._leader is None or url is None or url != self.destinations.current:
            return
        self._unconfirmed_attempts = self._come_up(self._leader, connection, url)

    def succeeded(self, ping: int, connection: int | None, url: str) -> None:
        """``ping`` was answered: the link is up (if it was not yet: HTTP/1.1 has no SETTINGS), and confirmed."""
        self._unconfirmed_attempts = 0
        if self._leader == ping:
            self._come_up(ping, connection, url)

    def _come_up(self, ping: int, connection: int | None, url: str) -> int:
        """Up, led there by ``ping``; the redials it took."""
        attempts = self._attempt
        again = bool(self._attempt) or self._connected_to is not None
        if again:
            self.reconnects += 1
        now_s = self._tracer.now_s()
        self._tracer.emit(
            LinkUp(
                at_s=now_s,
                ping=ping,
                connection=connection,
                url=url if self.destinations.several else None,
                again=again,
                redials=max(1, self._attempt),
                down_s=self.down_for_s(),
            )
        )
        if self._connected_to is not None and url != self._connected_to and self._down_reason is not None:
            failover = Failover(now_s, self._connected_to, url, self._down_reason)
            self.failovers.append(failover)
            self._tracer.emit(
                FailedOver(
                    at_s=now_s,
                    ping=ping,
                    connection=connection,
                    from_url=failover.from_url,
                    to_url=url,
                    loss=failover.loss,
                )
            )
        self._connected_to = url
        self.destinations.connected()
        self._up = True
        self._down_since_s = None
        self._down_reported = False
        self._release()
        return attempts

    def gave_up(self, ping: int) -> None:
        """The leader stops; another waiting ping takes over the dialling (the link stays down), where the backoff
        had got to: a ping giving up is no reason to redial sooner."""
        if self._leader == ping:
            attempt = self._attempt
            self._release()
            self._attempt = attempt

    def _report_down(self, reason: LinkLoss) -> None:
        self._down_reported = True
        self._down_reason = reason
        self._tracer.emit(LinkDown(at_s=self._tracer.now_s(), loss=reason))

    def _release(self) -> None:
        self._leader = None
        self._attempt = 0
        self._changed.set()
        self._changed = asyncio.Event()


class _HearsTheEnd:
    """Passes every trace event on; brings the session's link up on the controller's SETTINGS, and ends it when a
    GOAWAY of the controller's says the trials are over (``dialout.signals``)."""

    def __init__(self, emit: Callable[[TraceEvent], None]) -> None:
        self._emit = emit
        self.link: Link | None = None

    def __call__(self, event: TraceEvent) -> None:
        self._emit(event)
        if self.link is None:
            return
        if isinstance(event, SettingsReceived):
            self.link.settings_heard(event.connection)
        elif isinstance(event, GoawayRead) and event.debug.encode() == TRIALS_OVER:
            self.link.end(event.debug)


async def run_session(
    settings: RunSettings,
    controllers: str | Sequence[str],
    emit: Callable[[TraceEvent], None],
    unit_random: Callable[[], float] = random.random,
) -> RunResult:
    """``controllers``: one URL, or the list to fail over among (``switch.start_with`` says where to begin)."""
    scenario, switch = settings.scenario, settings.switch
    schedule = scenario.kind
    if not isinstance(schedule, Schedule):
        raise ValueError(f"scenario {scenario.name!r} is a {schedule.mode} scenario, not a persistent session")
    listening = _HearsTheEnd(emit)
    tracer = Tracer(listening, frames=settings.trace_frames)
    urls = (controllers,) if isinstance(controllers, str) else tuple(controllers)
    link = listening.link = Link(
        switch.reconnect, tracer, Destinations(urls, switch.start_with, unit_random), unit_random
    )
    tasks: list[asyncio.Task[Attempt | None]] = []
    pool = new_pool(settings, tracer)

    probes: httpx.AsyncClient | None = None

    async def probe(url: str, timeout_s: float) -> bool:
        nonlocal probes
        if pool.transport is not None:
            return await _ping(pool.transport, tracer, url, timeout_s)
        probes = probes or pool.extra_client()
        return await _probe(probes, tracer, url, scenario.request, timeout_s)

    async def silent(url: str, quiet_s: float) -> None:
        nonlocal probes
        if probes is not None:  # its connection to the silent controller is as stuck as the pings'
            await probes.aclose()
            probes = None
        silence = WentSilent(url=url, quiet_s=quiet_s, bound_s=switch.keepalive.bound_s)
        closed = await tracer.close_connections(url)
        tracer.emit(GaveUpOnSilence(at_s=tracer.now_s(), silence=silence, closed=closed))
        link.lost(url, silence)

    watch = SilenceWatch(switch.keepalive, tracer, probe, silent, http2=pool.transport is not None)
    try:
        lag = LoopLag.of_running_loop()
        async with lag.running(), asyncio.TaskGroup() as group:
            watching = group.create_task(watch.run())
            for batch in range(schedule.batches()):
                # Keep the schedule, like a switch's keep-alive timer: a batch does not wait for the last one.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.over.wait(), max(0.0, batch * schedule.every_s - tracer.now_s()))
                if link.given_up:  # the controller gone for give_up_after_s, or done with us: no more pings
                    break
                for _ in range(min(schedule.batch, schedule.total_pings() - len(tasks))):
                    number = len(tasks) + 1
                    tasks.append(group.create_task(_send(pool, tracer, link, watch, settings, number)))
            await asyncio.wait(tasks)
            tracer.stop_clock()
            watching.cancel()
            attempts = await with_loop_lag(
                [attempt for task in tasks if (attempt := task.result()) is not None], tracer, lag
            )
        # The cross-check asks the controller that answered last: the one the session ended on.
        answered = [attempt.result for attempt in attempts if attempt.answered and attempt.result.controller]
        ended_on = max(answered, key=lambda ping: ping.finished_at_s or 0.0).controller if answered else None
        history = LinkHistory(link.reconnects, tuple(link.failovers))
        # A controller that is gone, or that ended the session, has nothing to say of it (and might never answer).
        asking = replace(settings, ask=settings.ask and not link.given_up)
        return await finish_run(pool.primary, tracer, asking, ended_on or urls[0], attempts, history)
    finally:
        await pool.aclose()


async def _send(
    pool: StreamPool, tracer: Tracer, link: Link, watch: SilenceWatch, settings: RunSettings, number: int
) -> Attempt | None:
    """One ping, retried while that is safe and the give-up time has not passed; None: not sent, the controller
    having ended the session first."""
    switch = settings.switch
    assert isinstance(settings.scenario.kind, Schedule)  # run_session's
    interval_s = settings.scenario.kind.interval_s
    first_try_s = tracer.now_s()
    tries = 0
    while True:
        url = await link.wait_turn(number)
        if url is None and link.ended_by_controller:
            return None
        if url is None:  # the link gave up while this ping waited for it
            return _not_sent(number, interval_s, tries, first_try_s, tracer, link)
        tries += 1
        asked_at_s = tracer.now_s()
        async with pool.slot():
            with watch.ping_out(url):
                attempt = await attempt_ping(pool, tracer, settings, url, Outgoing(number, interval_s, asked_at_s))
        # A retried ping's latency is the whole wait, from its first try.
        result = replace(attempt.result, attempts=tries, elapsed_s=tracer.now_s() - first_try_s)
        if attempt.answered or result.failure is None:  # the controller answered, whatever it said
            watch.heard(url)
            link.succeeded(number, result.connection, url)
            return replace(attempt, result=result)
        if link.ended_by_controller and result.failure.retry_safe:
            return None  # never processed, and not to be sent again: the session is over
        safe = result.failure.retry_safe or switch.retry == RetryPolicy.IDEMPOTENT
        trying_for_s = tracer.now_s() - first_try_s
        if safe and link.down_for_s() >= switch.reconnect.give_up_after_s:
            link.give_up()  # the controller has been unreachable that long: not this ping's failure alone
        if not safe or trying_for_s >= switch.reconnect.give_up_after_s or link.given_up:
            link.gave_up(number)
            reason = (
                GiveUpReason.NOT_RETRY_SAFE
                if not safe
                else GiveUpReason.TIME_UP
                if trying_for_s >= switch.reconnect.give_up_after_s
                else GiveUpReason.LINK_DOWN
            )
            return replace(attempt, result=replace(result, gave_up=GiveUp(reason, tries, trying_for_s)))
        await link.failed(number, result.failure, url)


def _not_sent(number: int, interval_s: float, tries: int, first_try_s: float, tracer: Tracer, link: Link) -> Attempt:
    """A ping the link gave up on before it could try (again): failed with the link's last failure."""
    waited_s = tracer.now_s() - first_try_s
    failure = link.last_failure or Failure(FailureKind.OTHER, "the link gave up before this ping could go", True)
    result = PingResult(
        number,
        interval_s,
        elapsed_s=waited_s,
        failure=failure,
        attempts=tries,
        gave_up=GiveUp(GiveUpReason.LINK_DOWN, tries, waited_s),
    )
    return Attempt(result, answered=False)


async def _ping(transport: SwitchTransport, tracer: Tracer, url: str, timeout_s: float) -> bool:
    """An HTTP/2 PING on every connection the pings have open to ``url``, all at once: alive when each is ACKed
    within ``timeout_s``."""
    connections = transport.connections(url)
    round_trips = await asyncio.gather(*(connection.ping(timeout_s) for connection in connections))
    for connection, rtt_s in zip(connections, round_trips, strict=True):
        if rtt_s is None:
            return False
        record = tracer.connection_of(connection.network)
        tracer.emit(
            KeepaliveAnswered(at_s=tracer.now_s(), url=url, connection=record.number if record else None, rtt_s=rtt_s)
        )
    return True


async def _probe(client: httpx.AsyncClient, tracer: Tracer, url: str, ping: Request, timeout_s: float) -> bool:
    """Over HTTP/1.1, where there is no PING: a ping of 0 s to ``url`` on a connection of its own; any answer at
    all is a sign of life."""
    target = url.rstrip("/") + ping.target("0")
    content = None if ping.body is None else ping.body.encode()
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.request(ping.method, target, headers=ping.headers, content=content)
    except (httpx.HTTPError, TimeoutError):
        return False
    tracer.emit(KeepaliveAnswered(at_s=tracer.now_s(), url=url, status=response.status_code))
    return True
