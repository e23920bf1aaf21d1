"""A server's TLS handshakes paced (``dialout/asyncio_seam.py``, ``HandshakePacer``): a burst of them is
spread over turns of the loop, none is lost, and a refused one still gets its alert when its step was put off.

A real asyncio TLS server on loopback with the controller's own TLS context, and real TLS clients dialling it at
once; the pacer's slice is made too small for two steps, so that every turn runs one and puts the rest off.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from controller.server import asgi_tls
from controller.server.serve import server_ssl_context
from dialout.asyncio_seam import HandshakePacer, count_loop_turns, send_handshake_alerts
from dialout.config import ControllerConfig
from sim_switch.dial.tls import client_ssl_context
from tests.conftest import SWITCH_IDS

AT_ONCE = 30
ONE_STEP_A_TURN_S = 1e-9  # any step spends more: the slice is spent by the first


class _Hello(asyncio.Protocol):
    """Says one byte once the handshake is done (asyncio calls connection_made only then), and counts it in ``done``."""

    def __init__(self, done: list[int]) -> None:
        self._done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._done.append(1)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"!")


async def _dial(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
    try:
        return await reader.readexactly(1)
    finally:
        writer.close()


async def test_a_burst_of_handshakes_is_spread_over_turns_and_none_is_lost(certs_dir: Path) -> None:
    send_handshake_alerts()
    count_loop_turns()
    context = server_ssl_context(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS))
    pacer = HandshakePacer(ONE_STEP_A_TURN_S)
    pacer.pace(context)
    done: list[int] = []
    server = await asyncio.get_running_loop().create_server(lambda: _Hello(done), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    switch = client_ssl_context(certs_dir, "switch-1")
    nobody = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))  # no client certificate: refused
    try:
        async with asyncio.timeout(60):
            answers = await asyncio.gather(
                *(_dial(port, switch) for _ in range(AT_ONCE)), _dial(port, nobody), return_exceptions=True
            )
    finally:
        server.close()
    *served, refused = answers
    assert served == [b"!"] * AT_ONCE, [a for a in served if a != b"!"][:3]
    assert len(done) == AT_ONCE
    # One step a turn: of 60-odd steps with bytes (two of the server's a handshake), most waited for a later turn.
    assert pacer.put_off >= AT_ONCE, pacer.put_off
    # The refused client learns why, its step put off or not (the alert is sent from the paced step too).
    assert isinstance(refused, ssl.SSLError), repr(refused)
    assert "certificate required" in str(refused).lower().replace("_", " "), refused


class _HelloTurn(asyncio.Protocol):
    """Keeps the loop turn its connection's ClientHello was stamped in (``asgi_tls.note_client_hello``)."""

    def __init__(self, turns: list[int | None]) -> None:
        self._turns = turns

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        hello = asgi_tls._hello_at.get(transport.get_extra_info("ssl_object"))
        self._turns.append(None if hello is None else hello[1])
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"!")


async def test_a_clienthello_is_stamped_when_it_was_read_not_when_its_paced_step_ran(certs_dir: Path) -> None:
    """Dials at once whose ClientHellos are read in a turn or two: their steps run one a turn, but each is stamped
    with the turn it was read in. Stamped as its step ran, a handshake begun went before a new one, and three Go
    dials racing under load looked like dials in turn (tests/test_go_client.py failed in CI)."""
    send_handshake_alerts()
    count_loop_turns()
    context = server_ssl_context(ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS))
    HandshakePacer(ONE_STEP_A_TURN_S).pace(context)
    turns: list[int | None] = []
    server = await asyncio.get_running_loop().create_server(lambda: _HelloTurn(turns), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    switch = client_ssl_context(certs_dir, "switch-1")
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(_dial(port, switch) for _ in range(AT_ONCE)))
    finally:
        server.close()
    stamped = [turn for turn in turns if turn is not None]
    assert len(stamped) == AT_ONCE, turns
    # One step a turn would spread the stamps over AT_ONCE turns at least; the reads took a few.
    assert len(set(stamped)) <= AT_ONCE // 3, sorted(stamped)
