"""The switch against a controller that is not dialout's: its own endpoint, method, headers, body and statuses
(``scenarios.<name>.request``), and a verdict that says it is the switch's view alone when there is no account to
compare with, unless the scenario requires one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialout.pki import ca_cert_path, controller_identity
from tests.commands import run_switch
from tests.servers import REPO, LineReader, write_config

POLL = """\
    request:
      method: POST
      path: /api/v1/poll?wait={{interval}}
      headers: {{X-Tenant: shivaram-1}}
      body: '{{"poll": "config"}}'
      statuses: [202]
"""


def scenario(name: str, kind: str, expect: str = "") -> str:
    return f"  {name}:\n{kind}    http2: true\n{POLL.format()}{expect}"


SCENARIOS = (
    scenario("poll", "    pings: [0.3, 0.6, 0.9]\n")
    + scenario("poll-required", "    pings: [0.3, 0.6, 0.9]\n", "    expect: {controller_view: required}\n")
    + scenario("poll-session", "    persistent: {count: 4, every_s: 0.1, batch: 2, interval_s: 0.2}\n")
    + scenario("poll-fleet", "    fleet: {switches: 3, pings: 2, interval_s: 0.2}\n")
    + scenario("wrong-status", "    pings: [0]\n").replace("[202]", "[200]")
)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The foreign controller on Hypercorn with mTLS on dialout's certificates, and a config that points at it."""
    directory = tmp_path_factory.mktemp("foreign")
    config = write_config(directory, extra=SCENARIOS, controller='  switches: [switch-1, "fleet-*"]\n')
    subprocess.run(
        [sys.executable, "-m", "controller", "certs", "--config", str(config)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    certs = directory / "certs"
    identity = controller_identity(certs)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "--bind",
            "127.0.0.1:0",
            "--certfile",
            str(identity.cert),
            "--keyfile",
            str(identity.key),
            "--ca-certs",
            str(ca_cert_path(certs)),
            "--verify-mode",
            "CERT_REQUIRED",
            "--log-level",
            "INFO",
            "tests.foreign_controller:app",
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with LineReader.stopped_at_exit(process):
        server = LineReader(process, "hypercorn")
        port = server.wait_for(r"Running on https://127\.0\.0\.1:(\d+)").group(1)
        yield config, f"https://localhost:{port}"


def test_a_controller_without_an_account_gives_the_switchs_view_alone(foreign: tuple[Path, str]) -> None:
    done = run_switch(*foreign, "--scenario", "poll", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"].startswith(
        "MULTIPLEXED (the switch's view; the controller keeps no account): 3 pings as 3 streams on 1 connection"
    )
    assert [ping["status"] for ping in report["pings"]] == [202, 202, 202]
    view = report["controller_view"]
    assert view["kept_account"] is False
    assert view["no_account"] == "GET /connections: 404 Not Found, text/plain"


def test_requiring_the_controllers_view_fails_without_one(foreign: tuple[Path, str]) -> None:
    done = run_switch(*foreign, "--scenario", "poll-required", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["multiplexed"] is False
    assert "controller view: required (expect.controller_view), but the controller keeps no account" in " ".join(
        report["failures"]
    )
    # the last word says why it failed, not what the pings looked like
    assert report["verdict"].startswith("FAILED: controller view: required (expect.controller_view)")


@pytest.mark.parametrize("name", ["poll-session", "poll-fleet"])
def test_every_scenario_kind_drives_the_foreign_endpoint(foreign: tuple[Path, str], name: str) -> None:
    done = run_switch(*foreign, "--scenario", name, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["failed"] == 0
    assert report["answered_ok"] == (4 if name == "poll-session" else 6)


def test_a_status_not_listed_is_a_failed_ping(foreign: tuple[Path, str]) -> None:
    done = run_switch(*foreign, "--scenario", "wrong-status", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["pings"][0]["error"] == "HTTP 202: nothing new"
