"""Runs of the switch for the tests, in this test's event loop: one place that builds a run's settings."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from dialout.config import Scenario, SwitchConfig
from sim_switch.dial.client import run_scenario
from sim_switch.dial.session import run_session
from sim_switch.dial.settings import RunSettings
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import TraceEvent
from sim_switch.model.results import RunResult
from sim_switch.model.verdict import INCONCLUSIVE_EXIT

INCONCLUSIVE = "INCONCLUSIVE: "


def as_on_a_quiet_machine(line: str) -> str:
    """A verdict line as a quiet machine says it. On a loaded one the cross-check may read an answer late while a
    loop lagged enough to explain it: the same line then follows ``INCONCLUSIVE: `` and ends with the lags measured
    (``sim_switch/render/report.py``), and the run exits ``INCONCLUSIVE_EXIT``, not 0."""
    if line.startswith(INCONCLUSIVE):
        assert "lagged" in line, line
    return line.removeprefix(INCONCLUSIVE)


def switch_ran_ok(done: subprocess.CompletedProcess[str]) -> None:
    """A ``python -m sim_switch`` run that found nothing wrong: exit 0, or on a loaded machine exit
    ``INCONCLUSIVE_EXIT`` with its verdict's ``INCONCLUSIVE:`` naming the lag (``as_on_a_quiet_machine``)."""
    said = done.stdout + done.stderr
    if done.returncode == INCONCLUSIVE_EXIT and INCONCLUSIVE in said and "lagged" in said:
        return
    assert done.returncode == 0, said


def ignore(event: TraceEvent) -> None:
    """A run's trace, when the test does not read it."""


def settings_for(
    scenario: Scenario,
    context: ssl.SSLContext | None,
    switch: SwitchConfig | None = None,
    *,
    timeout_s: float = 30.0,
    ask: bool = True,
    frames: bool = False,
) -> RunSettings:
    """As switch-1, with ``timeout_s`` as its request timeout, unless ``switch`` says otherwise."""
    return RunSettings(
        scenario, switch or SwitchConfig(request_timeout_s=timeout_s), context, ask=ask, trace_frames=frames
    )


async def one_shot(
    scenario: Scenario,
    url: str,
    context: ssl.SSLContext | None,
    emit: Callable[[TraceEvent], None] = ignore,
    *,
    timeout_s: float = 30.0,
    ask: bool = True,
    frames: bool = False,
) -> RunResult:
    settings = settings_for(scenario, context, timeout_s=timeout_s, ask=ask, frames=frames)
    return await run_scenario(settings, url, emit)


async def session(
    scenario: Scenario,
    urls: str | Sequence[str],
    context: ssl.SSLContext | None,
    switch: SwitchConfig,
    emit: Callable[[TraceEvent], None] = ignore,
) -> RunResult:
    return await run_session(settings_for(scenario, context, switch), urls, emit)


def switch_client(certs_dir: Path, switch_id: str = "switch-1", *, http2: bool = False) -> httpx.Client:
    """An httpx client that presents ``switch_id``'s certificate from ``certs_dir`` and trusts its CA only."""
    return httpx.Client(http2=http2, verify=client_ssl_context(certs_dir, switch_id), trust_env=False)


def async_switch_client(certs_dir: Path, switch_id: str = "switch-1", *, http2: bool = True) -> httpx.AsyncClient:
    """The same, for a test's event loop; HTTP/2 unless said otherwise, as the switch speaks."""
    return httpx.AsyncClient(http2=http2, verify=client_ssl_context(certs_dir, switch_id), trust_env=False)
