"""Controller replicas behind a TCP balancer: Debian's nginx with its stream module, configured by what `python -m
controller nginx-conf --stream --full` prints, spreading a fleet over two controllers that share one account. TLS
passes through nginx unopened: each controller verifies each switch's own certificate."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.commands import run_module
from tests.nginx import nginx_balancing
from tests.servers import ControllerProcess, write_config

SWITCHES = 20


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
        assert all(record["peer"].startswith("127.0.0.1:") for record in own)  # nginx's address, a balancer's
        # and every switch in either one's account
        assert len({record["switch"] for record in fleet}) == SWITCHES
    assert explained.returncode == 0, explained.stderr
    assert sum(line.startswith("fleet-") for line in explained.stdout.splitlines()) == SWITCHES, explained.stdout
