"""Fleet mode: many switches at once, each with its own certificate, client and connection.

Every switch is a one-shot run of the scenario's pings (``client.run_scenario``) with an identity of its own,
issued by the controller's PKI on first use and cached in the certs directory. Starts are spread over
``ramp_up_s``. The controller is not asked per switch (a thousand extra requests would measure the asking).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dialout.config import Fleet, OneShot, Scenario
from dialout.tls_files import switch_files
from sim_switch.dial.client import run_scenario
from sim_switch.dial.destinations import spread_over
from sim_switch.dial.settings import RunSettings
from sim_switch.dial.tls import switch_ssl_context
from sim_switch.model.events import TraceEvent
from sim_switch.model.results import RunResult

# Where a fleet on loopback dials from: one address per switch (Linux routes all of 127.0.0.0/8 to lo).
FLEET_SOURCES = ipaddress.IPv4Network("127.1.0.0/16")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``--shard I/N``): every count-th switch, from the index-th on."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def take(self, ids: list[str]) -> list[str]:
        return ids[self.index :: self.count]


@dataclass(frozen=True)
class FleetResult:
    scenario: Scenario
    controllers: tuple[str, ...]  # the list the switches were spread over
    runs: tuple[tuple[str, RunResult], ...]  # (switch id, its run, which names its controller), in id order
    wall_time_s: float
    started_at: float  # epoch seconds
    cpu_s: float  # this process's CPU time during the run
    shard: Shard | None


def switches_of(fleet: Fleet, shard: Shard | None) -> list[str]:
    """The ids of the switches a run of ``fleet`` runs: all of them, or ``shard``'s."""
    everyone = fleet.switch_ids()
    return shard.take(everyone) if shard else everyone


def parse_shard(text: str) -> Shard:
    """``I/N`` with 0 <= I < N; ``ValueError`` with a message a user can act on."""
    index, slash, count = text.partition("/")
    if not slash or not index.isdigit() or not count.isdigit():
        raise ValueError(f"must be I/N, e.g. 0/4 (shard 0 of 4), got {text!r}")
    shard = Shard(int(index), int(count))
    if shard.count < 1 or shard.index >= shard.count:
        raise ValueError(f"I must be 0 to N-1 and N at least 1, got {text!r}")
    return shard


def loopback_source(url: str, place: int) -> str | None:
    """The address switch number ``place`` dials a controller on IPv4 loopback from: one of its own in
    127.1.0.0/16, as each switch of a real fleet has its own, so that the controller's view of addresses (its
    per-address handshake cap, the peers in /connections) is what a real fleet would give it. None otherwise."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    return str(FLEET_SOURCES[1 + place % (FLEET_SOURCES.num_addresses - 2)]) if loopback else None


async def run_fleet(
    settings: RunSettings,
    controllers: tuple[str, ...],
    emit: Callable[[TraceEvent], None],
    progress: Callable[[int, int], None] = lambda done, total: None,
    shard: Shard | None = None,
) -> FleetResult:
    """The fleet's switches, or with ``shard`` that shard's (each keeps its start time in the whole fleet's
    ramp-up), each dialling the controller ``fleet.spread`` gives it, with its own certificate (the settings' TLS
    context is not used)."""
    scenario, switch = settings.scenario, settings.switch
    fleet = scenario.kind
    if not isinstance(fleet, Fleet):
        raise ValueError(f"scenario {scenario.name!r} is a {fleet.mode} scenario, not a fleet")
    everyone = fleet.switch_ids()
    ids = switches_of(fleet, shard)
    place = {switch_id: index for index, switch_id in enumerate(everyone)}
    one_switch = dataclasses.replace(scenario, kind=OneShot((fleet.interval_s,) * fleet.pings))
    urls = {switch_id: spread_over(controllers, switch_id, place[switch_id], fleet.spread) for switch_id in ids}
    # In cleartext, switches present no certificate.
    contexts = {
        switch_id: switch_ssl_context(switch_files(switch, switch_id))
        if urlsplit(urls[switch_id]).scheme == "https"
        else None
        for switch_id in ids
    }
    loop = asyncio.get_running_loop()
    started, started_at, cpu = loop.time(), time.time(), time.process_time()
    done = 0

    async def one(switch_id: str) -> tuple[str, RunResult]:
        nonlocal done
        due = started + place[switch_id] * fleet.ramp_up_s / len(everyone)
        await asyncio.sleep(max(0.0, due - loop.time()))
        each = dataclasses.replace(
            settings,
            scenario=one_switch,
            switch=dataclasses.replace(switch, switch_id=switch_id),
            ssl_context=contexts[switch_id],
            ask=False,
            source_address=loopback_source(urls[switch_id], place[switch_id]),
        )
        run = await run_scenario(each, urls[switch_id], emit)
        done += 1
        progress(done, len(ids))
        return switch_id, run

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(switch_id)) for switch_id in ids]
    return FleetResult(
        scenario,
        tuple(controllers),
        tuple(task.result() for task in tasks),
        loop.time() - started,
        started_at,
        time.process_time() - cpu,
        shard,
    )
