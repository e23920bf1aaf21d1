"""A throwaway PostgreSQL cluster for the tests that keep the account there: made with ``initdb`` in a temporary
directory, served by ``pg_ctl`` on loopback (a free port, no Unix socket), trusting local connections, removed at
the end. Debian's ``postgresql`` package brings the programs (in /usr/lib/postgresql/VERSION/bin, off PATH);
``initdb`` refuses to run as root, so as root the cluster is the ``postgres`` user's, as that package makes it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.tools import require

START_TIMEOUT_S = 60
# A port found free may be taken (by another test's listener) before the server binds it: another port then.
PORT_TRIES = 3


def _program(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    return found or require(name)  # skips (or fails in CI) with the package that brings it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A running cluster: its URL (``postgresql://postgres@127.0.0.1:PORT/postgres``)."""
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    directory = Path(tempfile.mkdtemp(prefix="dialout-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(directory, "postgres")
    data = directory / "data"
    log = directory / "log"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True, timeout=START_TIMEOUT_S)

    try:
        run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        port = _started(run, pg_ctl, data, log)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _started(run: Callable[..., None], pg_ctl: str, data: Path, log: Path) -> int:
    """The cluster in ``data`` started on a free port: that port."""
    for _ in range(PORT_TRIES):
        port = _free_port()
        options = f"-p {port} -k '' -c listen_addresses=127.0.0.1 -c fsync=off"  # no Unix socket; throwaway data
        log.unlink(missing_ok=True)  # (this try's alone)
        try:
            run(pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        except subprocess.CalledProcessError:
            if "Address already in use" not in log.read_text(errors="replace"):
                raise
            continue
        return port
    raise AssertionError(f"PostgreSQL found each of {PORT_TRIES} free ports taken before it could listen on it")
