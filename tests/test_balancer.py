"""Controller replicas behind a TCP balancer: Debian's nginx with its stream module, configured by what `python -m
controller nginx-conf --stream --full` prints, spreading a fleet over two controllers that share one account. TLS
passes through nginx unopened: each controller verifies each switch's own certificate, and learns the switch's
address from the PROXY protocol's line nginx sends first (``controller/server/proxy_protocol.py``), which a
scripted balancer sends here too, whole, in pieces, or not at all."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import h2.events
import httpx
import pytest

from controller.server.proxy_protocol import V2_SIGNATURE, header, parse
from dialout.config import ControllerConfig, RetryPolicy, Schedule
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import LinkUp
from sim_switch.render.report import ping_error
from tests.attacks import RawH2Client
from tests.commands import run_module
from tests.conftest import SWITCH_IDS
from tests.nginx import nginx_balancing
from tests.servers import ControllerProcess, run_controller, write_config
from tests.switches import as_on_a_quiet_machine, switch_ran_ok
from tests.switches import session as run_session_for
from tests.test_session import Waiter, outcomes, session, switch_config

SWITCHES = 20


def v2(version_command: int, family_protocol: int, rest: bytes) -> bytes:
    """A PROXY protocol version 2 header, as HAProxy's send-proxy-v2 writes one."""
    return V2_SIGNATURE + bytes([version_command, family_protocol]) + len(rest).to_bytes(2, "big") + rest


V2_TCP4 = bytes([198, 51, 100, 7, 127, 0, 0, 1]) + (40000).to_bytes(2, "big") + (8443).to_bytes(2, "big")
V2_TCP6 = (
    ipaddress.IPv6Address("2001:db8::7").packed
    + ipaddress.IPv6Address("::1").packed
    + (40000).to_bytes(2, "big")
    + (8443).to_bytes(2, "big")
)
V2_TLV = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP, 3 bytes
V2_FROM_TCP4 = v2(0x21, 0x11, V2_TCP4)  # PROXY, TCP over IPv4


def test_a_fleet_through_a_tcp_balancer_is_spread_over_the_replicas_and_one_account(tmp_path: Path) -> None:
    config = write_config(tmp_path, controller="  switches: [switch-1, 'fleet-*']\n  balancers: [127.0.0.1]\n")
    with ControllerProcess.start(config) as first, ControllerProcess.start(config) as second:
        replicas = (first, second)
        with nginx_balancing(config, replicas) as nginx:
            text = config.read_text().replace("https://127.0.0.1:8443", f"https://127.0.0.1:{nginx.port}")
            scenario = f"  fleet:\n    fleet: {{switches: {SWITCHES}, pings: 3, interval_s: 0.2}}\n"
            config.write_text(text + scenario)
            done = run_module("sim_switch", "--config", str(config), "--scenario", "fleet", "--json", "--workers", "1")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["failed"], report["sent"]) == (0, 3 * SWITCHES), report
        answers = [httpx.get(f"{replica.admin_url}/connections", trust_env=False).json() for replica in replicas]
        explained = run_module("controller", "explain", "--config", str(config), "--url", second.admin_url)
    for answer in answers:
        fleet = [record for record in answer["connections"] if str(record["switch"]).startswith("fleet-")]
        # each connection went to the next replica in turn: half the fleet each, known by its own certificate
        own = [record for record in fleet if record["life"] == answer["life"]]
        assert len({record["switch"] for record in own}) == SWITCHES // 2, own
        # known by its own address (a fleet's switch dials from one of 127.1.0.0/16), as nginx's PROXY line said
        assert all(record["peer"].startswith("127.1.") for record in own), own
        # and every switch in either one's account
        assert len({record["switch"] for record in fleet}) == SWITCHES
    assert explained.returncode == 0, explained.stderr
    assert sum(line.startswith("fleet-") for line in explained.stdout.splitlines()) == SWITCHES, explained.stdout


def test_a_switch_behind_the_balancer_is_known_by_its_own_address_and_both_views_agree(tmp_path: Path) -> None:
    config = write_config(tmp_path, controller="  balancers: [127.0.0.1]\n")
    with (
        ControllerProcess.start(config) as first,
        ControllerProcess.start(config) as second,
        nginx_balancing(config, (first, second)) as nginx,
    ):
        done = run_module("sim_switch", "--config", str(config), "--url", f"https://127.0.0.1:{nginx.port}", "--json")
    switch_ran_ok(done)
    report = json.loads(done.stdout)
    assert as_on_a_quiet_machine(report["verdict"]).startswith("MULTIPLEXED: 3 pings as 3 streams on 1 connection")
    [connection] = report["connections"]
    [record] = report["controller_view"]["records"]  # found by the switch's own address: the PROXY line's
    assert record["peer"] == connection["local_address"]


async def test_a_replica_killed_behind_the_balancer_the_session_goes_on_at_the_other_and_the_account_keeps_both(
    tmp_path: Path,
) -> None:
    """Issue 32's "kill one replica mid-fleet": the switch dials the balancer again, which hands it to the other
    replica; with idempotent retries no ping is lost, and the survivor's account holds the switch's connections of
    both lives, the dead one's as it last wrote them."""
    config = write_config(tmp_path, controller="  balancers: [127.0.0.1]\n")
    certs = tmp_path / "certs"
    waiter = Waiter()
    up = waiter.on(LinkUp)
    with (
        ControllerProcess.start(config) as first,
        ControllerProcess.start(config) as second,
        nginx_balancing(config, (first, second)) as nginx,
    ):
        schedule = Schedule(every_s=0.4, batch=2, interval_s=0.3, count=16)
        run = asyncio.create_task(
            run_session_for(
                session(schedule),
                f"https://127.0.0.1:{nginx.port}",
                client_ssl_context(certs, "switch-1"),
                switch_config(certs, retry=RetryPolicy.IDEMPOTENT),
                waiter,
            )
        )
        await up.wait()
        answers = {replica: await _connections(replica) for replica in (first, second)}
        lives = {replica: answer["life"] for replica, answer in answers.items()}
        # the replica nginx gave the session to: the life of the switch's one open connection, in either's account
        [open_now] = [record for record in answers[first]["connections"] if record["closed_at"] is None]
        serving, survivor = (first, second) if open_now["life"] == lives[first] else (second, first)
        serving.process.kill()
        result = await run
        account = await _connections(survivor)
    counts = outcomes(result)
    assert counts["failed"] == 0, [ping_error(ping) for ping in result.pings if ping.failure]
    assert sum(counts.values()) == 16
    assert len(result.connections) >= 2  # the dead replica's, then the survivor's: both through the balancer
    by_life = Counter(record["life"] for record in account["connections"])
    assert set(by_life) == {lives[first], lives[second]}, account  # the switch's connections of both lives
    dead = [record for record in account["connections"] if record["life"] == lives[serving]]
    assert all(record["streams"] >= 1 for record in dead)  # what it recorded before it died is there


async def _connections(replica: ControllerProcess) -> dict[str, Any]:
    """A replica's ``GET /connections?switch=switch-1`` on its admin listener."""
    async with httpx.AsyncClient(trust_env=False) as admin:
        answer: dict[str, Any] = (await admin.get(f"{replica.admin_url}/connections?switch=switch-1")).json()
    return answer


@pytest.mark.parametrize(
    ("pieces", "peer"),
    [
        ((b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 8443\r\n",), "198.51.100.7:40000"),
        ((b"PROXY TCP6 2001:db8::7 ::1 40000 8443\r\n",), "[2001:db8::7]:40000"),
        ((b"PRO", b"XY TCP4 198.51.100.7 127.0.", b"0.1 40000 8443\r\n"), "198.51.100.7:40000"),
        ((b"PROXY UNKNOWN\r\n",), "127.0.0.2:"),  # a balancer's own health check: its own address stays
        ((V2_FROM_TCP4,), "198.51.100.7:40000"),
        ((v2(0x21, 0x21, V2_TCP6 + V2_TLV),), "[2001:db8::7]:40000"),  # with a TLV of the balancer's, passed over
        ((V2_FROM_TCP4[:7], V2_FROM_TCP4[7:19], V2_FROM_TCP4[19:]), "198.51.100.7:40000"),
        ((v2(0x20, 0x00, b""),), "127.0.0.2:"),  # LOCAL: the balancer's own connection
    ],
    ids=["tcp4", "tcp6", "in-pieces", "unknown", "v2-tcp4", "v2-tcp6", "v2-in-pieces", "v2-local"],
)
async def test_a_balancers_proxy_header_names_the_switch(certs_dir: Path, pieces: tuple[bytes, ...], peer: str) -> None:
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, balancers=("127.0.0.2",))
    async with run_controller(cfg) as controller:
        reader, writer = await asyncio.open_connection("127.0.0.1", controller.port, local_addr=("127.0.0.2", 0))
        for piece in pieces:  # each its own write, read by the controller as it comes
            writer.write(piece)
            await writer.drain()
        await writer.start_tls(client_ssl_context(certs_dir, "switch-1"), server_hostname="localhost")
        client = RawH2Client.over(reader, writer)
        answer = await client.answer_frames(client.request("/ping?interval=0"))
        await client.close()
        [record] = controller.registry.connections()
    assert str(record.peer).startswith(peer)
    body = b"".join(event.data for event in answer if isinstance(event, h2.events.DataReceived))
    assert json.loads(body)["client"] == str(record.peer)  # the ping's answer says the same


@pytest.mark.parametrize("first", [b"\x16\x03\x01\x02\x00\x01", b"PROXY TCP4 nonsense\r\n"], ids=["tls", "garbled"])
async def test_a_balancer_connection_without_a_proxy_header_is_closed_before_tls_and_said_once(
    certs_dir: Path, caplog: pytest.LogCaptureFixture, first: bytes
) -> None:
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, balancers=("127.0.0.2",))
    caplog.set_level(logging.WARNING, logger="controller.server.proxy_protocol")
    async with run_controller(cfg) as controller:
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", controller.port, local_addr=("127.0.0.2", 0))
            writer.write(first)
            assert await reader.read() == b""  # closed, before any TLS of the controller's
            writer.close()
        async with httpx.AsyncClient(verify=client_ssl_context(certs_dir, "switch-1"), trust_env=False) as switch:
            assert (await switch.get(f"{controller.url}/ping?interval=0")).status_code == 200  # not a balancer
        assert controller.registry.connections()[-1].peer.host == "127.0.0.1"
    [said] = [record.getMessage() for record in caplog.records]
    assert said.startswith("closed a connection from 127.0.0.2 (controller.balancers) before TLS: ")
    assert "`proxy_protocol on;`" in said


@pytest.mark.parametrize(
    ("version_command", "family_protocol", "rest"),
    [
        (0x11, 0x11, V2_TCP4),
        (0x23, 0x11, V2_TCP4),
        (0x21, 0x11, V2_TCP4[:11]),
        (0x21, 0x11, V2_TCP4[:8] + b"\0\0" + V2_TCP4[10:]),
        (0x21, 0x11, V2_TCP4 + bytes(3000)),  # beyond what the controller reads before TLS
    ],
    ids=["version-1", "command-3", "short", "port-0", "too-long"],
)
def test_a_proxy_v2_header_that_does_not_parse_is_refused(
    version_command: int, family_protocol: int, rest: bytes
) -> None:
    with pytest.raises(ValueError, match="PROXY v2"):
        header(v2(version_command, family_protocol, rest))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 198.51.100.7 127.0.0.1 40000",
        b"PROXY TCP4 2001:db8::7 127.0.0.1 40000 8443",
        b"PROXY TCP4 198.51.100.7 127.0.0.1 0 8443",
        b"PROXY UDP4 198.51.100.7 127.0.0.1 40000 8443",
        b"GET / HTTP/1.1",
    ],
)
def test_a_proxy_line_that_does_not_parse_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match="PROXY"):
        parse(line)
