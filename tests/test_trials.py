"""``python -m controller trials`` (issue 21): the controller puts a client through what real controllers do to it,
and scores it. The shipped switch (a real ``python -m sim_switch`` process) passes the plan; clients shaped like real
bugs fail the trial that catches them, with the sentence that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import h2.exceptions
import pytest

from controller.trials.plan import PLAN
from sim_switch.dial.tls import client_ssl_context
from tests.attacks import RawH2Client
from tests.commands import run_module
from tests.servers import REPO, ControllerProcess, write_config

TRIALS_SCENARIO = """\
  trials:
    persistent: {duration_s: 240, every_s: 0.5, batch: 3, interval_s: 1}
    http2: true
    request: {path: "/ping?interval={interval}&n={n}"}
"""


def test_the_plan_is_listed_with_what_each_trial_does_and_how_long(tmp_path: Path) -> None:
    done = run_module("controller", "trials", "--list", "--config", str(write_config(tmp_path)))
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()[:-1]]
    assert names[: len(PLAN)] == [spec.name.value for spec in PLAN]
    assert done.stdout.splitlines()[-1].startswith(f"the plan: {len(PLAN)} trials, at most ")


@pytest.mark.parametrize(
    ("only", "error"),
    [
        ("nonsense", "--only: no trial named 'nonsense'"),
        ("ping,h1-only", "--only: 'h1-only' is in the plan but not built yet (see --list)"),
    ],
)
def test_a_trial_that_does_not_exist_is_one_line_and_exit_2(tmp_path: Path, only: str, error: str) -> None:
    done = run_module("controller", "trials", "--only", only, "--config", str(write_config(tmp_path)))
    assert done.returncode == 2
    assert error in done.stderr.strip(), done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@contextlib.contextmanager
def switch_process(config: Path, url: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sim_switch", "--config", str(config), "--url", url, "--scenario", "trials"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def test_the_shipped_switch_passes_every_trial(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=TRIALS_SCENARIO)
    report_path = tmp_path / "trials.json"
    with (
        ControllerProcess.start(config, "trials", "--json", str(report_path)) as trials,
        switch_process(config, trials.url),
    ):
        code = trials.process.wait(timeout=sum(spec.deadline_s for spec in PLAN) + 60)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    verdicts = {trial["name"]: (trial["verdict"], trial["sentence"]) for trial in report["trials"]}
    assert list(verdicts) == [spec.name.value for spec in PLAN]
    failed = {name: sentence for name, (verdict, sentence) in verdicts.items() if verdict == "fail"}
    assert not failed, failed
    assert code == 0
    assert report["switch"] == "switch-1"
    assert verdicts["retry-after"][0] == "note"  # the shipped switch takes a 503 as an answer, and says so
    for trial in report["trials"]:
        assert trial["ended_s"] >= trial["started_s"]
        assert trial["steps"][0]["by"] == "controller"


class BadClient:
    """A client that sends a new request every 0.2 s, 3 at a time, on one connection, each with a target of its
    own (``/ping?interval=1&n=N``), and never sends one again, never dials another connection: the client that
    treats REFUSED_STREAM as an error. With ``ignore_goaway`` it also goes on after a GOAWAY; with
    ``ignore_limits``, past the controller's stream limit (issue 21's failing shapes, as real bugs have them)."""

    def __init__(self, peer: RawH2Client, ignore_goaway: bool, ignore_limits: bool) -> None:
        self.peer = peer
        self.sent = 0
        self._flags = {"ignore_goaway": ignore_goaway, "ignore_limits": ignore_limits}

    async def run(self) -> None:
        reading = asyncio.create_task(self.peer.keep_reading(**self._flags))
        try:
            await self._send(reading)
        except h2.exceptions.ProtocolError:
            pass  # the controller takes no more streams (it is shutting down, its trials over): so be it
        finally:
            reading.cancel()

    async def _send(self, reading: asyncio.Task[None]) -> None:
        while not reading.done():
            for _ in range(3):
                self.sent += 1
                self.peer.request(f"/ping?interval=1&n={self.sent}")
            await asyncio.wait([reading], timeout=0.2)  # its own pace, as a loop of a real client has


@contextlib.asynccontextmanager
async def bad_client(
    port: int, certs: Path, *, ignore_goaway: bool = False, ignore_limits: bool = False
) -> AsyncIterator[BadClient]:
    peer = await RawH2Client.connect(port, client_ssl_context(certs, "switch-1"))
    client = BadClient(peer, ignore_goaway, ignore_limits)
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await peer.close()


@pytest.mark.parametrize(
    ("trial", "flags", "sentence"),
    [
        ("refused-stream", {}, "never sent again: a REFUSED_STREAM request was not processed"),
        ("goaway-graceful", {"ignore_goaway": True}, "request(s) on the connection after its GOAWAY"),
        ("stream-limit", {"ignore_limits": True}, "after the client ACKed the limit of 1: it opened more streams"),
    ],
)
async def test_a_client_shaped_like_a_real_bug_fails_the_trial_that_catches_it(
    tmp_path: Path, trial: str, flags: dict[str, bool], sentence: str
) -> None:
    config = write_config(tmp_path)
    report_path = tmp_path / "trials.json"
    with ControllerProcess.start(config, "trials", "--only", trial, "--json", str(report_path)) as trials:
        async with bad_client(trials.port, tmp_path / "certs", **flags):
            code = await asyncio.to_thread(trials.process.wait, 60)
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    [found] = report["trials"]
    assert (found["name"], found["verdict"]) == (trial, "fail")
    assert sentence in found["sentence"], found["sentence"]
    assert found["steps"][0]["by"] == "controller"
    assert code == 1
