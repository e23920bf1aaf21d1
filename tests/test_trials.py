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

import pytest

from controller.trials.plan import PLAN
from sim_switch.dial.tls import client_ssl_context
from tests.attacks import RawH2Client
from tests.commands import run_module
from tests.servers import REPO, ControllerProcess, write_config

TRIALS_SCENARIO = """\
  trials:
    persistent: {duration_s: 150, every_s: 0.5, batch: 3, interval_s: 1}
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
        ("ping,silent", "--only: 'silent' is in the plan but not built yet (see --list)"),
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


class NeverRetries:
    """A client that sends a new request every 0.2 s on one connection, each with a target of its own, and never
    sends one again: the client that treats REFUSED_STREAM as an error (issue 21's "never retries")."""

    def __init__(self, peer: RawH2Client) -> None:
        self.peer = peer
        self.sent = 0

    async def run(self) -> None:
        reading = asyncio.create_task(self.peer.keep_reading())
        try:
            while not reading.done():
                self.sent += 1
                self.peer.request(f"/ping?interval=0.{self.sent:04d}")
                await asyncio.wait([reading], timeout=0.2)  # its own pace, as a loop of a real client has
        finally:
            reading.cancel()


@contextlib.asynccontextmanager
async def bad_client(port: int, certs: Path) -> AsyncIterator[NeverRetries]:
    peer = await RawH2Client.connect(port, client_ssl_context(certs, "switch-1"))
    client = NeverRetries(peer)
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await peer.close()


async def test_a_client_that_never_retries_a_refused_stream_fails_that_trial(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    report_path = tmp_path / "trials.json"
    with ControllerProcess.start(config, "trials", "--only", "refused-stream", "--json", str(report_path)) as trials:
        async with bad_client(trials.port, tmp_path / "certs"):
            code = await asyncio.to_thread(trials.process.wait, 60)
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    [trial] = report["trials"]
    assert (trial["name"], trial["verdict"]) == ("refused-stream", "fail")
    assert trial["sentence"].startswith("never sent again: a REFUSED_STREAM request was not processed")
    assert code == 1
