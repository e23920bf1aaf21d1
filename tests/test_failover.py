"""Many controllers: a session fails over among them (switch.controllers, start_with), loses no ping that is safe
to retry, says which controller answered each ping, and notices a controller that went silent within
switch.keepalive's bound."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dialout.config import ConfigError, Keepalive, Schedule, StartWith, SwitchConfig, load_config, parse_config
from sim_switch.dial.destinations import Destinations
from sim_switch.dial.keepalive import socket_options
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.events import GaveUpOnSilence, KeepaliveAnswered, KeepaliveCheck, LinkUp
from sim_switch.model.results import RunResult
from sim_switch.model.verdict import judge
from sim_switch.render.report import ping_error, render_summary, to_json, verdict_line
from tests.commands import run_module
from tests.relay import SilentRelay
from tests.servers import REPO, ControllerProcess, RunningController, write_config
from tests.switches import session as run_session_for
from tests.switches import switch_ran_ok
from tests.test_session import Waiter, session, switch_config


def outcomes(result: RunResult) -> Counter[str]:
    return Counter(ping.outcome for ping in result.pings)


# --- the config -------------------------------------------------------------------------------------------------


def test_controllers_list_and_start_with_are_read() -> None:
    cfg = parse_config(
        {
            "switch": {
                "controllers": ["https://a.example:8443", "https://b.example:9443"],
                "start_with": "last-connected",
            }
        }
    )
    assert cfg.switch.controller_urls == ("https://a.example:8443", "https://b.example:9443")
    assert cfg.switch.start_with is StartWith.LAST_CONNECTED
    one = parse_config({"switch": {"controller_url": "https://a.example:8443"}})
    assert one.switch.controller_urls == ("https://a.example:8443",)


@pytest.mark.parametrize(
    ("switch", "key", "message"),
    [
        ({"controller_url": "https://a:1", "controllers": ["https://b:2"]}, "switch.controllers", "not both"),
        ({"controllers": []}, "switch.controllers", "at least one"),
        ({"controllers": ["https://a:1", "ftp://b"]}, "switch.controllers[1]", "https:// URL"),
        ({"controllers": ["https://a:1", "https://a:1"]}, "switch.controllers", "twice"),
        ({"start_with": "nearest"}, "switch.start_with", "first-listed, last-connected, random"),
        ({"keepalive": {"idle_s": 0}}, "switch.keepalive.idle_s", "must be"),
    ],
)
def test_bad_controller_lists_are_refused(switch: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"switch": switch})
    assert refused.value.path == key
    assert message in str(refused.value)


def test_a_bad_controller_names_its_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, switch="  controllers: [https://127.0.0.1:1]\n")
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert f"{config}:" in str(refused.value)
    assert "switch.controllers" in str(refused.value)


def test_start_with_picks_where_a_session_begins_and_begins_again() -> None:
    urls = ["https://a", "https://b", "https://c"]
    first = Destinations(urls, StartWith.FIRST_LISTED, lambda: 0.0)
    assert first.current == "https://a"
    assert first.move_on() == "https://b"
    first.connected()
    assert first.start_again() == "https://a"  # back to the top of the list
    last = Destinations(urls, StartWith.LAST_CONNECTED, lambda: 0.0)
    last.move_on()
    last.move_on()
    last.connected()
    assert last.start_again() == "https://c"  # the one it was last connected to
    assert last.move_on() == "https://a"  # wrapping round
    assert Destinations(urls, StartWith.RANDOM, lambda: 0.99).current == "https://c"
    assert Destinations(urls, StartWith.RANDOM, lambda: 0.4).start_again() == "https://b"


# --- failover between real controller processes ----------------------------------------------------------------


@pytest.fixture
def two_controllers(tmp_path: Path) -> Iterator[tuple[ControllerProcess, ControllerProcess]]:
    config = write_config(tmp_path, controller="  switches: [switch-1, 'fleet-*']\n")
    with ControllerProcess.start(config, "--verbose") as first, ControllerProcess.start(config) as second:
        yield first, second


async def run_and_kill_first(
    tmp_path: Path, controllers: tuple[ControllerProcess, ControllerProcess], retry: str = "safe"
) -> RunResult:
    """A session of 16 pings over [first, second]; the first is SIGKILLed with a ping in flight."""
    first, second = controllers
    schedule = Schedule(every_s=0.4, batch=2, interval_s=0.3, count=16)
    cfg = switch_config(tmp_path / "certs", retry=retry)
    run = asyncio.create_task(
        run_session_for(
            session(schedule), [first.url, second.url], client_ssl_context(tmp_path / "certs", "switch-1"), cfg
        )
    )
    for _ in range(4):  # a few pings have been answered; now one is in flight
        await asyncio.to_thread(first.wait_for, r"GET /ping: received")
    first.process.send_signal(signal.SIGKILL)
    return await run


async def test_sigkill_one_controller_and_the_session_goes_on_at_the_other(
    tmp_path: Path, two_controllers: tuple[ControllerProcess, ControllerProcess]
) -> None:
    first, second = two_controllers
    result = await run_and_kill_first(tmp_path, two_controllers)
    counts = outcomes(result)
    assert sum(counts.values()) == 16
    # Only what the dead controller may have processed is lost; everything safe to retry went to the other.
    failed = [ping for ping in result.pings if not ping.ok]
    assert all("not safe to retry: it may have been processed" in (ping_error(ping) or "") for ping in failed)
    assert all(ping.controller == first.url for ping in failed)
    assert counts["retried-then-ok"] >= 1
    assert result.pings[-1].ok
    assert result.pings[-1].controller == second.url
    [failover] = result.failovers
    assert (failover.from_url, failover.to_url) == (first.url, second.url)
    assert set(result.controllers) == {first.url, second.url}
    # The cross-check asked the controller the session ended on, about what it answered.
    assert result.controller_view is not None
    assert result.controller_view.agrees, result.controller_view
    summary = render_summary(result, judge(result))
    assert f"failover at {failover.at_s:.1f} s: {first.url} -> {second.url} (" in summary
    assert "1 failover" in verdict_line(judge(result))
    report = to_json(result, judge(result))
    assert {ping["controller"] for ping in report["pings"]} == {first.url, second.url}
    assert report["failovers"][0]["to"] == second.url


async def test_with_idempotent_retries_a_failover_loses_nothing(
    tmp_path: Path, two_controllers: tuple[ControllerProcess, ControllerProcess]
) -> None:
    result = await run_and_kill_first(tmp_path, two_controllers, retry="idempotent")
    counts = outcomes(result)
    assert counts["failed"] == 0, [ping_error(ping) for ping in result.pings if ping.failure]
    assert judge(result).ok
    assert len(result.failovers) == 1


def test_an_unreachable_first_controller_is_passed_over(tmp_path: Path) -> None:
    """`python -m sim_switch` with switch.controllers: the first refuses connections, the session begins at the
    second, and --json names the controller of every ping."""
    with socket.socket() as nobody:  # bound, not listening: a connect to it is refused
        nobody.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{nobody.getsockname()[1]}"
        config = write_config(
            tmp_path, extra="  session:\n    persistent: {count: 6, every_s: 0.2, batch: 2, interval_s: 0.1}\n"
        )
        with ControllerProcess.start(config) as alive:
            text = config.read_text().replace(
                "  controller_url: https://127.0.0.1:8443\n",
                f"  controllers: [{dead}, {alive.url}]\n  reconnect: {{initial_s: 0.05, max_s: 0.2}}\n",
            )
            config.write_text(text)
            done = subprocess.run(
                [sys.executable, "-m", "sim_switch", "--config", str(config), "--scenario", "session", "--json", "-v"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
    switch_ran_ok(done)
    report = json.loads(done.stdout)
    assert report["answered_by"] == {alive.url: 6}
    assert {ping["controller"] for ping in report["pings"]} == {alive.url}
    assert f"to {alive.url} (the next controller): the controller is down: connection refused" in done.stderr
    assert f"link up again at {alive.url} after 1 redial" in done.stderr
    assert report["failovers"] == []  # it never was connected to the first


# --- a controller that goes silent ------------------------------------------------------------------------------


async def test_a_silent_controller_is_noticed_within_the_keepalive_bound(
    tmp_path: Path, two_controllers: tuple[ControllerProcess, ControllerProcess]
) -> None:
    """Pings of 1 s behind a relay that stops forwarding (no FIN, no RST): the session notices within
    keepalive.bound_s, not after request_timeout_s (30 s here), and goes on at the other controller."""
    first, second = two_controllers
    keepalive = Keepalive(idle_s=0.5, interval_s=0.25, count=2)  # noticed within 1 s
    waiter = Waiter()
    link_up, silent = waiter.on(LinkUp), waiter.on(GaveUpOnSilence)
    async with SilentRelay(first.port).running() as relay:
        behind_relay = f"https://127.0.0.1:{relay.port}"
        schedule = Schedule(every_s=0.25, batch=1, interval_s=1.0, count=12)
        cfg = switch_config(tmp_path / "certs", keepalive=keepalive, retry="idempotent")
        run = asyncio.create_task(
            run_session_for(
                session(schedule),
                [behind_relay, second.url],
                client_ssl_context(tmp_path / "certs", "switch-1"),
                cfg,
                waiter,
            )
        )
        await link_up.wait()  # the first ping was answered: the session is on the first controller
        went_silent_at_s = run_clock(waiter)
        relay.go_silent()
        await silent.wait()
        result = await run
    [noticed] = waiter.of(GaveUpOnSilence)
    assert noticed.silence.url == behind_relay
    # Noticed within the bound, counted from the last thing heard (at the latest, when the relay went silent).
    assert noticed.at_s - went_silent_at_s <= keepalive.bound_s + 0.5, noticed
    assert noticed.at_s < cfg.request_timeout_s
    assert outcomes(result)["failed"] == 0, [ping_error(ping) for ping in result.pings if ping.failure]
    assert result.pings[-1].controller == second.url
    assert [(f.from_url, f.to_url) for f in result.failovers] == [(behind_relay, second.url)]
    assert result.failovers[0].loss == noticed.silence


def run_clock(waiter: Waiter) -> float:
    """The session's clock, now: the time of its latest trace event is a lower bound."""
    return max(event.at_s for event in waiter.events)


async def test_sockets_carry_tcp_keepalive_with_the_configured_timing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    keepalive = Keepalive(idle_s=7, interval_s=2, count=4)
    with ControllerProcess.start(config) as controller:
        transport = httpx.AsyncHTTPTransport(
            http2=True,
            verify=client_ssl_context(tmp_path / "certs", "switch-1"),
            socket_options=socket_options(keepalive),
        )
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            response = await client.get(f"{controller.url}/ping?interval=0")
            tls = response.extensions["network_stream"]
            sock = tls.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 15_000


def test_the_default_keepalive_notices_within_8_s() -> None:
    assert SwitchConfig().keepalive.bound_s == 8.0


# --- a fleet spread over two controllers ------------------------------------------------------------------------


@pytest.mark.parametrize("spread", ["round-robin", "hash"])
def test_a_fleet_spreads_over_the_controllers_and_each_saw_its_share(
    tmp_path: Path, two_controllers: tuple[ControllerProcess, ControllerProcess], spread: str
) -> None:
    """`python -m sim_switch --scenario fleet` with two controllers: every switch dials the one `spread` gives it,
    the report says how many went where, and each controller's own records have exactly those switches. (The two
    share one account, config.yaml's: each one's records are those of its own life.)"""
    first, second = two_controllers
    config = tmp_path / "config.yaml"
    text = config.read_text().replace(
        "  controller_url: https://127.0.0.1:8443\n", f"  controllers: [{first.url}, {second.url}]\n"
    )
    config.write_text(text + f"  spread:\n    fleet: {{switches: 20, pings: 3, interval_s: 0.2, spread: {spread}}}\n")
    done = run_module("sim_switch", "--config", str(config), "--scenario", "spread", "--json", "--workers", "1")
    assert done.returncode == 0, done.stderr
    shares = json.loads(done.stdout)["by_controller"]
    assert set(shares) == {first.url, second.url}
    assert sum(share["switches"] for share in shares.values()) == 20
    assert all(share["sent"] == share["answered_ok"] == 3 * share["switches"] for share in shares.values())
    if spread == "round-robin":
        assert [share["switches"] for share in shares.values()] == [10, 10]
    for controller in two_controllers:
        answer = httpx.get(f"{controller.admin_url}/connections", trust_env=False).json()
        records = [record for record in answer["connections"] if record["life"] == answer["life"]]
        assert len(answer["connections"]) > len(records)  # the other's too: one account
        fleet = {record["switch"] for record in records if str(record["switch"]).startswith("fleet-")}
        assert len(fleet) == shares[controller.url]["switches"]
        streams = sum(record["streams"] for record in records if record["switch"] in fleet)
        assert streams == shares[controller.url]["sent"]


async def test_keepalive_pings_the_pings_own_connection_and_opens_no_other(
    controller: RunningController, certs_dir: Path
) -> None:
    """A live controller quiet for longer than idle_s (pings of 0.8 s, idle_s 0.2 s): the check is an HTTP/2 PING
    on the connection the pings use, its ACK's round trip in the trace, and the controller sees that one
    connection and nothing else (the 0 s ping on a connection of its own is gone)."""
    keepalive = Keepalive(idle_s=0.2, interval_s=0.5, count=2)
    waiter = Waiter()
    schedule = Schedule(every_s=0.1, batch=2, interval_s=0.8, count=4)
    cfg = switch_config(certs_dir, keepalive=keepalive)
    context = client_ssl_context(certs_dir, "switch-1")
    result = await run_session_for(session(schedule), controller.url, context, cfg, waiter)
    verdict = judge(result)
    assert verdict.ok, [ping_error(ping) for ping in result.pings if ping.failure]
    checks, answers = waiter.of(KeepaliveCheck), waiter.of(KeepaliveAnswered)
    assert checks, "a quiet stretch longer than idle_s should have been checked"
    assert all(check.http2 for check in checks)
    assert answers
    assert all(answer.rtt_s is not None and answer.connection == 1 for answer in answers)
    assert len(result.connections) == 1
    assert result.controller_view is not None
    assert len(result.controller_view.records) == 1
    assert result.controller_view.disagreements == ()
