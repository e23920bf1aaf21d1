"""Fleet mode: many switches at once, each with its own certificate, client and connection.

Every switch is a one-shot run of the scenario's pings (``client.run_scenario``) with an identity of its own,
issued by the controller's PKI on first use and cached in the certs directory. Starts are spread over
``ramp_up_s``. The controller is not asked per switch (a thousand extra requests would measure the asking).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from controller.config import Fleet, OneShot, Scenario, SwitchConfig
from controller.tls_files import switch_files
from sim_switch.client import run_scenario
from sim_switch.results import RunResult
from sim_switch.tls import switch_ssl_context
from sim_switch.tracing import TraceEvent


@dataclass(frozen=True)
class FleetResult:
    scenario: Scenario
    controller_url: str
    runs: tuple[tuple[str, RunResult], ...]  # (switch id, its run), in id order
    wall_time_s: float


async def run_fleet(
    scenario: Scenario,
    controller_url: str,
    switch: SwitchConfig,
    emit: Callable[[TraceEvent], None],
    progress: Callable[[int, int], None] = lambda done, total: None,
    streams_per_connection: int = 100,
) -> FleetResult:
    fleet = scenario.kind
    if not isinstance(fleet, Fleet):
        raise ValueError(f"scenario {scenario.name!r} is a {fleet.mode} scenario, not a fleet")
    ids = fleet.switch_ids()
    one_switch = dataclasses.replace(scenario, kind=OneShot((fleet.interval_s,) * fleet.pings))
    tls = urlsplit(controller_url).scheme == "https"  # in cleartext, switches present no certificate
    contexts = {switch_id: switch_ssl_context(switch_files(switch, switch_id)) if tls else None for switch_id in ids}
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = 0

    async def one(index: int, switch_id: str) -> tuple[str, RunResult]:
        nonlocal done
        await asyncio.sleep(max(0.0, started + index * fleet.ramp_up_s / len(ids) - loop.time()))
        run = await run_scenario(one_switch, controller_url, contexts[switch_id], switch.request_timeout_s, emit,
                                 switch_id, streams_per_connection, ask=False)  # fmt: skip
        done += 1
        progress(done, len(ids))
        return switch_id, run

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(index, switch_id)) for index, switch_id in enumerate(ids)]
    return FleetResult(scenario, controller_url, tuple(task.result() for task in tasks), loop.time() - started)
