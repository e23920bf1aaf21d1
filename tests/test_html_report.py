"""``--html FILE``: real runs against a real controller, and the report they write opened in headless Chromium:
as many lanes as the run opened connections, as many bars as pings."""

from __future__ import annotations

import json
from pathlib import Path

from tests.browser import Elements, Page, dump_dom
from tests.commands import run_module
from tests.servers import ControllerProcess, write_config

SESSION = """\
  session:
    persistent: {count: 4, every_s: 0.1, batch: 2, interval_s: 0.05}
  small-fleet:
    fleet: {switches: 3, pings: 2, interval_s: 0.1}
"""


def run_with_report(process: ControllerProcess, scenario: str, report: Path) -> dict[str, object]:
    done = run_module(
        "sim_switch",
        "--config",
        str(process.config),
        "--url",
        process.url,
        "--scenario",
        scenario,
        "--json",
        "--html",
        str(report),
    )
    assert done.returncode == 0, done.stderr
    assert f"sim_switch: HTML report: {report}" in done.stderr
    return dict(json.loads(done.stdout))


def rendered(report: Path) -> Elements:
    return Elements(dump_dom(report.as_uri()))


def test_the_seed_report_in_a_browser(controller_process: ControllerProcess, tmp_path: Path) -> None:
    report = tmp_path / "seed.html"
    run = run_with_report(controller_process, "seed", report)
    page = rendered(report)
    lanes, bars = page.with_class("lane"), page.with_class("ping")
    assert len(lanes) == run["connections_opened"] == 1
    assert len(bars) == len(run["pings"]) == 3  # type: ignore[arg-type]
    assert {bar["data-ping"] for bar in bars} == {"1", "2", "3"}
    assert all(bar["class"] == "ping ok" for bar in bars)
    verdict = "".join(page.text)
    assert str(run["verdict"]) in verdict
    # each bar's tooltip is its trace: the connection it reused or opened, and its answer
    assert "first response byte: 200 HTTP/2 on connection #1 stream 1" in verdict
    assert page.with_class("agree")
    assert not page.with_class("disagree")


def test_the_contrast_report_in_a_browser(controller_process: ControllerProcess, tmp_path: Path) -> None:
    report = tmp_path / "contrast.html"
    run = run_with_report(controller_process, "contrast", report)
    page = rendered(report)
    lanes = page.with_class("lane")
    assert len(lanes) == run["connections_opened"] == 3
    assert len(page.with_class("ping")) == 3
    # every lane names its connection on both ends, and HTTP/1.1
    labels = "".join(page.text)
    for number in (1, 2, 3):
        assert f"conn #{number} · controller #" in labels
    assert labels.count("http/1.1 · TLSv1.3 · 1 ping") == 3


def test_not_multiplexed_as_expected_is_coloured_apart_from_the_runs_success(
    controller_process: ControllerProcess, tmp_path: Path
) -> None:
    """What the pings showed (not multiplexed: amber) and whether the run met its expectations (yes: green) are
    two things, drawn in two colours, as a person sees them in the browser."""
    report = tmp_path / "contrast.html"
    run = run_with_report(controller_process, "contrast", report)
    with Page.open(report.as_uri()) as page:
        shown = page.evaluate("document.querySelector('#verdict .shown').textContent")
        result = page.evaluate("document.querySelector('#verdict .result').textContent")
        colours = page.evaluate(
            "['.shown', '.result'].map(s => getComputedStyle(document.querySelector('#verdict ' + s)).backgroundColor)"
        )
    assert shown == run["verdict"]
    assert str(shown).startswith("NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1)")
    assert result == "as expected (3 connections, HTTP/1.1)"
    assert colours == ["rgb(254, 247, 224)", "rgb(230, 244, 234)"]  # amber, green


def test_a_run_that_fails_on_its_expectations_says_why_last(tmp_path: Path) -> None:
    """Multiplexed, but expected on 3 connections: the summary's last line and the report say why it failed."""
    config = write_config(tmp_path, extra="  wrong:\n    pings: [0.1, 0.2]\n    expect: {connections: 3}\n")
    report = tmp_path / "wrong.html"
    with ControllerProcess.start(config) as process:
        done = run_module(
            "sim_switch", "--config", str(config), "--url", process.url, "--scenario", "wrong", "--html", str(report)
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "\nMULTIPLEXED: 2 pings as 2 streams on 1 connection (HTTP/2)" in done.stdout
    assert done.stdout.splitlines()[-1] == "FAILED: expected 3 connections, opened 1"
    page = Elements(report.read_text(encoding="utf-8"))
    assert [element["class"] for element in page.with_class("shown") + page.with_class("result")] == [
        "shown good",
        "result bad",
    ]


def test_a_session_and_a_fleet_report(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=SESSION, controller="  switches: [switch-1, 'fleet-*']\n")
    with ControllerProcess.start(config) as process:
        session = run_with_report(process, "session", tmp_path / "session.html")
        run_with_report(process, "small-fleet", tmp_path / "fleet.html")
    page = Elements((tmp_path / "session.html").read_text(encoding="utf-8"))
    assert len(page.with_class("ping")) == session["sent"] == 4
    assert page.with_class("session")  # the band layer a session gets (no link went down here)
    fleet = Elements((tmp_path / "fleet.html").read_text(encoding="utf-8"))
    assert {"histogram", "latency"} <= set(fleet.with_class("histogram")[0]["class"].split())
    assert fleet.with_class("per-switch")
    assert "FLEET OK: 3 switches x 2 pings" in "".join(fleet.text)
    # Each side's CPU as the summary says it, the controller asked as the config's own switch.
    assert len(fleet.with_class("cpu")) in (1, 2)  # and the bottleneck's line, if a side was bound
    [cpu] = [text for text in fleet.text if text.startswith("CPU (of one core): switch side ")]
    assert f", controller {process.url} at " in cpu


def test_a_file_that_is_not_a_report_is_never_overwritten(
    controller_process: ControllerProcess, tmp_path: Path
) -> None:
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>", encoding="utf-8")
    done = run_module(
        "sim_switch", "--config", str(controller_process.config), "--url", controller_process.url, "--html", str(mine)
    )
    assert done.returncode == 2
    assert (
        done.stderr == f"sim_switch: {mine}: exists and is not a dialout report; not overwriting it (choose "
        "another name) (read more: docs/reading-a-run.md)\n"
    )
    assert done.stdout == ""  # refused before any ping went out
    assert mine.read_text(encoding="utf-8") == "<p>my notes</p>"
    # our own report from an earlier run is replaced
    report = tmp_path / "again.html"
    run_with_report(controller_process, "seed", report)
    first = report.read_text(encoding="utf-8")
    run_with_report(controller_process, "seed", report)
    assert report.read_text(encoding="utf-8") != first
