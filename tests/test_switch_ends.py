"""A switch that ends cleanly whatever its controller does (issue 29): down at the start, gone mid-run, gone just
as the switch asks what it saw, or done with its trials. Each ends with its summary and one last line, exit 1 (or
0 when the controller ended the trials), never exit 70, and a link that stays down is a line every few seconds,
not a line per failed dial.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.server.serve import server_ssl_context
from dialout.command_line import BUG_EXIT
from dialout.config import ControllerConfig, OneShot, Scenario
from dialout.pki import ensure_certs
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.failures import FailureKind
from sim_switch.model.verdict import INCONCLUSIVE_EXIT
from sim_switch.render.repeats import EVERY_S
from tests.commands import run_module
from tests.h2_peer import DrivenConnection, DrivenPeer, driven_peer
from tests.servers import REPO, ControllerProcess, LineReader, write_config
from tests.switches import INCONCLUSIVE, as_on_a_quiet_machine, one_shot

GIVE_UP_S = 2
SESSION = """\
  keepalive:
    persistent: {duration_s: 20, every_s: 0.5, batch: 2, interval_s: 0.2}
    http2: true
  trials:
    persistent: {duration_s: 300, every_s: 0.5, batch: 3, interval_s: 1}
    http2: true
    request: {path: "/ping?interval={interval}&n={n}"}
"""
QUICK_GIVE_UP = f"  reconnect: {{give_up_after_s: {GIVE_UP_S}, max_s: 0.5}}\n"

pytestmark = pytest.mark.timing  # bounds on how long a run takes: run loaded too


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound, never listening, so that no other
    process can take it (a port only free a moment before was once taken by another test's controller)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def ends_cleanly(done: subprocess.CompletedProcess[str] | tuple[int, str, str], code: int = 1) -> list[str]:
    """The run's stdout lines, once it is known to have ended with ``code``, no traceback and no bug line."""
    returncode, stdout, stderr = done if isinstance(done, tuple) else (done.returncode, done.stdout, done.stderr)
    assert returncode == code, stdout + stderr
    assert returncode != BUG_EXIT
    assert "Traceback" not in stderr
    assert "unexpected error" not in stderr
    return stdout.splitlines()


def test_a_session_whose_controller_is_down_from_the_start_ends_in_its_give_up_time(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=SESSION, switch=QUICK_GIVE_UP)
    ensure_certs(tmp_path / "certs", ["127.0.0.1"], ["switch-1"])  # as the controller would have made them
    with refused_port() as port:
        url = f"https://127.0.0.1:{port}"
        lines = ends_cleanly(run_module("sim_switch", "--config", str(config), "--url", url, "--scenario", "keepalive"))
    assert lines[-1].startswith("SESSION FAILED: ")
    assert lines[-1].endswith(
        f"the controller is down: connection refused (Connect call failed ('127.0.0.1', {url.rsplit(':', 1)[1]}))"
    )
    [gave_up] = [line for line in lines if "giving up: the link has been down" in line]
    assert f"(switch.reconnect.give_up_after_s: {GIVE_UP_S} s)" in gave_up
    # the first failure is said, the rest held back: no line per dial
    assert sum("failed: the controller is down" in line for line in lines) == 1
    assert not any("TCP connect start" in line for line in lines[3:])
    # no more pings after the give-up: far fewer than the 80 the schedule has
    assert "pings: " in "\n".join(lines)


def test_a_session_whose_controller_goes_away_ends_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=SESSION, switch=QUICK_GIVE_UP)
    with ControllerProcess.start(config) as controller:
        switch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sim_switch",
                "--config",
                str(config),
                "--url",
                controller.url,
                "--scenario",
                "keepalive",
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with LineReader.stopped_at_exit(switch):
            controller.wait_for(r"switch-1 conn #1 stream \d+ .* -> 200")  # the link is up, pings answered
            controller.process.send_signal(signal.SIGKILL)  # gone: no GOAWAY, no FIN from a graceful close
            stdout, stderr = switch.communicate(timeout=120)
            lines = ends_cleanly((switch.returncode, stdout, stderr))
    said = "\n".join(lines)
    assert "link down: " in said
    assert "giving up: the link has been down" in said, said
    assert lines[-1].startswith("SESSION FAILED: "), said
    held = [line for line in lines if "link still down" in line]
    assert len(held) <= 1 + GIVE_UP_S / EVERY_S  # a line every EVERY_S at most, and the give-up's own
    # the question of what the controller saw is not asked of a controller that is gone (it might never answer)
    assert "asking the controller what it saw" not in said


async def test_a_controller_gone_when_asked_what_it_saw_is_said_not_raised(certs_dir: Path) -> None:
    """The ping is answered, then the controller closes the connection and stops listening: the switch's question
    (GET /connections) dials and is refused. The view says so; nothing of httpcore's escapes."""

    async def drive(connection: DrivenConnection) -> None:
        ping = await connection.request()
        connection.answer(ping.stream_id)
        peers[0].stop_listening()
        connection.goaway_and_close(last_stream_id=ping.stream_id)

    context = server_ssl_context(ControllerConfig(certs_dir=certs_dir))
    peers: list[DrivenPeer] = []
    async with driven_peer(context, drive) as peer:
        peers.append(peer)
        result = await one_shot(
            Scenario("one", OneShot((0.0,))), peer.url, client_ssl_context(certs_dir, "switch-1"), timeout_s=10.0
        )
    assert [ping.ok for ping in result.pings] == [True]
    view = result.controller_view
    assert view is not None
    assert view.error is not None
    assert view.error.kind is FailureKind.DOWN


def test_a_trials_session_ends_when_the_controller_says_the_trials_are_over(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=SESSION)
    trials = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "trials",
            "--config",
            str(config),
            "--port",
            "0",
            "--admin-port",
            "0",
            "--only",
            "ping",
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    controller = LineReader(trials, "controller trials")
    with LineReader.stopped_at_exit(trials):
        port = controller.wait_for(r"listening on https://\S+:(\d+)").group(1)
        done = run_module(
            "sim_switch", "--config", str(config), "--url", f"https://127.0.0.1:{port}", "--scenario", "trials"
        )
        trials.wait(timeout=60)
    said_last = done.stdout.splitlines()[-1:]
    inconclusive = said_last != [] and said_last[0].startswith(INCONCLUSIVE)  # a loaded machine's (tests/switches.py)
    lines = ends_cleanly(done, code=INCONCLUSIVE_EXIT if inconclusive else 0)
    [said] = [line for line in lines if "the session ends" in line]
    assert said.endswith(
        "the controller said 'dialout: the trials are over': the session ends (no more pings, none waiting sent)"
    )
    assert as_on_a_quiet_machine(lines[-1]).startswith("SESSION OK: ")
