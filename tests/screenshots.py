"""The documentation's pictures, taken by the tests' headless Chromium from a real run: a switch's HTML report (its
waterfall), the admin listener's live page with pings in flight, and a trials scorecard. Nothing is drawn by hand.

``make screenshots`` writes them to docs/images/; ``tests/test_screenshots.py`` takes them into a directory of
its own, so that they are known to come out of today's code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tests.browser import Page
from tests.servers import REPO, ControllerProcess, write_config

WIDTH = 1200  # CSS pixels: as wide as a laptop's browser window
PINGS = "[2, 3.5, 5]"  # in flight long enough for the live page to show them growing
TRIALS_SCENARIO = """\
  trials:
    persistent: {duration_s: 120, every_s: 0.5, batch: 3, interval_s: 1}
    http2: true
    request: {path: "/ping?interval={interval}&n={n}"}
"""
TRIALS = "ping,refused-stream,goaway-graceful,stream-limit,retry-after"
NAMES = ("waterfall.png", "live.png", "trials.png")


def take(directory: Path) -> list[Path]:
    """The three pictures, written to ``directory`` (made if missing); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dialout-screenshots-") as scratch:
        work = Path(scratch)
        config = write_config(work, pings=PINGS, extra=TRIALS_SCENARIO)
        report = work / "seed.html"
        with ControllerProcess.start(config) as controller, Page.open(f"{controller.admin_url}/") as page:
            assert page.until("document.getElementById('status').className === 'live'")
            switch = _switch(config, controller.url, "--html", str(report))
            try:
                assert page.until("document.querySelectorAll('.stream.in-flight').length === 3")
                assert page.until("document.querySelectorAll('tr.answered').length >= 1")
                (directory / "live.png").write_bytes(page.screenshot(WIDTH, 700))
            finally:
                _done(switch)
        with Page.open(report.as_uri()) as page:
            (directory / "waterfall.png").write_bytes(page.screenshot(WIDTH, 900))
        scorecard = work / "trials.html"
        with ControllerProcess.start(config, "trials", "--only", TRIALS, "--html", str(scorecard)) as controller:
            switch = _switch(config, controller.url, "--scenario", "trials")
            try:
                controller.process.wait(timeout=300)
            finally:
                _done(switch)
        with Page.open(scorecard.as_uri()) as page:
            (directory / "trials.png").write_bytes(page.screenshot(WIDTH, 900))
    return [directory / name for name in NAMES]


def _switch(config: Path, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sim_switch", "--config", str(config), "--url", url, *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(switch: subprocess.Popen[str]) -> None:
    """The switch's end: its own (a scenario's last ping), or the trials' GOAWAY."""
    out, err = switch.communicate(timeout=120)
    assert switch.returncode in (0, 1, 3), out[-2000:] + err[-2000:]


if __name__ == "__main__":
    for path in take(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images"):
        print(path)
