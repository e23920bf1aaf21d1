"""Headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it), driven from the command line as a person's
browser would open a page: no network beyond loopback, a profile of its own, nothing from outside."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

from tests.tools import require

# No sandbox (CI runs as root, where Chromium's sandbox will not start), no GPU, and none of the background
# traffic a fresh profile starts (component updates, safe browsing, sync, metrics).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--metrics-recording-only",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--mute-audio",
)


def chromium() -> str:
    return require("chromium")


def dump_dom(url: str, *extra: str, timeout_s: float = 90) -> str:
    """The DOM as Chromium has it once the page has loaded (and run its scripts), serialised."""
    with tempfile.TemporaryDirectory(prefix="dialout-chromium-", ignore_cleanup_errors=True) as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
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


class Page:
    """One page in a headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands on the browser's fd 3, answers and events on its fd 4, each a JSON message ended by a NUL byte), the
    way Puppeteer drives it, with no driver to install. For a page that changes by itself (the admin listener's
    live page), where ``--dump-dom`` sees only its first state."""

    def __init__(self, process: subprocess.Popen[bytes], commands: int, answers: int) -> None:
        self._process = process
        self._commands = commands
        self._answers = answers
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        self._events: list[str] = []  # the methods of events seen, in order

    @classmethod
    @contextlib.contextmanager
    def open(cls, url: str) -> Iterator[Page]:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # The browser's ends go to fds 3 and 4 by bash's redirections (dash's take one digit only), from numbers
        # above any they could clash with (dup2 onto 3 while 3 is the other end would lose it).
        high_r, high_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        # Chromium's helpers (renderers, crash handler) may still be writing to the profile when it is removed.
        with tempfile.TemporaryDirectory(prefix="dialout-chromium-", ignore_cleanup_errors=True) as profile:
            process = subprocess.Popen(
                [
                    "/bin/bash",
                    "-c",
                    f'exec "$0" "$@" 3<&{high_r} 4>&{high_w} {high_r}<&- {high_w}>&-',
                    chromium(),
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    "--remote-debugging-pipe",
                    "about:blank",
                ],
                pass_fds=(high_r, high_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its helpers in its group, to end them all
            )
            for fd in (to_browser_r, from_browser_w, high_r, high_w):  # the browser's ends are its own now
                os.close(fd)
            page = cls(process, to_browser_w, from_browser_r)
            try:
                target = page.call("Target.createTarget", url="about:blank")["targetId"]
                page._session = page.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
                page.call("Page.enable")
                page.call("Page.bringToFront")  # a page in the background gets no animation frames
                page.call("Page.navigate", url=url)
                page.event("Page.loadEventFired")
                yield page
            finally:
                with contextlib.suppress(OSError, AssertionError):
                    page._session = None
                    page.call("Browser.close", timeout_s=10)
                os.close(to_browser_w)
                os.close(from_browser_r)
                try:
                    process.wait(timeout=30)  # Browser.close answers first, then the browser shuts down
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)  # whatever of it is left
                    process.wait(timeout=30)

    def call(self, method: str, timeout_s: float = 60, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and return its result; events on the way are noted."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._read(deadline, method)
            if "method" in answer:
                self._events.append(answer["method"])
            elif answer.get("id") == self._next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                result: dict[str, Any] = answer["result"]
                return result

    def event(self, method: str, timeout_s: float = 60) -> None:
        """Wait for an event (``Page.loadEventFired``), or return if one came since the last wait for it."""
        deadline = time.monotonic() + timeout_s
        while method not in self._events:
            answer = self._read(deadline, method)
            if "method" in answer:
                self._events.append(answer["method"])
        self._events.remove(method)

    def evaluate(self, expression: str, timeout_s: float = 60) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate", timeout_s=timeout_s, expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def until(self, condition: str, timeout_s: float = 60) -> Any:
        """The first truthy value of ``condition`` (a JavaScript expression), checked now and whenever the page's
        DOM changes: the page says when, nothing polls."""
        watch = f"""new Promise((resolve) => {{
            const check = () => {{
                let value;
                try {{ value = ({condition}); }} catch (error) {{ value = undefined; }}
                if (value) {{ observer.disconnect(); resolve(value); }}
            }};
            const observer = new MutationObserver(check);
            observer.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
            check();
        }})"""
        return self.evaluate(watch, timeout_s=timeout_s)

    def screenshot(self, width: int, height: int | None = None) -> bytes:
        """The page as a PNG, ``width`` CSS pixels wide: ``height`` of it, or all of it."""
        full = self.evaluate("document.documentElement.scrollHeight")
        height = min(height or full, full)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        return base64.b64decode(shot["data"])

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._answers], [], [], max(0.0, left))
            assert ready, f"Chromium did not answer {waiting_for} in time"
            chunk = os.read(self._answers, 1 << 16)
            assert chunk, f"Chromium exited (code {self._process.poll()}) before answering {waiting_for}"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        answer: dict[str, Any] = json.loads(message)
        return answer
