"""Fleet mode: many switches, each with its own certificate, client and connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialout.config import ConfigError, ControllerConfig, Fleet, Scenario, SwitchConfig, parse_config
from dialout.pki import ensure_certs, generate_certs
from sim_switch.fleet.run import run_fleet
from sim_switch.fleet.tally import tally
from sim_switch.fleet.verdict import judge_fleet
from sim_switch.render.fleet import fleet_json, fleet_line, problem_lines, render_fleet
from tests.commands import run_module
from tests.conftest import HOSTNAMES
from tests.servers import ControllerProcess, run_controller, write_config
from tests.switches import ignore, settings_for

FLEET = Fleet(switches=5, id_pattern="fleet-{n:02d}", pings=3, interval_s=0.1)
FLEET_SCENARIO = Scenario("fleet", FLEET)


async def test_a_small_fleet_gets_one_connection_per_switch(tmp_path: Path) -> None:
    generate_certs(tmp_path, HOSTNAMES, ["switch-1"])
    ensure_certs(tmp_path, HOSTNAMES, FLEET.switch_ids())  # issued on demand from the same CA
    progress: list[tuple[int, int]] = []
    cfg = ControllerConfig(certs_dir=tmp_path, switches=("switch-1", "fleet-*"))
    async with run_controller(cfg) as running:
        result = await run_fleet(
            settings_for(FLEET_SCENARIO, None, SwitchConfig(certs_dir=tmp_path)),
            (running.url,),
            ignore,
            lambda done, total: progress.append((done, total)),
        )
        seen = {record.switch for record in running.registry.connections()}
        addresses = {record.switch: record.peer.host for record in running.registry.connections()}
    fleet_tally = tally(result)
    verdict = judge_fleet(fleet_tally)
    assert verdict.ok, problem_lines(verdict)
    assert [switch for switch, _ in result.runs] == ["fleet-01", "fleet-02", "fleet-03", "fleet-04", "fleet-05"]
    assert seen == set(FLEET.switch_ids())  # the controller knew each by its own certificate
    # on loopback each switch dials from an address of its own, as a real fleet's switches do
    assert addresses == {f"fleet-{n:02d}": f"127.1.0.{n}" for n in range(1, 6)}
    report = fleet_json(fleet_tally, verdict)
    assert (report["switches"], report["sent"], report["answered_ok"], report["failed"]) == (5, 15, 15, 0)
    assert report["connections_per_switch"] == {"1": 5}
    assert set(report["latency_s"]) == {"p50", "p90", "p99", "max"}
    assert report["tls_handshake_s"]["max"] > 0
    assert progress[-1] == (5, 5)
    assert "connections per switch: 5 switches on 1" in render_fleet(fleet_tally, verdict)
    assert fleet_line(fleet_tally, verdict).startswith("FLEET OK: 5 switches x 3 pings, 15 ok, 0 failed")


async def test_a_fleet_the_controller_does_not_know_fails_with_errors_by_kind(tmp_path: Path) -> None:
    generate_certs(tmp_path, HOSTNAMES, ["switch-1"])
    ensure_certs(tmp_path, HOSTNAMES, FLEET.switch_ids())
    async with run_controller(ControllerConfig(certs_dir=tmp_path, switches=("switch-1",))) as running:
        result = await run_fleet(
            settings_for(FLEET_SCENARIO, None, SwitchConfig(certs_dir=tmp_path)), (running.url,), ignore
        )
    verdict = judge_fleet(tally(result))
    assert not verdict.ok
    assert fleet_json(tally(result), verdict)["errors_by_kind"] == {"HTTP 403": 15}
    assert fleet_line(tally(result), verdict).startswith("FLEET FAILED: 5 switches x 3 pings, 0 ok, 15 failed")


@pytest.mark.parametrize(
    ("fleet", "path", "message"),
    [
        ({"switches": 3, "pings": 1}, "scenarios.f.fleet.interval_s", "missing"),
        (
            {"switches": 3, "pings": 1, "interval_s": 0, "id_pattern": "same"},
            "scenarios.f.fleet.id_pattern",
            "must contain {n}",
        ),
        (
            {"switches": 3, "pings": 1, "interval_s": 0, "id_pattern": "bad_{n}"},
            "scenarios.f.fleet.id_pattern",
            "must be a DNS-style name",
        ),
        ({"switches": 0, "pings": 1, "interval_s": 0}, "scenarios.f.fleet.switches", "must be a whole number"),
    ],
)
def test_fleet_config_errors_are_named(fleet: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"scenarios": {"f": {"fleet": fleet}}})
    assert caught.value.path == path
    assert message in caught.value.message


def test_fleet_patterns_are_allowed_in_but_get_no_certificate() -> None:
    cfg = parse_config({"controller": {"switches": ["switch-1", "fleet-*"]}, "switch": {"id": "switch-1"}})
    assert cfg.controller.switches == ("switch-1", "fleet-*")
    assert cfg.switch_ids == ("switch-1",)
    with pytest.raises(ConfigError, match="must be a DNS-style name"):
        parse_config({"controller": {"switches": ["fleet_*"]}})


def test_a_fleet_from_the_command_line(tmp_path: Path) -> None:
    fleet = "  fleet:\n    fleet: {switches: 4, pings: 2, interval_s: 0.05}\n"
    config = write_config(tmp_path, extra=fleet, controller="  switches: [switch-1, 'fleet-*']\n")
    with ControllerProcess.start(config) as process:
        done = run_module("sim_switch", "--config", str(config), "--url", process.url, "--scenario", "fleet", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["mode"], report["switches"], report["answered_ok"]) == ("fleet", 4, 8)
    assert "issued 4 certificates" in done.stderr
