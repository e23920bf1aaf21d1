"""The admin listener (``controller.admin``): plain HTTP on loopback, beside the TLS port, for a browser or
Prometheus without a switch certificate. A real controller process, real switches, real scrapes."""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dialout.config import ConfigError, parse_config
from dialout.tls_files import ca_cert_path
from tests.commands import run_module
from tests.servers import ControllerProcess, metrics_of, write_config
from tests.switches import switch_client, switch_ran_ok

FLEET = """\
  small-fleet:
    fleet: {switches: 12, pings: 2, interval_s: 0.05}
"""


@pytest.fixture(scope="module")
def admin_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    directory = tmp_path_factory.mktemp("admin")
    config = write_config(directory, extra=FLEET, controller="  switches: [switch-1, 'fleet-*']\n")
    with ControllerProcess.start(config) as process:
        yield process


def test_metrics_count_what_the_switches_did(admin_controller: ControllerProcess) -> None:
    process = admin_controller
    before = metrics_of(process.admin_url)
    done = run_module("sim_switch", "--config", str(process.config), "--url", process.url, "--json")
    switch_ran_ok(done)
    # a client without a certificate: its handshake fails, and is counted by OpenSSL's reason
    context = ssl.create_default_context(cafile=ca_cert_path(process.config.parent / "certs"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{process.url}/ping?interval=0", verify=context, trust_env=False)  # no client certificate
    after = metrics_of(process.admin_url)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("dialout_pings_answered_total", status="200") == 3
    assert grew("dialout_ping_lateness_seconds_count") == 3
    assert grew("dialout_connections_opened_total") >= 1
    assert grew("dialout_account_rows_written_total") >= 4  # its connection and 3 pings, in the store
    assert after[("dialout_account_rows_dropped_total", ())] == 0
    assert grew("dialout_tls_handshake_failures_total", reason="PEER_DID_NOT_RETURN_A_CERTIFICATE") == 1
    assert ("dialout_connections_open", (("alpn", "h2"),)) in after


def test_a_fleet_does_not_make_a_series_per_switch(admin_controller: ControllerProcess) -> None:
    process = admin_controller
    done = run_module(
        "sim_switch", "--config", str(process.config), "--url", process.url, "--scenario", "small-fleet", "--json"
    )
    assert done.returncode == 0, done.stderr
    scraped = metrics_of(process.admin_url)
    assert scraped[("dialout_pings_answered_total", (("status", "200"),))] >= 24
    labels = {value for _, pairs in scraped for _, value in pairs}
    assert not any(value.startswith("fleet-") for value in labels)
    per_metric: dict[str, int] = {}
    for name, _ in scraped:
        per_metric[name] = per_metric.get(name, 0) + 1
    assert max(per_metric.values()) <= 20  # the lateness histogram's buckets are the most


def test_connections_and_diagnosis_answer_as_on_the_tls_port(admin_controller: ControllerProcess) -> None:
    process = admin_controller
    certs = process.config.parent / "certs"
    with switch_client(certs, "switch-1", http2=True) as switch:
        assert switch.get(f"{process.url}/ping?interval=0").status_code == 200
        over_tls = switch.get(f"{process.url}/connections?switch=switch-1").json()
    plain = httpx.get(f"{process.admin_url}/connections?switch=switch-1", trust_env=False).json()
    assert [c["id"] for c in plain["connections"]] == [c["id"] for c in over_tls["connections"]]
    assert plain["switches"]["switch-1"]["connections"] == over_tls["switches"]["switch-1"]["connections"]
    diagnosis = httpx.get(f"{process.admin_url}/diagnosis?switch=switch-1", trust_env=False)
    assert diagnosis.status_code == 200
    assert json.loads(diagnosis.text)["switches"][0]["switch"] == "switch-1"
    bad = httpx.get(f"{process.admin_url}/diagnosis?since=yesterday", trust_env=False)
    assert bad.status_code == 400
    page = httpx.get(f"{process.admin_url}/", trust_env=False)
    assert page.headers["content-type"].startswith("text/html")
    # the page draws itself from a first snapshot in it, then follows /events (tests/test_live_page.py)
    initial = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page.text, re.DOTALL)
    assert initial is not None
    assert json.loads(initial.group(1))["totals"]["connections_opened"] >= 1


def test_the_admin_listener_is_loopback_only_unless_the_config_says_so() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"controller": {"admin": {"host": "0.0.0.0"}}})
    assert refused.value.path == "controller.admin.host"
    assert "is not loopback" in str(refused.value)
    with pytest.raises(ConfigError) as no_credential:
        parse_config({"controller": {"admin": {"host": "0.0.0.0", "allow_remote": True}}})
    assert no_credential.value.path == "controller.admin.token_file"
    assert "a remote admin listener (0.0.0.0) needs a credential" in str(no_credential.value)
    remote = {"host": "0.0.0.0", "allow_remote": True, "token_file": "admin.token"}
    allowed = parse_config({"controller": {"admin": remote}})
    assert allowed.controller.admin.host == "0.0.0.0"
    assert parse_config({}).controller.admin_port == 8444  # the controller's 8443, plus one
    assert parse_config({"controller": {"port": 0}}).controller.admin_port == 0
    assert parse_config({"controller": {"admin": {"enabled": False, "host": "10.0.0.1"}}}).controller.admin.host


def test_a_taken_admin_port_is_one_line_that_says_how_to_move_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        done = run_module("controller", "--config", str(config), "--port", "0", "--admin-port", port)
    assert done.returncode == 1
    [error] = [line for line in done.stderr.splitlines() if line.startswith("controller: ")]
    assert error.startswith(
        f"controller: the admin listener (controller.admin.port) cannot listen on 127.0.0.1 port {port}: "
        "Address already in use; set controller.admin.port or --admin-port"
    )


TOKEN = "s3cret-admin-token-for-tests"


@pytest.fixture(scope="module")
def guarded_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """An admin listener with a bearer token (on loopback: the tests listen nowhere else) and two live pages."""
    directory = tmp_path_factory.mktemp("guarded-admin")
    token = directory / "admin.token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    token.chmod(0o600)
    config = write_config(directory, controller="  admin:\n    token_file: admin.token\n    max_event_clients: 2\n")
    with ControllerProcess.start(config) as process:
        process.wait_for("admin listener: every request needs the bearer token in")
        yield process


def test_with_a_token_every_admin_request_must_carry_it(guarded_admin: ControllerProcess) -> None:
    url = guarded_admin.admin_url
    with httpx.Client(trust_env=False) as anyone:
        bare = anyone.get(f"{url}/connections")
        wrong = anyone.get(f"{url}/metrics", headers={"Authorization": "Bearer not-the-token"})
        right = anyone.get(f"{url}/connections", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bare.status_code == wrong.status_code == 401
    assert bare.headers["WWW-Authenticate"] == 'Bearer realm="dialout admin"'
    assert bare.json() == {"error": "this admin listener needs its bearer token (controller.admin.token_file)"}
    assert right.status_code == 200
    # a browser: /?token= sets a cookie and sends it back to a URL without the token, and the page then works
    with httpx.Client(trust_env=False, follow_redirects=True) as browser:
        page = browser.get(f"{url}/", params={"token": TOKEN})
        metrics = browser.get(f"{url}/metrics")
    assert page.status_code == 200
    assert str(page.url) == f"{url}/"
    assert metrics.status_code == 200


def test_live_pages_beyond_the_cap_get_503(guarded_admin: ControllerProcess) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    events = f"{guarded_admin.admin_url}/events"
    with (
        httpx.Client(trust_env=False, headers=headers, timeout=10) as browser,
        browser.stream("GET", events) as first,
        browser.stream("GET", events) as second,
    ):
        assert first.status_code == second.status_code == 200
        third = browser.get(events)
    assert third.status_code == 503
    assert third.headers["Retry-After"] == "5"
    assert "max_event_clients" in third.json()["error"]


def test_without_a_token_the_admin_listener_answers_only_loopback_names(admin_controller: ControllerProcess) -> None:
    """DNS rebinding: a web page at evil.example that points its name at 127.0.0.1 makes the browser send
    ``Host: evil.example`` to the admin listener; without a token, that is the listener's only defence."""
    with httpx.Client(trust_env=False) as browser:
        rebound = browser.get(f"{admin_controller.admin_url}/connections", headers={"Host": "evil.example:8444"})
        local = browser.get(f"{admin_controller.admin_url}/connections", headers={"Host": "localhost:8444"})
    assert rebound.status_code == 403
    assert rebound.json() == {"error": "Host 'evil.example:8444' is not this admin listener's (loopback names only)"}
    assert local.status_code == 200


@pytest.mark.parametrize(
    ("content", "mode", "error"),
    [
        (TOKEN, 0o644, "token file is readable by others (mode 0644)"),
        ("short", 0o600, "must hold one token of at least 16 printable characters"),
    ],
)
def test_an_unusable_token_file_is_one_line_and_exit_2(tmp_path: Path, content: str, mode: int, error: str) -> None:
    token = tmp_path / "admin.token"
    token.write_text(content, encoding="utf-8")
    token.chmod(mode)
    config = write_config(tmp_path, controller="  admin:\n    token_file: admin.token\n")
    done = run_module("controller", "--config", str(config), "--port", "0", "--admin-port", "0")
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("controller: ")]
    assert error in line
    assert "Traceback" not in done.stderr
