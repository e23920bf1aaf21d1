"""Hostile input: any interval text, oversized requests, a config with every key wrong, and HTTP/2 peers that
flood (rapid reset, PING, SETTINGS, CONTINUATION) while another switch's session must keep its latency."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import resource
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.__main__ import main as controller_main
from controller.http.interval import IntervalError, parse_interval
from dialout.config import ConfigError, ControllerConfig, parse_config
from sim_switch.dial.tls import client_ssl_context
from tests.attacks import Attack, AttackReport, Plan, RawH2Client, fill_history
from tests.conftest import SWITCH_IDS
from tests.servers import REPO, ControllerProcess, rss_kib, run_controller, write_config
from tests.switches import async_switch_client
from tests.victim import VictimRun, victim

# A victim's latency under attack, held to its latency alone: measured with no other test file running beside it
# (the suite's parallel pass would be the noise), and again with the machine loaded.
pytestmark = [pytest.mark.timing, pytest.mark.alone]

MAX_INTERVAL_S = 0.05
# Far above MAX_INTERVAL_S: a request that takes this long has hung, whatever the machine's load.
HANG_S = 10.0
interval_texts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[+-]?\d{0,6}(\.\d{0,6})?([eE][+-]?\d{1,4})?", fullmatch=True),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@given(interval_texts)
def test_the_interval_parser_accepts_or_explains_anything(text: str) -> None:
    seconds: float | None = None
    explanation = ""
    try:
        seconds = parse_interval([text], MAX_INTERVAL_S)
    except IntervalError as exc:  # the only exception it may raise
        explanation = str(exc)
    if seconds is None:
        assert explanation
    else:
        assert math.isfinite(seconds)
        assert 0 <= seconds <= MAX_INTERVAL_S


@pytest.fixture(scope="module")
def strict_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("hostile"),
        controller=f"  max_interval_s: {MAX_INTERVAL_S}\n  max_header_bytes: 4096\n",
    )
    with ControllerProcess.start(config) as process:
        yield process


@pytest.fixture(scope="module")
def context(strict_controller: ControllerProcess) -> ssl.SSLContext:
    return client_ssl_context(strict_controller.config.parent / "certs", "switch-1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=interval_texts)
def test_any_interval_over_http_is_200_or_400_never_500_never_a_hang(
    strict_controller: ControllerProcess, context: ssl.SSLContext, text: str
) -> None:
    with httpx.Client(http2=True, verify=context, trust_env=False, timeout=HANG_S) as client:
        response = client.get(f"{strict_controller.url}/ping", params={"interval": text})
    assert response.status_code in (200, 400), response.text
    body = response.json()
    if response.status_code == 400:
        assert body["error"]
    else:
        assert 0 <= body["interval_s"] <= MAX_INTERVAL_S


@pytest.mark.parametrize("http2", [False, True])
def test_an_oversized_request_is_refused_by_the_configured_limit(
    strict_controller: ControllerProcess, context: ssl.SSLContext, http2: bool
) -> None:
    with httpx.Client(http2=http2, verify=context, trust_env=False, timeout=HANG_S) as client:
        refused = client.get(
            f"{strict_controller.url}/ping", params={"interval": "0", "pad": "a" * 3500}, headers={"x-pad": "b" * 1000}
        )
        fine = client.get(f"{strict_controller.url}/ping", params={"interval": "0", "pad": "a" * 1024})
    assert refused.status_code == 431
    assert "over max_header_bytes (4096)" in refused.json()["error"]
    assert fine.status_code == 200


def test_a_huge_http11_request_is_refused_before_it_is_read_whole(
    strict_controller: ControllerProcess, context: ssl.SSLContext
) -> None:
    with httpx.Client(http2=False, verify=context, trust_env=False, timeout=HANG_S) as client:
        refused = client.get(f"{strict_controller.url}/ping?interval=0", headers={"x-pad": "a" * 200_000})
    assert refused.status_code == 431  # Hypercorn's own limit, from the same setting


def test_an_oversized_http2_header_block_is_refused_and_the_controller_carries_on(
    strict_controller: ControllerProcess, context: ssl.SSLContext
) -> None:
    # Over SETTINGS_MAX_HEADER_LIST_SIZE: Hypercorn ends the connection rather than read it.
    with (
        httpx.Client(http2=True, verify=context, trust_env=False, timeout=HANG_S) as client,
        pytest.raises(httpx.HTTPError),
    ):
        client.get(f"{strict_controller.url}/ping?interval=0", headers={"x-pad": "a" * 65536})
    with httpx.Client(http2=True, verify=context, trust_env=False, timeout=HANG_S) as client:
        assert client.get(f"{strict_controller.url}/ping?interval=0").status_code == 200


# --- a config with every key wrong ----------------------------------------------------------------------------

REPO_CONFIG: dict[str, Any] = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))


def leaves(node: object, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        yield from (f"{path}[{index}]" for index in range(len(node)))
        yield path
    else:
        yield path


def replaced(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    keys = path.replace("[", ".[").split(".")
    node: Any = changed
    for key in keys[:-1]:
        node = node[int(key[1:-1])] if key.startswith("[") else node[key]
    last = keys[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return changed


WRONG_VALUES = [{"a": 1}, ["a"], "yes please", True, -7, None]


@pytest.mark.parametrize("path", sorted(set(leaves(REPO_CONFIG))))
def test_every_key_with_a_wrong_value_is_named(path: str) -> None:
    errors = [_config_error(replaced(REPO_CONFIG, path, wrong)) for wrong in WRONG_VALUES]
    named = [error.path for error in errors if error is not None]
    assert all(name == path or name.startswith((f"{path}.", f"{path}[")) for name in named), named
    # Every key refuses most wrong values; a string key takes "yes please", a list key may take ["a"].
    assert len(named) >= len(WRONG_VALUES) - 2, path


def _config_error(data: dict[str, Any]) -> ConfigError | None:
    try:
        parse_config(data)
    except ConfigError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("scenario", "missing"),
    [
        ({"http2": True}, "pings"),
        ({"persistent": {"every_s": 1, "interval_s": 0}}, "persistent.duration_s"),
        ({"persistent": {"duration_s": 5, "interval_s": 0}}, "persistent.every_s"),
        ({"persistent": {"duration_s": 5, "every_s": 1}}, "persistent.interval_s"),
    ],
)
def test_a_missing_required_key_is_named(scenario: dict[str, Any], missing: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"scenarios": {"s": scenario}})
    assert caught.value.path == f"scenarios.s.{missing}"


def test_the_cli_turns_a_wrong_key_into_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    for key in ("port", "max_interval_s", "hostnames", "switches", "graceful_timeout_s"):
        data = replaced(REPO_CONFIG, f"controller.{key}", {"nested": "mapping"})
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        assert controller_main(["--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f": controller.{key}: " in err
        assert "Traceback" not in err


# --- hostile peers: one switch's connection floods, another switch's pings go on (issue 20) ---------------------

VICTIM_BATCHES = 8
# The victim's p99 overhead under attack, against its own alone: the bound, 5x. Its floor: at ~6 ms alone,
# 5x is 30 ms, within one scheduler hiccup of a shared 2-core machine, and the bound must hold on a machine twice as
# slow. Under make test-loaded (two busy processes on two cores) an attack's start costs the pings of that moment
# what the controller's first work on 20 connections, or on 50 handshakes at once, takes on a starved core: 64-68 ms
# measured in issue 20, 130-180 ms on 2026-12-05 (the refused-handshake flood: 131.8 ms once in CI, its victim's own
# loop lag a few ms), against 8-11 ms alone: 200 ms. The attacks this guards against cost 0.2 s to 3 s without their
# defences (issue 20's table). Accepting 16 a turn of the loop (controller/server/accepting.py) took the start of
# the silent flood from 5-82 ms (205 ms once in CI) to 4-16 ms under make test-loaded; handshakes are not paced yet.
VICTIM_SLOWDOWN = 5
VICTIM_FLOOR_S = 0.2
# Log lines a calmed connection may cost: opened, calmed, closed (and a line of the victim's per ping).
LINES_PER_ATTACKER = 3
# The controller's growth in resident memory over one attack: each attacking connection holds a TLS session and
# its buffers (~0.3 MiB) while it lasts, and the heap keeps what it grew to.
RSS_GROWTH_KIB = 40 * 1024
# 1,000 short connections, 50 at a time: their TLS (~0.3 MiB each while open), the history's 1,000 records and the
# heap Python keeps (measured: +42-46 MiB). Held 5 s past their close, as they were, they took ~300 MiB.
SHORT_RSS_GROWTH_KIB = 100 * 1024


@dataclass(frozen=True)
class UnderAttack:
    report: AttackReport
    victim: VictimRun
    log_lines: list[str]
    rss_growth_kib: int


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """A controller with the shipped limits; switch-2's certificate is the attacker's (a fleet switch gone bad)."""
    config = write_config(tmp_path_factory.mktemp("guarded"), controller="  switches: [switch-1, switch-2]\n")
    with ControllerProcess.start(config) as process:
        yield process


@pytest.fixture(scope="module")
def alone(guarded: ControllerProcess) -> VictimRun:
    """The victim's session with no attack, on the same controller: the baseline each attack is held to."""
    run = asyncio.run(victim(guarded.url, _certs(guarded), "switch-1", VICTIM_BATCHES))
    assert run.failed == 0, run.describe()
    return run


async def attacked(process: ControllerProcess, plan: Plan) -> UnderAttack:
    """``plan`` from a process of its own (its CPU is not the victim's), with the victim's session beside it."""
    lines_before, rss_before = len(process.lines), rss_kib(process.process.pid)
    options = {
        "--port": process.port,
        "--certs": _certs(process),
        "--switch": "switch-2",
        "--connections": plan.connections,
        "--frames": plan.frames_per_connection,
        "--seconds": plan.seconds,
        "--source": plan.source,
    }
    arguments = [str(part) for option in options.items() for part in option]
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.attacks", plan.kind.value, *arguments, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    run, (out, _) = await asyncio.gather(
        victim(process.url, _certs(process), "switch-1", VICTIM_BATCHES), attacker.communicate()
    )
    assert attacker.returncode == 0
    report = AttackReport(**json.loads(out))
    growth = rss_kib(process.process.pid) - rss_before
    return UnderAttack(report, run, process.lines[lines_before:], growth)


def _certs(process: ControllerProcess) -> Path:
    return process.config.parent / "certs"


@pytest.mark.parametrize(
    "plan",
    [
        # CVE-2023-44487: 20 connections of HEADERS + RST_STREAM, up to 1000 streams each
        Plan(Attack.RAPID_RESET, connections=20, frames_per_connection=2000, seconds=5),
        Plan(Attack.PING_FLOOD, connections=20, frames_per_connection=100_000, seconds=5),
        Plan(Attack.SETTINGS_FLOOD, connections=20, frames_per_connection=100_000, seconds=5),
        # CVE-2023-45288: header blocks of 16 KB frames that never end (h2 alone would hold 64 of them, 1 MiB, and
        # then say PROTOCOL_ERROR)
        Plan(Attack.CONTINUATION_FLOOD, connections=20, frames_per_connection=1000, seconds=5),
    ],
    ids=lambda plan: plan.kind.value,
)
async def test_a_flooding_connection_gets_goaway_enhance_your_calm_and_the_victim_keeps_its_pings(
    guarded: ControllerProcess, alone: VictimRun, plan: Plan
) -> None:
    found = await attacked(guarded, plan)
    assert found.report.goaway == {"ENHANCE_YOUR_CALM": plan.connections}, found.report
    # each connection ended by the controller within the attack's time; how many frames the attacker had written by
    # then is the kernel's buffers and the scheduler's, not the controller's (issue 28)
    assert found.report.closed_by_controller == plan.connections, found.report
    assert found.victim.failed == 0, found.victim.describe()
    bound = max(VICTIM_SLOWDOWN * alone.p99_s, VICTIM_FLOOR_S)
    assert found.victim.p99_s <= bound, f"{found.victim.describe()}; alone: {alone.describe()}"
    assert not [line for line in found.log_lines if "Traceback" in line]
    calmed = [line for line in found.log_lines if "GOAWAY ENHANCE_YOUR_CALM" in line]
    assert len(calmed) == plan.connections, calmed
    assert len(found.log_lines) <= plan.connections * LINES_PER_ATTACKER + found.victim.pings + 10, found.log_lines
    assert found.rss_growth_kib <= RSS_GROWTH_KIB


async def test_requests_reset_in_the_read_that_brought_them_are_never_started(certs_dir: Path) -> None:
    """3,000 HEADERS + RST_STREAM pairs in one write, under limits raised out of the way. Each used to be started
    (a stream, an app task, a request) before its reset cancelled it, and a read of more than 1,000 of them put
    more streams in Hypercorn's priority tree than it holds: ``TooManyStreamsError``, the connection dead. Now
    a request reset in the read that brought it is dropped unstarted, and the connection serves on."""
    cfg = ControllerConfig(
        certs_dir=certs_dir, switches=SWITCH_IDS, max_resets_per_s=100_000, max_control_frames_per_s=100_000
    )
    async with run_controller(cfg) as controller:
        peer = await RawH2Client.connect(controller.port, client_ssl_context(certs_dir, "switch-1"))
        peer.request_and_reset("/ping?interval=5", 3_000)
        await peer.ping(b"synced!!")  # the controller has read them all
        assert await peer.answer(peer.request("/ping?interval=0")) == 200
        [record] = controller.registry.connections()
        assert record.closed_at is None
        # at most the few whose pair a read cut in two were started (each would sleep 5 s once started)
        assert record.streams < 100, record.streams
        await peer.close()


def _descriptors(limit: int) -> Callable[[], None]:
    def lowered() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lowered


async def test_silent_connections_past_the_descriptor_limit_cost_the_fleet_nothing(tmp_path: Path) -> None:
    """The issue's row: 1,100 TCP connections that never start TLS, at a controller whose descriptors stop at
    1,024. They once took every descriptor, every new switch's handshake timed out, and the log grew by 438,686
    lines in 30 s. Now the caps reset the surplus at accept, the rest wait out a 2 s handshake budget, and a
    switch's session beside them keeps its latency."""
    config = write_config(tmp_path, controller="  switches: [switch-1, switch-2]\n  handshake_timeout_s: 2\n")
    with ControllerProcess.start(config, preexec_fn=_descriptors(1024)) as process:
        alone_there = await victim(process.url, _certs(process), "switch-1", VICTIM_BATCHES)
        found = await attacked(process, Plan(Attack.SILENT, connections=1_100, frames_per_connection=0, seconds=6))
    assert found.report.connections == 1_100, found.report  # the listen backlog holds them all
    assert found.report.closed_by_controller == 1_100, found.report
    assert found.victim.failed == 0, found.victim.describe()
    bound = max(VICTIM_SLOWDOWN * alone_there.p99_s, VICTIM_FLOOR_S)
    assert found.victim.p99_s <= bound, f"{found.victim.describe()}; alone: {alone_there.describe()}"
    refusals = [line for line in found.log_lines if "over the pending-handshake caps" in line]
    assert refusals, found.log_lines
    assert not [line for line in found.log_lines if "Traceback" in line]
    assert len(found.log_lines) <= found.victim.pings + 20, found.log_lines


async def test_diagnosis_of_ten_thousand_connections_in_a_loop_leaves_the_victim_its_pings(certs_dir: Path) -> None:
    """The issue's first row: ``GET /diagnosis`` asked again and again with 10,000 connections in the history. Each
    call took 4.5-10.6 s on the event loop and the victim failed 36 of 100 pings. Now the pass is n log n, and it
    runs in slices of 2 ms, one diagnosis at a time, letting the loop (this test's: controller, victim and asker
    share it, as they would share the controller's) go between them."""
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, operators=("switch-2",))
    async with run_controller(cfg) as controller:
        fill_history(controller.registry, 10_000)
        alone_here = await victim(controller.url, certs_dir, "switch-1", VICTIM_BATCHES)
        asked = 0

        async def ask_again_and_again(until: asyncio.Event) -> None:
            nonlocal asked
            async with async_switch_client(certs_dir, "switch-2") as operator:
                while not until.is_set():
                    answer = await operator.get(f"{controller.url}/diagnosis", timeout=30)
                    assert answer.status_code == 200
                    asked += 1

        done = asyncio.Event()
        asking = asyncio.create_task(ask_again_and_again(done))
        under = await victim(controller.url, certs_dir, "switch-1", VICTIM_BATCHES)
        done.set()
        await asking
    assert asked >= 2  # the diagnosis was running all through the victim's session
    assert under.failed == 0, under.describe()
    bound = max(VICTIM_SLOWDOWN * alone_here.p99_s, VICTIM_FLOOR_S)
    assert under.p99_s <= bound, f"{under.describe()}; alone: {alone_here.describe()}; {asked} diagnoses"


async def test_short_connections_give_their_memory_back(guarded: ControllerProcess, alone: VictimRun) -> None:
    """The issue's 20,000 short connections (here 1,000, 50 at a time): each held its TLS transport and a 256 KiB
    read buffer for Hypercorn's keep_alive_timeout (5 s) after its peer had gone, and 2,000 of them grew the
    controller by 370 MB, never given back. Now a connection's memory goes when it closes."""
    found = await attacked(guarded, Plan(Attack.SHORT, connections=1_000, frames_per_connection=0, seconds=60))
    assert found.report.connections == 1_000, found.report
    assert found.report.closed_by_controller == 0, found.report  # every one was answered
    assert found.victim.failed == 0, found.victim.describe()
    assert found.rss_growth_kib <= SHORT_RSS_GROWTH_KIB, f"{found.rss_growth_kib} KiB"
    assert not [line for line in found.log_lines if "Traceback" in line]


async def test_a_flood_of_refused_handshakes_is_a_line_a_second_and_the_victim_keeps_its_pings(
    guarded: ControllerProcess, alone: VictimRun
) -> None:
    """A client with no certificate, redialling without pause: 500 refused handshakes, 50 at a time, from one
    address. Each is recorded (the account's count is all of them) and the log says so once a second with a count,
    not once each (issue 29); a switch's session beside it keeps its latency."""
    plan = Plan(Attack.NO_CERTIFICATE, connections=500, frames_per_connection=0, seconds=60)
    found = await attacked(guarded, plan)
    assert found.report.connections == 500, found.report
    assert found.report.closed_by_controller == 500, found.report
    assert found.victim.failed == 0, found.victim.describe()
    bound = max(VICTIM_SLOWDOWN * alone.p99_s, VICTIM_FLOOR_S)
    assert found.victim.p99_s <= bound, f"{found.victim.describe()}; alone: {alone.describe()}"
    said = [line for line in found.log_lines if "TLS handshake" in line and f"from {plan.source}" in line]
    assert said, found.log_lines
    assert len(said) <= 2 + found.report.seconds  # the first at once, then at most one a second
    async with httpx.AsyncClient(trust_env=False) as admin:
        answer = (await admin.get(f"{guarded.admin_url}/diagnosis")).json()
    [refused] = [entry for entry in answer["refused_handshakes"] if entry["address"] == plan.source]
    assert (refused["refusal"], refused["count"]) == ("no_certificate", 500)
    assert not [line for line in found.log_lines if "Traceback" in line]
