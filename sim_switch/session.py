"""A persistent session: the switch keeps calling home (RFC 8071), redials when the controller goes away, and
accounts for every ping.

Pings go out in batches on a schedule, like a switch's keep-alive. The first ping dials alone and the rest wait
for the link to come up, so that they then share its connection. When a ping fails in a way that is safe to
repeat (``Failure.retry_safe``, decided where the failure was caught), the ``Link`` goes down: one ping at a time
redials, after an exponential backoff with jitter, and the others wait for it rather than hammering a controller
that is down. The first success brings the link up again and everyone waiting goes at once. Each ping ends in
exactly one of: ok, retried-then-ok, failed (with its reason).

Dialling alone also keeps clear of an httpcore pool bug (a relative of encode/httpcore#1093): requests that wait
on the same half-open HTTP/2 connection, whose first connect fails and a later one succeeds, leave that
connection outside the pool, never closed (the controller then waits its whole graceful timeout on shutdown).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable
from dataclasses import replace

from controller.config import ReconnectPolicy, Request, RetryPolicy, Scenario, Schedule, SwitchConfig
from sim_switch.client import Attempt, attempt_ping, finish_run, new_pool
from sim_switch.failures import sentence
from sim_switch.results import GiveUp, GiveUpReason, RunResult, plural
from sim_switch.streams import HTTPCORE_MAX_STREAMS, StreamPool
from sim_switch.tracing import SESSION, TraceEvent, Tracer


class Link:
    """The switch's view of its call-home link: up, or down and being redialled by one ping (the leader)."""

    def __init__(self, policy: ReconnectPolicy, tracer: Tracer, unit_random: Callable[[], float]) -> None:
        self._policy = policy
        self._tracer = tracer
        self._random = unit_random
        self._up = False  # until the first dial succeeds
        self._changed = asyncio.Event()  # set (and replaced) whenever the link or its leader changes
        self._leader: int | None = None
        self._attempt = 0
        self._down_since_s = 0.0
        self._down_reported = False
        self.reconnects = 0

    async def wait_turn(self, ping: int) -> None:
        """Return when ``ping`` may try: the link is up, or this ping is the one (re)dialling it."""
        while not self._up and self._leader != ping:
            if self._leader is None:  # nobody is dialling: this ping does
                self._leader = ping
                self._down_since_s = self._tracer.now_s()
                return
            await self._changed.wait()

    async def failed(self, ping: int, reason: str) -> None:
        """A ping failed in a way worth retrying. The first to fail leads the redial and sleeps the backoff;
        the others return at once and wait in ``wait_turn``."""
        if self._leader is None:
            self._leader = ping
            self._attempt = 0
            self._down_since_s = self._tracer.now_s()
            self._up = False
        if not self._down_reported:
            self._down_reported = True
            self._tracer.event(None, f"link down: {reason}", kind=SESSION)
        if self._leader != ping:
            return
        self._attempt += 1
        delay_s = self._policy.delay_s(self._attempt, self._random())
        self._tracer.event(ping, f"reconnect #{self._attempt} in {delay_s:.1f} s: {reason}", kind=SESSION)
        await asyncio.sleep(delay_s)

    def succeeded(self, ping: int, connection: int | None) -> None:
        if self._leader != ping:
            return
        if self._attempt:
            down_s = self._tracer.now_s() - self._down_since_s
            text = f"link up again after {plural(self._attempt, 'redial')}, {down_s:.1f} s down"
            self.reconnects += 1
        else:
            text = "link up"
        self._tracer.event(ping, text, connection, kind=SESSION)
        self._up = True
        self._down_reported = False
        self._release()

    def gave_up(self, ping: int) -> None:
        """The leader stops; another waiting ping takes over the dialling (the link stays down)."""
        if self._leader == ping:
            self._release()

    def _release(self) -> None:
        self._leader = None
        self._attempt = 0
        self._changed.set()
        self._changed = asyncio.Event()


async def run_session(
    scenario: Scenario,
    controller_url: str,
    ssl_context: ssl.SSLContext | None,
    switch: SwitchConfig,
    emit: Callable[[TraceEvent], None],
    unit_random: Callable[[], float] = random.random,
    streams_per_connection: int = HTTPCORE_MAX_STREAMS,
) -> RunResult:
    schedule = scenario.kind
    if not isinstance(schedule, Schedule):
        raise ValueError(f"scenario {scenario.name!r} is a {schedule.mode} scenario, not a persistent session")
    tracer = Tracer(emit)
    link = Link(switch.reconnect, tracer, unit_random)
    tasks: list[asyncio.Task[Attempt]] = []
    pool = new_pool(scenario, ssl_context, switch.request_timeout_s, streams_per_connection)
    try:
        async with asyncio.TaskGroup() as group:
            for batch in range(schedule.batches()):
                # Keep the schedule, like a switch's keep-alive timer: a batch does not wait for the last one.
                await asyncio.sleep(max(0.0, batch * schedule.every_s - tracer.now_s()))
                for _ in range(min(schedule.batch, schedule.total_pings() - len(tasks))):
                    number = len(tasks) + 1
                    tasks.append(group.create_task(_send(pool, tracer, link, switch, controller_url, number,
                                                         schedule.interval_s, scenario.request)))  # fmt: skip
        attempts = [task.result() for task in tasks]
        return await finish_run(pool.primary, tracer, scenario, controller_url, ssl_context, switch.switch_id,
                                attempts, reconnects=link.reconnects)  # fmt: skip
    finally:
        await pool.aclose()


async def _send(
    pool: StreamPool, tracer: Tracer, link: Link, switch: SwitchConfig, controller_url: str, number: int,
    interval_s: float, ping: Request,
) -> Attempt:  # fmt: skip
    """One ping, retried while that is safe and the give-up time has not passed."""
    first_try_s = tracer.now_s()
    tries = 0
    while True:
        await link.wait_turn(number)
        tries += 1
        asked_at_s = tracer.now_s()
        async with pool.slot() as client:
            attempt = await attempt_ping(client, tracer, controller_url, number, interval_s, switch.request_timeout_s,
                                         asked_at_s, ping)  # fmt: skip
        # A retried ping's latency is the whole wait, from its first try.
        result = replace(attempt.result, attempts=tries, elapsed_s=tracer.now_s() - first_try_s)
        if attempt.answered or result.failure is None:  # the controller answered, whatever it said
            link.succeeded(number, result.connection)
            return replace(attempt, result=result)
        safe = result.failure.retry_safe or switch.retry == RetryPolicy.IDEMPOTENT
        trying_for_s = tracer.now_s() - first_try_s
        if not safe or trying_for_s >= switch.reconnect.give_up_after_s:
            link.gave_up(number)
            reason = GiveUpReason.TIME_UP if safe else GiveUpReason.NOT_RETRY_SAFE
            return replace(attempt, result=replace(result, gave_up=GiveUp(reason, tries, trying_for_s)))
        await link.failed(number, sentence(result.failure))
