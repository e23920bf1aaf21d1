"""h2c: the controller's cleartext listener (controller.cleartext) and the switch on an http:// URL. No TLS
events, an anonymous switch, and the same verdict and cross-check as over TLS."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.commands import run_switch
from tests.servers import ControllerProcess, write_config
from tests.tools import require


@pytest.fixture(scope="module")
def cleartext(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControllerProcess, str]]:
    config = write_config(tmp_path_factory.mktemp("cleartext"), controller="  cleartext: {host: 127.0.0.1, port: 0}\n")
    with ControllerProcess.start(config) as controller:
        port = controller.seen(r"listening on http://127\.0\.0\.1:(\d+)").group(1)  # logged before the admin URL
        yield controller, f"http://127.0.0.1:{port}"


def run_cleartext(controller: ControllerProcess, url: str, scenario: str) -> dict[str, object]:
    done = run_switch(controller.config, url, "--scenario", scenario, "--json", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TLS handshake" not in done.stderr  # the trace (-v, on stderr with --json): no TLS at all
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_h2c_with_prior_knowledge_multiplexes_three_pings_on_one_connection(
    cleartext: tuple[ControllerProcess, str],
) -> None:
    report = run_cleartext(*cleartext, "seed")
    assert str(report["verdict"]).startswith("MULTIPLEXED: 3 pings as 3 streams on 1 connection (HTTP/2)")
    assert report["tls_handshakes"] == 0
    view = report["controller_view"]
    assert isinstance(view, dict)
    assert view["agrees"] is True
    assert view["switch"] == "an anonymous switch"
    (record,) = view["records"]
    assert (record["switch"], record["cleartext"], record["tls_version"], record["streams"]) == (None, True, None, 4)


def test_http11_over_cleartext_needs_three_connections(cleartext: tuple[ControllerProcess, str]) -> None:
    report = run_cleartext(*cleartext, "contrast")
    assert str(report["verdict"]).startswith("NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1)")
    view = report["controller_view"]
    assert isinstance(view, dict)
    assert view["agrees"] is True


def test_curl_h2c_prior_knowledge_the_reports_own_check(cleartext: tuple[ControllerProcess, str]) -> None:
    _, url = cleartext
    done = subprocess.run(
        [
            require("curl"),
            "--silent",
            "--show-error",
            "--http2-prior-knowledge",
            "--write-out",
            "%{http_code} %{http_version}",
            "--output",
            "/dev/null",
            f"{url}/ping?interval=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "200 2"), done.stderr
