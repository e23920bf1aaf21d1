"""The external programs the tests drive as a user would (curl, openssl, nginx, Go, headless Chromium, h2load,
PostgreSQL).

On a laptop without one, the tests that need it skip, saying which Debian package brings it, so ``make test``
works anywhere; in CI (``CI=true``) a missing one fails the test instead, since ``.ci/run`` installs them all and a
skip there would hide a gap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

# program -> the Debian package that brings it (what .ci/run installs)
PACKAGES = {
    "curl": "curl",
    "openssl": "openssl",
    "nginx": "nginx",
    "go": "golang-go",
    "chromium": "chromium",
    "h2load": "nghttp2-client",
    "initdb": "postgresql",
    "pg_ctl": "postgresql",
    "nginx's stream module": "libnginx-mod-stream",
}


def require(program: str) -> str:
    """The path of ``program``; skips the test without it, or fails it in CI."""
    found = shutil.which(program) or next(
        (str(path) for path in (Path("/usr/sbin") / program, Path("/sbin") / program) if path.exists()), None
    )
    if found is None:
        missing(program)
    return found


def missing(what: str) -> NoReturn:
    """Skip the test for want of ``what`` (a program, or a part of one), saying which Debian package brings it; in
    CI, fail it."""
    message = f"{what} is not installed (Debian's {PACKAGES.get(what, what)}; .ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
