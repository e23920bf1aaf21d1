"""docs/your-own-client.md, followed as written (issue 29): each of its shell blocks run by bash, in order, from a
directory laid out as a checkout is (the venv, tests/go and config.yaml; never the checkout itself, whose certs/
stay untouched), with only ``PORT`` chosen for it. Blocks titled "shell 1" are the controller, left running; those
titled "shell 2" run to their end, and must succeed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from controller.commands.trials import NOT_EXERCISED_EXIT
from tests.page_shells import RUN_S, blocks, environment, free_pair, shell_1, shell_2
from tests.servers import REPO
from tests.tools import require

PAGE = REPO / "docs" / "your-own-client.md"


@pytest.fixture
def checkout_like(tmp_path: Path) -> Path:
    """A directory the page's relative paths work from: .venv and tests/ as the checkout's, config.yaml a copy."""
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "tests").symlink_to(REPO / "tests")
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def test_the_page_for_your_own_client_as_written(checkout_like: Path) -> None:
    require("curl")
    require("go")
    serve, curl_once, go_once, explain, admin, trials, curl_loop, go_loop = blocks(PAGE, "shell [12]")
    assert [serve[0], trials[0]] == ["shell 1", "shell 1"]
    port = free_pair()
    env = environment(checkout_like, port)
    admin_url = f"http://127.0.0.1:{port + 1}"
    with shell_1(serve[1], checkout_like, env, ready=r"admin page, /connections, /diagnosis and /metrics") as ctl:
        assert ctl.seen(rf"listening on https://\S+:{port}")
        shell_2(curl_once[1], checkout_like, env)
        shell_2(go_once[1], checkout_like, env)
        # 1: Go's client races dials for pings started together (the report's own bug), as the page says it may
        said = shell_2(explain[1], checkout_like, env, codes=(0, 1, 3)).stdout
        assert said.startswith(f"the controller at {admin_url} (--url) says:\n")
        assert "switch-1: " in said
        # curl's three pings on one connection (numbered by whichever worker took it: #1, or #1025 on the second)
        assert re.search(r"good    multiplexed: conn #\d+ carried 3 requests", said), said
        shell_2(admin[1], checkout_like, env)
    diagnosis = json.loads((checkout_like / "diagnosis.json").read_text(encoding="utf-8"))
    assert [found["switch"] for found in diagnosis["switches"]] == ["switch-1"]
    assert "dialout_tls_handshake_failures" in (checkout_like / "metrics.txt").read_text(encoding="utf-8")
    for loop in (curl_loop, go_loop):
        with shell_1(trials[1], checkout_like, env, ready=r"trials: waiting for a switch") as run:
            shell_2(loop[1], checkout_like, env)  # ends by itself once the trials end: nothing listens
            code = run.process.wait(timeout=RUN_S)
        report = json.loads((checkout_like / "trials.json").read_text(encoding="utf-8"))
        assert [trial["name"] for trial in report["trials"]] == ["ping", "refused-stream", "retry-after"]
        assert code in (0, 1, 3, NOT_EXERCISED_EXIT), run.lines[-20:]
        assert any(line.startswith("scorecard for switch-1:") for line in run.lines)
    assert not (REPO / "diagnosis.json").exists()  # the checkout itself untouched
