"""Both command lines, in-process (``main([...])``) and as ``python -m``, against a real controller process."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from controller.__main__ import main as controller_main
from dialout.pki import ensure_certs
from sim_switch.__main__ import main as switch_main
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.verdict import INCONCLUSIVE_EXIT
from tests.commands import run_module
from tests.servers import REPO, ControllerProcess, write_config
from tests.switches import as_on_a_quiet_machine, switch_ran_ok

JSON_FIELDS = {
    "scenario",
    "controller",
    "ok",
    "multiplexed",
    "connections_opened",
    "tls_handshakes",
    "alpn",
    "wall_time_s",
    "failures",
    "pings",
    "outcome",
    "failure_kinds",
    "checks",
    "answered_by",
    "failovers",
}
PING_FIELDS = {
    "interval_s",
    "status",
    "http_version",
    "connection",
    "stream_id",
    "local_port",
    "elapsed_s",
    "error",
    "attempts",
    "outcome",
    "stream_wait_s",
    "failure",
    "controller",
    "controller_connection",
    "loop_lag_s",
}


def test_switch_module_proves_multiplexing(controller_process: ControllerProcess) -> None:
    done = run_module("sim_switch", "--config", str(controller_process.config), "--url", controller_process.url)
    switch_ran_ok(done)
    assert "TLS handshake done: TLSv1.3, ALPN h2" in done.stdout
    assert "connection reused" in done.stdout
    assert "MULTIPLEXED: 3 pings as 3 streams on 1 connection (HTTP/2)" in done.stdout
    assert "controller saw switch-1: 1 connection, 3 streams, 3 at once; both views agree" in done.stdout
    assert done.stderr == ""
    # Both ends name the same stream by its id on the wire, and each connection by both numbers.
    theirs = re.search(r"ping 3 .* conn #1 \(controller #(\d+)\) stream 5 ", done.stdout)
    assert theirs, done.stdout
    controller_process.wait_for(rf"switch-1 conn #{theirs.group(1)} stream 5 \(#3\) .* GET /ping\?interval=0.9 -> 200")


def test_switch_json_report_in_process(
    controller_process: ControllerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = switch_main(["--config", str(controller_process.config), "--url", controller_process.url, "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)  # exactly one JSON object: nothing else on stdout
    assert code == 0
    assert set(report) >= JSON_FIELDS
    assert report["scenario"] == "seed"
    assert report["controller"] == controller_process.url
    assert report["ok"] is True
    assert report["multiplexed"] is True
    assert report["connections_opened"] == 1
    assert report["tls_handshakes"] == 1
    assert report["alpn"] == ["h2"]
    assert report["failures"] == []
    # as long as the longest interval and shorter than their sum: the pings were in flight together
    assert report["longest_interval_s"] <= report["wall_time_s"] < report["sum_of_intervals_s"]
    assert [set(ping) for ping in report["pings"]] == [PING_FIELDS] * 3
    assert [ping["interval_s"] for ping in report["pings"]] == [0.3, 0.6, 0.9]
    assert {(ping["status"], ping["http_version"], ping["connection"]) for ping in report["pings"]} == {
        (200, "HTTP/2", 1)
    }
    assert sorted(ping["stream_id"] for ping in report["pings"]) == [1, 3, 5]
    assert len({ping["local_port"] for ping in report["pings"]}) == 1
    view = report["controller_view"]
    assert (view["switch"], view["agrees"], view["connections"], view["streams"]) == ("switch-1", True, 1, 3)
    their_id = view["records"][0]["id"]
    assert report["connections"][0]["controller_connection"] == their_id
    assert {ping["controller_connection"] for ping in report["pings"]} == {their_id}
    assert view["records"][0]["peer"] == f"127.0.0.1:{report['pings'][0]['local_port']}"


def test_switch_contrast_in_process(controller_process: ControllerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code = switch_main(
        ["--config", str(controller_process.config), "--url", controller_process.url, "--scenario", "contrast"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1)" in out
    assert "expect connections = 3: ok (3)" in out
    assert "controller saw switch-1: 3 connections, 3 streams, 1 at once; both views agree" in out


def test_switch_with_the_controller_down_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    ensure_certs(tmp_path / "certs", ["127.0.0.1"], ["switch-1"])  # as its controller would have made them
    # A bound socket that is not listening: connecting to it is refused, and no one else can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}"
        code = switch_main(["--config", str(config), "--url", url, "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 1
    assert report["ok"] is False
    assert {ping["error"] for ping in report["pings"]} == {
        f"the controller is down: connection refused (Connect call failed ('127.0.0.1', {url.rsplit(':', 1)[1]}))"
    }
    assert captured.err.startswith("sim_switch: FAILED: 3 of 3 pings failed: the controller is down")
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("module", ["sim_switch", "controller"])
def test_config_errors_exit_2_with_one_line(tmp_path: Path, module: str) -> None:
    config = write_config(tmp_path, pings="[0.3, yes]")
    done = run_module(module, "--config", str(config))
    assert done.returncode == 2
    assert (
        done.stderr == f"{module}: {config}:12: scenarios.seed.pings[1]: must be a finite number >= 0, got True "
        "(a YAML boolean: yes/no/on/off/true/false) (read more: docs/reference/config.md)\n"
    )


def test_unknown_scenario_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert switch_main(["--config", str(write_config(tmp_path)), "--scenario", "nope"]) == 2
    assert "no scenario named 'nope' (known: seed, contrast)" in capsys.readouterr().err


def test_switch_url_must_be_http_or_https(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert switch_main(["--config", str(write_config(tmp_path)), "--url", "ws://127.0.0.1:1"]) == 2
    assert "--url: must be an https:// URL" in capsys.readouterr().err


def test_controller_on_a_taken_port_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = controller_main(["--config", str(write_config(tmp_path)), "--port", str(port)])
    assert code == 1
    assert f"cannot listen on 127.0.0.1 port {port}: Address already in use" in capsys.readouterr().err


def test_controller_certs_command_regenerates_everything(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert controller_main(["certs", "--config", str(config)]) == 0
    first = (tmp_path / "certs" / "ca.pem").read_bytes()
    assert controller_main(["certs", "--config", str(config)]) == 0
    assert (tmp_path / "certs" / "ca.pem").read_bytes() != first
    assert stat.S_IMODE((tmp_path / "certs" / "switch-1.key").stat().st_mode) == 0o600


def test_importing_the_switch_does_not_import_quart_or_hypercorn() -> None:
    code = (
        "import sys, sim_switch.__main__, sim_switch.dial.client, sim_switch.render.report, sim_switch.dial.tls;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('quart', 'hypercorn', 'werkzeug')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_demo_serves_runs_both_scenarios_and_stops(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = run_module("controller", "demo", "--config", str(config), "--port", "0")
    # On a loaded machine a scenario's cross-check may be inconclusive (its switch names the lag): exit 3, said.
    undecided = done.returncode == INCONCLUSIVE_EXIT
    assert done.returncode == 0 or undecided, done.stdout + done.stderr
    assert "MULTIPLEXED: 3 pings as 3 streams on 1 connection (HTTP/2)" in done.stdout
    assert "NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1)" in done.stdout
    assert ("demo: 2 of 2 scenarios passed" in done.stdout) is not undecided
    assert ("; inconclusive on a busy machine (run again): " in done.stdout) is undecided
    assert "made a new CA" in done.stderr  # certificates appeared by themselves
    assert stat.S_IMODE((tmp_path / "certs" / "controller.key").stat().st_mode) == 0o600
    # one HTML report per scenario, beside the config, their paths printed
    reports = [tmp_path / "reports" / "seed.html", tmp_path / "reports" / "contrast.html"]
    assert "reports (open in a browser):\n" + "".join(f"  {path}\n" for path in reports) in done.stdout
    assert 'data-lanes="1" data-pings="3"' in reports[0].read_text(encoding="utf-8")
    assert 'data-lanes="3" data-pings="3"' in reports[1].read_text(encoding="utf-8")


def test_sigterm_lets_the_in_flight_ping_finish(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--verbose") as process, ThreadPoolExecutor(1) as pool:
        context = client_ssl_context(tmp_path / "certs", "switch-1")
        in_flight = pool.submit(ping, f"{process.url}/ping?interval=1", context)
        process.wait_for(r"GET /ping: received")
        process.process.send_signal(signal.SIGTERM)
        process.wait_for(r"SIGTERM: finishing in-flight requests")
        response = in_flight.result(timeout=60)
        assert process.process.wait(timeout=60) == 0
    assert response.status_code == 200
    assert response.json()["interval_s"] == 1.0
    assert any(
        line.endswith("stopped; switch-1: 1 connection, 1 stream, peak 1 at once; sequential (conn #1)")
        for line in process.lines
    )


def ping(url: str, context: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(http2=True, verify=context, trust_env=False) as client:
        return client.get(url)


def test_a_persistent_session_from_the_command_line(tmp_path: Path) -> None:
    session = "  keepalive:\n    persistent: {count: 6, every_s: 0.1, batch: 2, interval_s: 0.05}\n"
    config = write_config(tmp_path, extra=session)
    with ControllerProcess.start(config) as process:
        done = run_module(
            "sim_switch", "--config", str(config), "--url", process.url, "--scenario", "keepalive", "--json"
        )
    report = json.loads(done.stdout)
    assert done.returncode == (INCONCLUSIVE_EXIT if report["inconclusive"] else 0), done.stderr
    assert (report["mode"], report["sent"], report["answered_ok"], report["retried_then_ok"], report["failed"]) == (
        "persistent",
        6,
        6,
        0,
        0,
    )
    assert report["reconnects"] == 0
    assert {(ping["attempts"], ping["outcome"]) for ping in report["pings"]} == {(1, "ok")}
    assert as_on_a_quiet_machine(report["verdict"]).startswith("SESSION OK: 6 pings")


def test_the_sub_command_spellings(controller_process: ControllerProcess, tmp_path: Path) -> None:
    """``run`` is what ``python -m sim_switch`` does without a command; ``certs`` takes its options after it too."""
    done = run_module("sim_switch", "run", "--config", str(controller_process.config), "--url", controller_process.url)
    switch_ran_ok(done)
    assert "MULTIPLEXED: 3 pings" in done.stdout
    config = write_config(tmp_path)
    made = run_module("controller", "certs", "--config", str(config))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "certs" / "ca.pem").exists()
    overview = run_module("controller", "--help")
    assert "{serve,certs,demo,nginx-conf,explain,trials,account}" in overview.stdout


def test_trace_frames_shows_every_frame_either_way(controller_process: ControllerProcess, tmp_path: Path) -> None:
    """``--trace frames``: each frame in the trace as Go's http2debug writes it, as typed events in ``--json``,
    as marks on the page's connection lanes; without it, no frame at all."""
    config, url = str(controller_process.config), controller_process.url
    plain = run_module("sim_switch", "--config", config, "--url", url)
    switch_ran_ok(plain)
    assert " wrote " not in plain.stdout
    assert " read " not in plain.stdout
    shown = run_module("sim_switch", "--config", config, "--url", url, "--trace", "frames")
    switch_ran_ok(shown)
    for line in (
        r"wrote SETTINGS stream=0 len=\d+ HEADER_TABLE_SIZE=4096 ENABLE_PUSH=0 INITIAL_WINDOW_SIZE=1048576",
        r"read SETTINGS stream=0 len=\d+ .*MAX_CONCURRENT_STREAMS=100",
        r"wrote SETTINGS flags=ACK stream=0 len=0",
        r"read SETTINGS flags=ACK stream=0 len=0",
        r"wrote WINDOW_UPDATE stream=0 len=4 incr=\d+",
        r"read PING flags=ACK stream=0 len=8 data=0000000000000001 rtt=[\d.]+ms",
        r"wrote HEADERS flags=END_HEADERS\|END_STREAM stream=5 len=\d+",
        r"read DATA flags=END_STREAM stream=5 len=[1-9]\d*",  # the body ends its stream: one frame, not two
    ):
        assert re.search(line, shown.stdout), line
    page = tmp_path / "frames.html"
    as_json = run_module(
        "sim_switch", "--config", config, "--url", url, "--trace", "frames", "--json", "--html", str(page)
    )
    assert as_json.returncode == 0, as_json.stderr
    trace = json.loads(as_json.stdout)["trace"]
    frames = [event for event in trace if event["kind"] == "frame"]
    kinds = {event["event"] for event in frames}
    assert {"SettingsFrame", "WindowUpdateFrame", "PingFrame", "HeadersFrame", "DataFrame"} <= kinds
    [ack] = [e for e in frames if e["event"] == "PingFrame" and e["ack"] and e["direction"] == "received"]
    assert ack["rtt_s"] > 0
    assert ack["connection"] == 1
    assert {"TlsDone", "HeadersWritten"} <= {event["event"] for event in trace}  # the rest of the trace too
    html = page.read_text()
    assert html.count('class="frame ') == len(frames)
    assert 'class="frame ping received"' in html


def test_trace_frames_is_for_one_switch_not_a_fleet(controller_process: ControllerProcess) -> None:
    fleet = "  many:\n    fleet: {switches: 2, pings: 1, interval_s: 0.05}\n"
    directory = controller_process.config.parent / "fleet-frames"
    directory.mkdir()
    config = write_config(directory, extra=fleet)
    done = run_module("sim_switch", "--config", str(config), "--scenario", "many", "--trace", "frames")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("a one-shot run or a session), not a fleet")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("command", "takes", "not_taken"),
    [
        ("serve", {"--host", "--port", "--admin-port", "--client-certs-optional"}, set()),
        ("demo", {"--host", "--port", "--admin-port", "--scenario"}, {"--client-certs-optional"}),
        ("trials", {"--port", "--admin-port", "--only"}, {"--client-certs-optional"}),
        ("nginx-conf", {"--host", "--port", "--listen"}, {"--admin-port", "--client-certs-optional"}),
        ("explain", {"--url", "--switch", "--since"}, {"--host", "--port", "--admin-port", "--client-certs-optional"}),
        ("certs", set(), {"--host", "--port", "--admin-port", "--client-certs-optional"}),
    ],
)
def test_each_controller_command_offers_only_the_options_it_takes(
    command: str, takes: set[str], not_taken: set[str]
) -> None:
    done = run_module("controller", command, "--help")
    assert done.returncode == 0, done.stderr
    offered = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[\w-]+)", done.stdout))
    assert takes <= offered, offered
    assert not (not_taken & offered), offered
    refused = run_module("controller", command, "--client-certs-optional") if command != "serve" else None
    if refused is not None:
        assert refused.returncode == 2
        assert "unrecognized arguments: --client-certs-optional" in refused.stderr


def test_the_switchs_help_lists_the_configs_scenarios(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="  mine:\n    pings: [1]\n")
    done = run_module("sim_switch", "run", "--help", "--config", str(config))
    assert done.returncode == 0, done.stderr
    unwrapped = "".join(done.stdout.split())  # argparse wraps the path at its hyphens too
    assert "".join(f"a scenario of {config}: seed, contrast, mine (default: seed)".split()) in unwrapped
