"""The admin listener's live page (``GET /`` and ``GET /events``), opened in headless Chromium while a real switch
runs a scenario with pings of a few seconds against a real controller: the page shows them in flight, bars
growing, then answered, with no reload."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import Page
from tests.servers import REPO, ControllerProcess, write_config
from tests.switches import switch_client

PINGS = (2, 2.5, 3)  # long enough to be seen in flight, short enough for a test


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    config = write_config(tmp_path, pings=json.dumps(PINGS), controller="  graceful_timeout_s: 60\n")
    with ControllerProcess.start(config) as process:
        yield process


def test_the_page_shows_pings_in_flight_then_answered_without_a_reload(controller: ControllerProcess) -> None:
    with Page.open(f"{controller.admin_url}/") as page:
        assert page.until("document.getElementById('status').className === 'live'")  # following /events
        page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
        switch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sim_switch",
                "--config",
                str(controller.config),
                "--url",
                controller.url,
                "--scenario",
                "seed",
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            in_flight = page.until("""(() => {
                const bars = [...document.querySelectorAll('.stream.in-flight')];
                return bars.length === 3 && bars.map((bar) => ({
                    connection: bar.dataset.connection, stream: bar.dataset.stream, interval: bar.dataset.interval,
                    width: parseFloat(bar.querySelector('.bar').style.width),
                    label: bar.querySelector('.label').textContent}));
            })()""")
            # a bar grows: some bar later is longer than it was (the page's clock, between the server's messages)
            first = in_flight[0]
            selector = f".stream.in-flight[data-stream='{first['stream']}'] .bar"
            assert page.until(f'parseFloat(document.querySelector("{selector}")?.style.width) > {first["width"]}')
            # the pings, answered; the switch's cross-check (/connections, /diagnosis) comes after them
            answered = page.until("""(() => {
                const rows = [...document.querySelectorAll('tr.answered')]
                    .filter((row) => row.cells[3].textContent.startsWith('/ping'));
                return rows.length === 3 && document.querySelectorAll('.stream.in-flight').length === 0
                    && rows.map((row) => ({connection: row.dataset.connection, stream: row.dataset.stream,
                                           cells: [...row.cells].map((cell) => cell.textContent)}));
            })()""")
        finally:
            out, err = switch.communicate(timeout=120)
        assert switch.returncode == 0, out + err
        # once the switch is done, the page's totals come to what the controller's JSON says
        counted = httpx.get(f"{controller.admin_url}/connections", trust_env=False).json()["switches"]["switch-1"]
        connections = f"{counted['connections']} connection{'' if counted['connections'] == 1 else 's'}"
        expected = f"{connections} and {counted['streams']} streams since the start"
        totals = page.until(
            f"(() => {{ const text = document.getElementById('totals').textContent;"
            f" return text.includes({json.dumps(expected)}) && text; }})()"
        )
        assert page.evaluate("window.sameDocument") is True
    # the three pings went as three streams on one connection: the page says so, on the controller's numbers
    assert {bar["connection"] for bar in in_flight} == {answered[0]["connection"]}
    assert sorted(float(bar["interval"]) for bar in in_flight) == list(PINGS)
    assert all(0 <= bar["width"] <= 100 for bar in in_flight)
    assert sorted(row["stream"] for row in answered) == ["1", "2", "3"]
    # named as on the wire, as the switch names them: stream ids 1, 3, 5, the ordinal after each
    assert sorted(row["cells"][2] for row in answered) == ["stream 1 (#1)", "stream 3 (#2)", "stream 5 (#3)"]
    assert all(re.match(r"stream [135] \(#[123]\) · ", bar["label"]) for bar in in_flight), in_flight
    assert all(re.fullmatch(r"answered \d+(\.\d)? s ago", row["cells"][-1]) for row in answered), answered
    assert sorted(row["cells"][3] for row in answered) == [f"/ping?interval={interval}" for interval in PINGS]
    took = sorted(float(re.sub(r" s$", "", row["cells"][4])) for row in answered)
    assert all(t >= interval for t, interval in zip(took, PINGS, strict=True)), took
    assert "0 streams in flight" in totals
    assert counted["streams"] > 3  # the pings, then the cross-check's /connections and /diagnosis


def test_the_event_stream_ends_when_the_controller_stops(controller: ControllerProcess) -> None:
    """An open page must not hold the controller's shutdown for graceful_timeout_s (60 s here)."""
    with httpx.stream("GET", f"{controller.admin_url}/events", trust_env=False, timeout=30) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["totals"]["open_connections"] == 0
        controller.process.send_signal(signal.SIGTERM)
        for _ in lines:  # to its end, cleanly: a stream cut off at the graceful timeout would raise here instead
            pass
    assert controller.process.wait(timeout=30) == 0


def test_a_request_path_cannot_end_the_pages_script(controller: ControllerProcess) -> None:
    """The first snapshot is JSON inside <script>: a path of "</script>" stays data, drawn as text."""
    certs = controller.config.parent / "certs"
    with switch_client(certs, "switch-1") as switch:
        assert switch.get(f"{controller.url}/%3C/script%3E%3Cb%3Ehi").status_code == 404
    with Page.open(f"{controller.admin_url}/") as page:
        paths = page.until("[...document.querySelectorAll('tr.answered')].map((row) => row.cells[3].textContent)")
        assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert paths == ["/</script><b>hi"]
