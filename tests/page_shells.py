"""A documentation page's shell blocks, run as a user would (tests/test_your_own_client.py,
tests/test_getting_started.py): "shell 1" a long-running command left running until a line says it is ready,
"shell 2" a command run to its end, both by bash from a directory laid out as a checkout is."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import LineReader

RUN_S = 180  # the longest a block may take: a loop that must end when the trials end


def blocks(page: Path, titles: str) -> list[tuple[str, str]]:
    """``page``'s ``sh`` blocks whose title matches ``titles`` (a pattern), in order: (title, text)."""
    block = re.compile(rf'^```sh title="({titles})"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
    return [(title, text) for title, text in block.findall(page.read_text(encoding="utf-8"))]


def free_pair() -> int:
    """A loopback port free, with the next one free too (the admin listener's, by default)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no two free loopback ports in a row")


def environment(directory: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PORT": str(port),
        "GOCACHE": str(directory / "go-cache"),  # Go's own build cache, not the user's
        "GOPATH": str(directory / "go-path"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }


def shell_2(
    text: str, directory: Path, env: dict[str, str], codes: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", text], cwd=directory, env=env, capture_output=True, text=True, timeout=RUN_S, check=False
    )
    assert done.returncode in codes, f"{text}\n{done.stdout}\n{done.stderr}"
    return done


@contextmanager
def shell_1(text: str, directory: Path, env: dict[str, str], ready: str) -> Iterator[LineReader]:
    """The controller as the block starts it, once it has said ``ready``; Ctrl-C (SIGINT) at the end, if it still
    runs. Its stdout (the trials' progress and scorecard) goes with its log, to be read in order."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec 1>&2\n{text}"],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    reader = LineReader(process, "shell 1")
    try:
        reader.wait_for(ready)
        yield reader
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        assert process.stderr is not None
        process.stderr.close()
