"""Shared fixtures: certificates from trustme in temporary directories (never the repo's certs/), and real
controllers on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dialout.config import ControllerConfig
from dialout.pki import generate_certs
from tests.servers import ControllerProcess, RunningController, run_controller, write_config

HOSTNAMES = ("localhost", "127.0.0.1", "::1")
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
