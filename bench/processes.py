"""The bench's server processes: start one and learn where it listens, and read its memory and CPU time from /proc
(Linux)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import cpu_s, rss_kib

__all__ = ["cpu_s", "rss_kib", "server", "workers_cpu_s"]

REPO = Path(__file__).resolve().parent.parent


def workers_cpu_s(pid: int) -> float:
    """The user and system time so far of process ``pid``'s children (a controller's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(cpu_s(int(child)) for child in children)


@contextmanager
def server(command: list[str]) -> Iterator[tuple[int, int]]:
    """Start a server (from the repository's root) that prints 'listening on https://127.0.0.1:PORT' on stderr;
    yield (pid, port), and stop it at the end."""
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    port = 0
    for line in process.stderr:
        if "listening on https://" in line:
            port = int(line.rsplit(":", 1)[1])
            break
    # Keep reading: a server whose stderr pipe fills up blocks on its next log line, shutdown included.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    try:
        if not port:
            raise RuntimeError(f"{command[2]} exited before listening")
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(timeout=60)
        process.stderr.close()
