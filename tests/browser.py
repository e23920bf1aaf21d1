"""Headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it), driven from the command line as a person's
browser would open a page: no network beyond loopback, a profile of its own, nothing from outside."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

# No sandbox (CI runs as root, where Chromium's sandbox will not start), no GPU, and none of the background
# traffic a fresh profile starts (component updates, safe browsing, sync, metrics).
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--no-first-run", "--metrics-recording-only",
    "--disable-features=Translate,MediaRouter,OptimizationHints", "--mute-audio",
)  # fmt: skip


def chromium() -> str:
    binary = shutil.which("chromium")
    assert binary, "headless Chromium is needed for the browser tests (.ci/run installs Debian's chromium)"
    return binary


def dump_dom(url: str, *extra: str, timeout_s: float = 90) -> str:
    """The DOM as Chromium has it once the page has loaded (and run its scripts), serialised."""
    with tempfile.TemporaryDirectory(prefix="dialout-chromium-") as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


class Elements(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def with_class(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.found if name in attrs.get("class", "").split()]

    def by_id(self, id_: str) -> dict[str, str] | None:
        return next((attrs for _, attrs in self.found if attrs.get("id") == id_), None)
