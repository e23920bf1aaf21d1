"""The command lines as a user runs them: ``python -m controller`` and ``python -m sim_switch`` as child processes
from the checkout, their output captured. One place, so that every test starts them the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import REPO


def run_module(module: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS...`` from the checkout, no standard input, stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_switch(config: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sim_switch --config CONFIG --url URL ARGS...``"""
    return run_module("sim_switch", "--config", str(config), "--url", url, *args)
