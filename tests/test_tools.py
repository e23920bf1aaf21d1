"""A test that needs an external program skips without it on a laptop, saying why, and fails without it in CI."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers import REPO


def run_curl_tests_without_curl(ci: bool) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    environment["PATH"] = "/nonexistent"  # no curl on it (python runs by its full path)
    if ci:
        environment["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_curl.py"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_missing_program_skips_with_its_reason_on_a_laptop() -> None:
    done = run_curl_tests_without_curl(ci=False)
    assert done.returncode == 0, done.stdout
    assert "SKIPPED" in done.stdout
    assert "curl is not installed (Debian's curl; .ci/run installs it)" in done.stdout
    assert " passed" not in done.stdout.splitlines()[-1]


def test_a_missing_program_fails_in_ci() -> None:
    done = run_curl_tests_without_curl(ci=True)
    assert done.returncode == 1, done.stdout
    assert "curl is not installed" in done.stdout
    assert " failed" in done.stdout.splitlines()[-1]
