"""Debian's nginx in front of a controller, configured by what ``python -m controller nginx-conf --full`` prints:
the report's topology (switch -> nginx -> controller); or, with ``--stream``, as a TCP balancer in front of
controller replicas."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from controller.commands.nginx_conf import STREAM_MODULES, state_dir
from tests.commands import run_module
from tests.servers import ControllerProcess, LineReader
from tests.tools import missing, require

PROXY = "nginx-proxy"  # the CN of nginx's client certificate, which a controller behind it trusts
# A port found free may be taken (by another test's listener) before nginx binds it: another port then, this often.
PORT_TRIES = 3


class Nginx(LineReader):
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        super().__init__(process, "nginx")
        self.port = port

    def listening(self) -> bool:
        """Until it listens (the master binds before it starts workers); False if its port was taken meanwhile."""
        try:
            self.wait_for("start worker process")
        except AssertionError:
            if any("Address already in use" in line for line in self.said()):
                return False
            raise
        return True

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nginx_in_front_of(controller: ControllerProcess) -> Iterator[Nginx]:
    binary = require("nginx")

    def configured(port: int) -> Path:
        printed = run_module(
            *("controller", "nginx-conf", "--full", "--listen", f"127.0.0.1:{port}"),
            *("--config", str(controller.config), "--port", str(controller.port)),
        )
        assert printed.returncode == 0, printed.stderr
        conf = controller.config.parent / f"nginx-{port}.conf"
        conf.write_text(printed.stdout, encoding="utf-8")
        return conf

    with _running(binary, configured) as nginx:
        yield nginx


@contextlib.contextmanager
def nginx_balancing(config: Path, replicas: Sequence[ControllerProcess]) -> Iterator[Nginx]:
    """nginx's stream module spreading connections over ``replicas``, as ``nginx-conf --stream --full`` writes it."""
    binary = require("nginx")
    if not any(path.exists() for path in STREAM_MODULES) and "--with-stream " not in _built_with(binary):
        missing("nginx's stream module")

    def configured(port: int) -> Path:
        printed = run_module(
            *(
                "controller",
                "nginx-conf",
                "--stream",
                "--full",
                "--listen",
                f"127.0.0.1:{port}",
                "--config",
                str(config),
            ),
            *(arg for replica in replicas for arg in ("--replica", f"127.0.0.1:{replica.port}")),
        )
        assert printed.returncode == 0, printed.stderr
        conf = config.parent / f"nginx-stream-{port}.conf"
        conf.write_text(printed.stdout, encoding="utf-8")
        return conf

    with _running(binary, configured) as nginx:
        yield nginx


@contextlib.contextmanager
def _running(binary: str, configured: Callable[[int], Path]) -> Iterator[Nginx]:
    """nginx on the configuration ``configured`` writes for a free port, listening on it, stopped at the end; the
    directory ``--full`` made it in the system's temporary directory (one per listen address) removed with it."""
    for _ in range(PORT_TRIES):
        port = free_port()
        state = state_dir(f"127.0.0.1:{port}")
        made = not state.exists()  # (one that was there is somebody's: left as it is)
        try:
            process = subprocess.Popen(
                [binary, "-c", str(configured(port))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            with LineReader.stopped_at_exit(process):
                nginx = Nginx(process, port)
                if nginx.listening():
                    yield nginx
                    return
        finally:
            if made:
                shutil.rmtree(state, ignore_errors=True)
    raise AssertionError(f"nginx found each of {PORT_TRIES} free ports taken before it could listen on it")


def _built_with(binary: str) -> str:
    """``nginx -V``: how it was built (it says so on stderr), to tell a stream module built in."""
    return subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr + " "
