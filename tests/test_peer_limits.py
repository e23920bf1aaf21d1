"""A controller in front of real gear keeps its descriptors and sockets for switches that speak: a TCP peer that
never starts TLS is dropped after ``controller.handshake_timeout_s``, while a switch beside it is served, and the
open-files soft limit is raised to the hard one at start (issue 20)."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import resource
import socket
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.server.accepting import ACCEPT_ERROR, ACCEPTS_A_TURN, EverySecond, HandshakeGate
from dialout.config import ControllerConfig
from sim_switch.dial.tls import client_ssl_context
from tests.attacks import RawH2Client
from tests.conftest import SWITCH_IDS
from tests.servers import ControllerProcess, run_controller, write_config

pytestmark = pytest.mark.timing  # verdicts from times, bounds on how long: run loaded too

BUDGET_S = 0.5
SILENT_PEERS = 20
# Far beyond the budget: a peer still connected after this was never going to be dropped.
GIVE_UP_S = 10.0


async def test_silent_tcp_peers_are_dropped_after_the_handshake_budget_and_a_switch_is_served(
    certs_dir: Path,
) -> None:
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, handshake_timeout_s=BUDGET_S)
    async with run_controller(cfg) as controller:
        silent = [await asyncio.open_connection("127.0.0.1", controller.port) for _ in range(SILENT_PEERS)]
        context = client_ssl_context(certs_dir, "switch-1")
        async with httpx.AsyncClient(http2=True, verify=context, trust_env=False) as switch:
            answered = await switch.get(f"{controller.url}/ping?interval=0")
        assert answered.status_code == 200  # the victim, with twenty silent peers holding sockets
        async with asyncio.timeout(GIVE_UP_S):
            ends = await asyncio.gather(*(reader.read(1) for reader, _ in silent), return_exceptions=True)
        for _, writer in silent:
            writer.close()
    # Each was closed by the controller (end of file, or a reset), none answered: they never said a word.
    assert all(end == b"" or isinstance(end, ConnectionError) for end in ends), ends


def test_the_open_files_soft_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """Started with a soft limit of 1024 (many distributions' default) under a higher hard one."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = 1024 if hard == resource.RLIM_INFINITY or hard > 1024 else hard

    def lowered() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    with ControllerProcess.start(write_config(tmp_path), preexec_fn=lowered) as controller:
        expected = str(1 << 20) if hard == resource.RLIM_INFINITY else str(hard)
        if low != hard:  # it says so once it has (serving starts after "listening on")
            controller.wait_for(rf"open files: soft limit raised from {low} to {expected}")
        limits = Path(f"/proc/{controller.process.pid}/limits").read_text()
    found = re.search(r"Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)", limits)
    assert found, limits
    soft, _ = found.groups()
    assert soft == expected, limits


@pytest.mark.parametrize(
    ("shared", "reset"),
    [({}, SILENT_PEERS - 5), ({"trusted_proxies": ("127.0.0.2",)}, 0), ({"balancers": ("127.0.0.2",)}, 0)],
    ids=["peer", "proxy", "balancer"],
)
async def test_connections_beyond_the_per_address_cap_are_reset_at_accept(
    certs_dir: Path, shared: dict[str, tuple[str, ...]], reset: int
) -> None:
    """Twenty silent peers from one address against a cap of five: fifteen are reset at once (before any TLS),
    five wait out the handshake budget and are closed; a switch from another address is served meanwhile. From a
    trusted proxy's address or a TCP balancer's, which carry many switches, none is reset: only the cap in all
    holds there."""
    cfg = ControllerConfig(
        certs_dir=certs_dir,
        switches=SWITCH_IDS,
        handshake_timeout_s=BUDGET_S,
        max_pending_handshakes_per_address=5,
        **shared,  # type: ignore[arg-type]
    )
    async with run_controller(cfg) as controller:
        ends = await asyncio.gather(*(_silent_peer(controller.port) for _ in range(SILENT_PEERS)))
        context = client_ssl_context(certs_dir, "switch-1")
        async with httpx.AsyncClient(http2=True, verify=context, trust_env=False) as switch:
            answered = await switch.get(f"{controller.url}/ping?interval=0")
        assert answered.status_code == 200
        async with asyncio.timeout(GIVE_UP_S):
            ended = await asyncio.gather(*ends)
    assert sorted(ended) == ["closed"] * (SILENT_PEERS - reset) + ["reset"] * reset


async def _silent_peer(port: int) -> Coroutine[Any, Any, str]:
    """Connect from 127.0.0.2 and say nothing; then a coroutine that says how the controller let go: "reset"
    (at accept: the connect or the read sees a TCP reset) or "closed" (after the handshake budget)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    except ConnectionResetError:
        return _said("reset")

    async def end() -> str:
        try:
            return "closed" if await reader.read(1) == b"" else "spoke"
        except ConnectionResetError:
            return "reset"
        finally:
            writer.transport.abort()

    return end()


async def _said(what: str) -> str:
    return what


async def test_a_crowd_that_connects_at_once_is_accepted_a_few_a_turn_of_the_loop() -> None:
    """asyncio accepts as many connections as wait in the backlog in one turn of its loop, and starts them all in
    the next: whatever else is ready then (a switch's ping) waits for the whole crowd. The gate takes
    ``ACCEPTS_A_TURN`` a turn, and every connection is still accepted."""
    crowd = 5 * ACCEPTS_A_TURN  # below asyncio's own 100 a turn (create_server's backlog): one turn without the gate
    listener = socket.create_server(("127.0.0.1", 0), backlog=2 * crowd)
    HandshakeGate(max_pending=2 * crowd, max_pending_per_address=2 * crowd).guard(listener)
    clients = [socket.create_connection(listener.getsockname()[:2]) for _ in range(crowd)]  # all in the backlog
    loop = asyncio.get_running_loop()
    turns = 0
    ticking: asyncio.Handle | None = None
    started_in_turn: list[int] = []
    all_started = asyncio.Event()

    def next_turn() -> None:
        nonlocal turns, ticking
        turns += 1
        ticking = loop.call_soon(next_turn)

    class Noted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            started_in_turn.append(turns)
            transport.close()
            if len(started_in_turn) == crowd:
                all_started.set()

    ticking = loop.call_soon(next_turn)
    server = await loop.create_server(Noted, sock=listener)
    try:
        async with asyncio.timeout(GIVE_UP_S):
            await all_started.wait()
    finally:
        if ticking is not None:
            ticking.cancel()
        server.close()
        for client in clients:
            client.close()
    assert max(Counter(started_in_turn).values()) == ACCEPTS_A_TURN
    assert len(set(started_in_turn)) == crowd // ACCEPTS_A_TURN


async def test_an_idle_connection_is_closed_after_the_idle_timeout_not_hypercorns_5_s(certs_dir: Path) -> None:
    """Hypercorn closes a connection with no request in flight after its keep_alive_timeout, 5 s: a call-home
    session pinging every 10 s lost its connection between pings, and a switch too busy to send its first request
    within 5 s of its handshake (the fleet bench, four processes on two cores) found it closed. The controller's
    own ``idle_timeout_s`` (300 s) rules now; here 0.5 s, so that the test sees it act."""
    assert ControllerConfig().idle_timeout_s == 300
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, idle_timeout_s=BUDGET_S)
    async with run_controller(cfg) as controller:
        peer = await RawH2Client.connect(controller.port, client_ssl_context(certs_dir, "switch-1"))
        opened = time.monotonic()
        assert await peer.answer(peer.request("/ping?interval=0")) == 200
        async with asyncio.timeout(BUDGET_S + 3):  # well before Hypercorn's own 5 s
            await peer.closed()
        idle_s = time.monotonic() - opened
        await peer.close()
    assert idle_s >= BUDGET_S


def test_accept_errors_are_logged_once_a_second_with_a_count() -> None:
    """Out of descriptors, asyncio logs a failed accept() with a traceback every time it retries; the filter lets
    one line a second through, without the traceback, saying how many it held back. (Its clock is the test's.)"""
    now = [100.0]
    quiet = EverySecond(clock=lambda: now[0])

    def accept_error() -> logging.LogRecord:
        exc = OSError(errno.EMFILE, "Too many open files")
        message = f"{ACCEPT_ERROR}\nexception: {exc!r}\nsocket: <listening socket>"
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, (OSError, exc, None))

    first = accept_error()
    assert quiet.filter(first)
    assert first.exc_info is None
    held = [quiet.filter(accept_error()) for _ in range(41)]  # within the same second
    assert not any(held)
    assert quiet.filter(logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None))
    now[0] += 1.0
    next_line = accept_error()
    assert quiet.filter(next_line)
    assert next_line.getMessage().endswith("(41 more since the last such line)")
