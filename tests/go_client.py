"""The Go client (tests/go/simswitch.go: net/http, the report's kind of switch), built with Debian's golang-go
(which .ci/run installs): standard library only, so ``go build`` needs no network."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.servers import REPO
from tests.tools import require


def build_go_switch(directory: Path) -> Path:
    """The built client in ``directory`` (its build cache there too); skips, or fails in CI, without Go."""
    go = require("go")
    binary = directory / "simswitch"
    environment = {
        **os.environ,
        "GOCACHE": str(directory / "cache"),
        "GOPATH": str(directory / "path"),
        "GOFLAGS": "",
        "GO111MODULE": "off",
        "CGO_ENABLED": "0",
    }
    done = subprocess.run(
        [go, "build", "-o", str(binary), str(REPO / "tests" / "go" / "simswitch.go")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return binary
