"""Real controllers for the tests: in this test's event loop, or as a ``python -m controller`` child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controller.accounts.connections import ConnectionRegistry
from controller.server.serve import Listeners, new_registry, serve, server_ssl_context
from dialout.config import ControllerConfig

# Generous: these bound a wait for something that normally takes milliseconds, on a shared, noisy machine.
STARTUP_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunningController:
    url: str  # https://127.0.0.1:PORT
    port: int
    registry: ConnectionRegistry
    listener: socket.socket
    stop: asyncio.Event  # set it to begin the shutdown
    stopping: asyncio.Event  # set by the server once new streams are refused


@contextlib.asynccontextmanager
async def run_controller(cfg: ControllerConfig, port: int = 0) -> AsyncIterator[RunningController]:
    """Serve the controller on Hypercorn in the running loop. The socket is bound and listening before the
    server task starts, so the first request needs no waiting."""
    sock = socket.create_server(("127.0.0.1", port))
    port = sock.getsockname()[1]
    stop, stopping = asyncio.Event(), asyncio.Event()
    registry = new_registry(cfg)
    task = asyncio.create_task(
        serve(
            cfg,
            server_ssl_context(cfg),
            Listeners([sock]),
            stop.wait,
            registry,
            stopping=stopping,
        )
    )
    try:
        yield RunningController(f"https://127.0.0.1:{port}", port, registry, sock, stop, stopping)
    finally:
        stop.set()
        await task


def cpu_s(pid: int) -> float:
    """Process ``pid``'s user and system time so far, every thread's (not its children's), from /proc (Linux)."""
    # the fields after the command's ")": state is the first, utime the 12th and stime the 13th
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int | str = "self") -> int:
    """The resident set size of process ``pid`` (default: this one), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def faulthandler_env() -> dict[str, str]:
    """This process's environment, with Python's fault handler on: a child that hangs prints its threads' stacks
    when aborted (``LineReader.stopped_at_exit``)."""
    return {**os.environ, "PYTHONFAULTHANDLER": "1"}


class LineReader:
    """A child process whose stderr is read by a thread, line by line, so a test can wait for a line (the port it
    listens on, a request arriving) instead of sleeping."""

    def __init__(self, process: subprocess.Popen[str], name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def said(self) -> list[str]:
        """Every line, once the process has ended and its stderr is read to the end (waited for, within bounds)."""
        self._reader.join(STARTUP_TIMEOUT_S)
        return self.lines

    def wait_for(self, pattern: str, timeout_s: float = STARTUP_TIMEOUT_S) -> re.Match[str]:
        """The first line from now on that matches ``pattern``; fails if the process ends first."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s: {self.lines}") from None
            if line is None:
                raise AssertionError(f"{self.name} exited before printing {pattern!r}: {self.lines}")
            found = regex.search(line)
            if found:
                return found

    def seen(self, pattern: str) -> re.Match[str]:
        """The first line read so far that matches ``pattern`` (a line a wait_for has already passed)."""
        regex = re.compile(pattern)
        found = next((match for line in list(self.lines) if (match := regex.search(line))), None)
        assert found is not None, f"no line matching {pattern!r} yet: {self.lines}"
        return found

    def _read(self) -> None:
        assert self.process.stderr is not None
        try:
            for line in self.process.stderr:
                self.lines.append(line.rstrip("\n"))
                self._queue.put(line)
        except ValueError:  # closed by stopped_at_exit once the process ended, while this thread was still reading
            pass
        finally:
            self._queue.put(None)

    @staticmethod
    @contextlib.contextmanager
    def stopped_at_exit(process: subprocess.Popen[str], said: Callable[[], list[str]] = list) -> Iterator[None]:
        """SIGTERM at the end, and the process's end waited for. One that does not end is aborted: started with
        ``PYTHONFAULTHANDLER`` (``faulthandler_env``), it prints every thread's stack first, and the failure
        shows them with the rest of what ``said`` (its stderr's lines)."""
        try:
            yield
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STARTUP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGABRT)
                process.wait(timeout=STARTUP_TIMEOUT_S)
                lines = "\n".join(said()[-200:])
                raise AssertionError(f"{process.args!r} did not stop within {STARTUP_TIMEOUT_S} s:\n{lines}") from None
            finally:
                assert process.stderr is not None
                if process.poll() is not None:
                    process.stderr.close()


class ControllerProcess(LineReader):
    """``python -m controller`` as a child, on port 0, its admin listener on any free port too (a test that
    restarts it on the port it had must not find the next port, its default admin port, taken)."""

    def __init__(self, process: subprocess.Popen[str], config: Path) -> None:
        super().__init__(process, "controller")
        self.config = config
        match = self.wait_for(r"listening on https://(\S+):(\d+)")
        self.port = int(match.group(2))
        self.url = f"https://127.0.0.1:{self.port}"
        # the admin listener, on by default, on a port of its own (any free one, as the controller's is)
        self.admin_url = self.wait_for(r"admin page, /connections, /diagnosis and /metrics: (http://\S+)/").group(1)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        config: Path,
        *args: str,
        preexec_fn: Callable[[], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[ControllerProcess]:
        """``preexec_fn``: run in the child before Python starts (a resource limit to begin with); ``env``: set in
        its environment. ``serve`` runs in one process unless ``args`` say ``--workers``: most tests look at one
        process's doings (its log, its live page, its limits); tests/test_workers.py puts several to work."""
        if "--workers" not in args and not {"trials", "demo"} & set(args):
            args = (*args, "--workers", "1")
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "--config", str(config), "--port", "0", "--admin-port", "0", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
            env={**faulthandler_env(), **(env or {})},
        )
        started: list[ControllerProcess] = []
        with cls.stopped_at_exit(process, lambda: started[0].said() if started else []):
            started.append(cls(process, config))
            yield started[0]


def write_config(
    directory: Path,
    pings: str = "[0.3, 0.6, 0.9]",
    extra: str = "",
    controller: str = "",
    switch: str = "",
    switch_id: str = "switch-1",
) -> Path:
    """A config like the repo's, with short intervals and its certificates in ``directory/certs``. ``extra`` is
    more scenarios, ``controller`` and ``switch`` more lines of those sections (indented two spaces)."""
    path = directory / "config.yaml"
    path.write_text(
        f"""\
controller:
  host: 127.0.0.1
  port: 0
  certs_dir: certs
{controller}switch:
  id: {switch_id}
  controller_url: https://127.0.0.1:8443
  certs_dir: certs
  request_timeout_s: 30
{switch}scenarios:
  seed:
    pings: {pings}
    http2: true
    expect: {{connections: 1, http_version: HTTP/2}}
  contrast:
    pings: {pings}
    http2: false
    expect: {{connections: 3, http_version: HTTP/1.1}}
{extra}""",
        encoding="utf-8",
    )
    return path


def metrics_of(admin_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` of a controller's admin listener: each sample's value by its name and labels."""
    response = httpx.get(f"{admin_url}/metrics", trust_env=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
