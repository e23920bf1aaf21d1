"""Shared fixtures: certificates from trustme in temporary directories (never the repo's certs/), real
controllers on ephemeral loopback ports, and, with ``DIALOUT_TEST_LOAD=1``, a machine kept busy beside the suite.

dialout is run beside load, so its verdicts must hold there (issue 28): ``DIALOUT_TEST_LOAD=1`` starts one busy
process per core for the whole session (one set, under pytest-xdist: the first worker's), each ending by itself
after ``LOAD_MAX_S`` should the session die without ending them. ``make test-loaded`` runs the tests marked
``timing`` (verdicts from a time, bounds on a shutdown) that way.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dialout.config import ControllerConfig
from dialout.pki import generate_certs
from tests.servers import ControllerProcess, RunningController, run_controller, write_config

LOAD_MAX_S = 1800  # a busy process outlives no session by more than this
BUSY = f"import time\nend = time.monotonic() + {LOAD_MAX_S}\nwhile time.monotonic() < end: pass"
HOSTNAMES = ("localhost", "127.0.0.1", "::1")


@pytest.fixture(autouse=True)
def own_logging() -> Iterator[None]:
    """A test that runs a ``main()`` in-process has it configure the root logger as a program's does, onto that
    test's captured stderr: put back what was there, so a later test's logging does not write to a closed capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.fixture(scope="session", autouse=True)
def machine_load() -> Iterator[None]:
    """With ``DIALOUT_TEST_LOAD=1``: one busy process per core while the session runs."""
    first_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0"
    if os.environ.get("DIALOUT_TEST_LOAD") != "1" or not first_worker:
        yield
        return
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


SWITCH_IDS = ("switch-1", "switch-2")


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The controller's PKI: CA, controller certificate, switch-1 and switch-2."""
    directory = tmp_path_factory.mktemp("certs")
    generate_certs(directory, HOSTNAMES, SWITCH_IDS)
    return directory


@pytest.fixture(scope="session")
def foreign_certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, valid PKI that has nothing to do with the controller's."""
    directory = tmp_path_factory.mktemp("foreign-certs")
    generate_certs(directory, HOSTNAMES, SWITCH_IDS)
    return directory


@pytest.fixture
async def controller(certs_dir: Path) -> AsyncIterator[RunningController]:
    """The controller app on Hypercorn, in this test's event loop, with real mutual TLS."""
    async with run_controller(ControllerConfig(certs_dir=certs_dir, max_interval_s=5, switches=SWITCH_IDS)) as running:
        yield running


@pytest.fixture(scope="module")
def controller_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """``python -m controller`` as a real child process on port 0, with its own config and certificates."""
    config = write_config(tmp_path_factory.mktemp("controller-process"))
    with ControllerProcess.start(config) as process:
        yield process
