"""The report's topology: switch -> nginx (HTTP/2 + mTLS, Debian's package) -> controller, nginx configured by the
file that ``python -m controller nginx-conf --full`` printed. Both ends must still agree on what the switch did."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from dialout.pki import ca_cert_path, switch_identity
from tests.commands import run_module, run_switch
from tests.nginx import PROXY, Nginx, nginx_in_front_of
from tests.servers import ControllerProcess, write_config
from tests.switches import switch_client
from tests.test_curl import curl
from tests.tools import require


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControllerProcess, Nginx]]:
    config = write_config(tmp_path_factory.mktemp("nginx"), controller=f"  trusted_proxies: [{PROXY}]\n")
    with ControllerProcess.start(config) as controller, nginx_in_front_of(controller) as nginx:
        yield controller, nginx


def via_proxy(controller: ControllerProcess) -> list[dict[str, object]]:
    """The controller's records of switch-1's connections to nginx, asked directly (not through nginx)."""
    certs = controller.config.parent / "certs"
    with switch_client(certs, "switch-1") as client:
        records = client.get(f"{controller.url}/connections", params={"switch": "switch-1"}).json()["connections"]
    return [record for record in records if record["via"] == PROXY]


def test_seed_through_nginx_is_multiplexed_and_both_views_agree(behind_nginx: tuple[ControllerProcess, Nginx]) -> None:
    controller, nginx = behind_nginx
    done = run_switch(controller.config, nginx.url, "--scenario", "seed", "--json", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["multiplexed"] is True
    assert report["verdict"].startswith("MULTIPLEXED: 3 pings as 3 streams on 1 connection (HTTP/2)")
    assert f"controller saw switch-1 through {PROXY}: 1 connection, 3 streams, 3 at once" in done.stderr
    view = report["controller_view"]
    assert view["agrees"] is True
    (record,) = view["records"]
    assert record["via"] == PROXY
    assert record["peer"] == report["connections"][0]["local_address"]  # nginx's $remote_addr:$remote_port
    assert (record["alpn"], record["streams"], record["peak_in_flight"]) == ("h2", 4, 3)  # 3 pings + the query
    assert record["closed_at"] is None  # a proxy cannot tell when the switch's connection closed: not invented
    assert "closed_at" in record["unknown"]
    assert len(record["upstream_connections"]) >= 3  # nginx to us: HTTP/1.1, one request at a time on each
    # the live page's first snapshot draws it as the switch's connection through nginx, not as nginx's own
    page = httpx.get(f"{controller.admin_url}/", trust_env=False).text
    initial = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert initial is not None
    [drawn] = [c for c in json.loads(initial.group(1))["open"] if c["id"] == record["id"]]
    assert (drawn["switch"], drawn["via"]) == ("switch-1", PROXY)
    assert drawn["streams"] >= record["streams"]  # and the switch's /diagnosis after it


def test_explain_behind_nginx_judges_the_switch_and_leaves_nginx_out(
    behind_nginx: tuple[ControllerProcess, Nginx],
) -> None:
    """nginx's own connections to the controller carry the switch's requests: explain does not diagnose nginx as a
    switch (it was ``nginx-proxy: http1_only``, exit 1), and says once that they were left out (issue 28)."""
    controller, nginx = behind_nginx
    done = run_switch(controller.config, nginx.url, "--scenario", "seed")
    assert done.returncode == 0, done.stdout + done.stderr
    explained = run_module("controller", "explain", "--config", str(controller.config), "--url", controller.admin_url)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    asked, *lines = explained.stdout.splitlines()
    assert asked == f"the controller at {controller.admin_url} (--url) says:"
    assert lines[0].startswith("switch-1: ")
    assert not any(line.startswith(f"{PROXY}: ") and "request" in line.split(";")[0] for line in lines), lines
    [carried] = [line for line in lines if line.startswith(f"{PROXY}: a trusted proxy")]
    assert "carry the switches' requests" in carried
    answer = json.loads(
        run_module(
            "controller", "explain", "--json", "--config", str(controller.config), "--url", controller.admin_url
        ).stdout
    )
    assert [diagnosis["switch"] for diagnosis in answer["switches"]] == ["switch-1"]
    [proxy] = answer["carriers"]
    assert proxy["proxy"] == PROXY
    assert proxy["connections"] >= 1


def test_contrast_through_nginx_is_three_connections(behind_nginx: tuple[ControllerProcess, Nginx]) -> None:
    controller, nginx = behind_nginx
    done = run_switch(controller.config, nginx.url, "--scenario", "contrast", "--json", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"].startswith("NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1)")
    assert report["controller_view"]["agrees"] is True
    assert {record["alpn"] for record in report["controller_view"]["records"]} == {"http/1.1"}
    assert len(report["controller_view"]["records"]) == 3


@pytest.mark.parametrize(("option", "connections"), [("--parallel-immediate", 3), ("--no-progress-meter", 1)])
def test_curl_through_nginx_is_seen_connection_by_connection(
    behind_nginx: tuple[ControllerProcess, Nginx], option: str, connections: int
) -> None:
    """curl --parallel --parallel-immediate dials one connection per transfer; --parallel alone shares one."""
    controller, nginx = behind_nginx
    before = {record["id"] for record in via_proxy(controller)}
    transfers = curl(nginx.url, controller.config.parent / "certs", "--parallel", option)
    assert [code for code, _, _ in transfers] == ["200"] * 3
    new = [record for record in via_proxy(controller) if record["id"] not in before]
    assert len(new) == connections
    assert sum(int(str(record["streams"])) for record in new) == 3


def test_forged_identity_headers_from_an_untrusted_peer_are_ignored(
    behind_nginx: tuple[ControllerProcess, Nginx],
) -> None:
    """switch-1 is not a trusted proxy: forwarding another valid certificate of the same CA changes nothing."""
    controller, _ = behind_nginx
    certs = controller.config.parent / "certs"
    other = switch_identity(certs, PROXY).cert
    forged = {
        "X-Dialout-Client-Cert": quote(other.read_text(encoding="ascii"), safe=""),
        "X-Dialout-Client-Verify": "SUCCESS",
        "X-Dialout-Connection": "999999",
        "X-Dialout-Peer": "192.0.2.7:4242",
    }
    with switch_client(certs, "switch-1") as client:
        answer = client.get(f"{controller.url}/ping", params={"interval": "0"}, headers=forged).json()
        records = client.get(f"{controller.url}/connections").json()["connections"]
    assert answer["switch"] == "switch-1"
    assert not [record for record in records if record["peer"] == "192.0.2.7:4242"]
    controller.wait_for(r"sent X-Dialout-\* headers but is not in controller.trusted_proxies: ignored")


def test_the_printed_file_is_one_nginx_accepts(behind_nginx: tuple[ControllerProcess, Nginx]) -> None:
    controller, nginx = behind_nginx
    conf = controller.config.parent / f"nginx-{nginx.port}.conf"
    checked = subprocess.run(
        [require("nginx"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert ca_cert_path(controller.config.parent / "certs").exists()
    assert (controller.config.parent / "certs" / f"{PROXY}.pem").exists(), "the proxy's certificate was issued"


def test_a_proxied_connection_closes_with_the_proxy_and_the_counts_agree(tmp_path: Path) -> None:
    """nginx never says when the switch's connection to it closed: the controller closes it when nginx's own
    connections to it that carried it close. With nginx gone, /connections, /metrics and the switches connected
    all say none is open."""
    config = write_config(tmp_path, controller=f"  trusted_proxies: [{PROXY}]\n")
    with ControllerProcess.start(config) as controller:
        with nginx_in_front_of(controller) as nginx:
            done = run_switch(controller.config, nginx.url, "--scenario", "seed", "--json", "-v")
            assert done.returncode == 0, done.stderr
            [proxied] = via_proxy(controller)
        controller.wait_for(rf"conn #{proxied['id']} closed: switch-1, \d+ streams")
        [proxied] = via_proxy(controller)
        assert proxied["closed_at"] is not None
        with httpx.Client(trust_env=False) as client:
            records = client.get(f"{controller.admin_url}/connections").json()["connections"]
            metrics = client.get(f"{controller.admin_url}/metrics").text
    still_open = [record for record in records if record["closed_at"] is None]
    assert still_open == []
    open_by_alpn = [float(value) for value in re.findall(r"^dialout_connections_open\{.*\} (\S+)$", metrics, re.M)]
    assert sum(open_by_alpn) == len(still_open)
    assert re.search(r"^dialout_switches_connected 0\.0$", metrics, re.M), metrics
