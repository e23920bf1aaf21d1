"""docs/getting-started.md, followed as written: its demo command, then its two shells, run by bash from a
directory laid out as a checkout is (the Makefile, pyproject.toml and .venv of this one; never the checkout
itself, whose certs/ and reports/ stay untouched), against a test controller: the directory's config.yaml is the
shipped one with a free port and pings of under a second, so that the page's commands take seconds, not minutes.
Its "the test suite" block is this very suite, and is not run again from inside it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.page_shells import blocks, environment, free_pair, shell_1, shell_2
from tests.servers import REPO

PAGE = REPO / "docs" / "getting-started.md"
SHORT_PINGS = [0.2, 0.4, 0.6]


@pytest.fixture
def checkout_like(tmp_path: Path) -> tuple[Path, int]:
    """A directory the page's commands work in, and the port its config.yaml serves on."""
    for name in (".venv", "Makefile", "pyproject.toml"):
        (tmp_path / name).symlink_to(REPO / name)
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    port = free_pair()
    config["controller"]["port"] = port
    config["switch"]["controller_url"] = f"https://localhost:{port}"
    for name in ("seed", "contrast"):
        config["scenarios"][name]["pings"] = SHORT_PINGS
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path, port


def test_the_getting_started_page_as_written(checkout_like: tuple[Path, int]) -> None:
    directory, port = checkout_like
    # make would reinstall the venv from this directory if pyproject.toml were newer than its stamp: not here
    stale = subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO, check=False)
    assert stale.returncode == 0, "the venv is older than pyproject.toml: run `make .venv/.installed` first"
    (demo_title, demo), (suite_title, suite), serve, switch, explain = blocks(PAGE, '[^"]+')
    assert (demo_title, demo.strip(), suite_title, suite.strip()) == (
        "the demo",
        "make demo",
        "the test suite",
        "make test",
    )
    assert [serve[0], switch[0], explain[0]] == ["shell 1", "shell 2", "shell 2"]
    env = environment(directory, port)

    done = shell_2(demo, directory, env)
    assert "demo: 2 of 2 scenarios passed" in done.stdout, done.stdout[-2000:]
    assert {path.name for path in (directory / "reports").iterdir()} == {"seed.html", "contrast.html"}

    with shell_1(serve[1], directory, env, ready=r"admin page, /connections, /diagnosis and /metrics") as ctl:
        assert ctl.seen(rf"listening on https://\S+:{port}")
        ran = shell_2(f"set -e\n{switch[1]}", directory, env)
        assert "MULTIPLEXED: 3 pings as 3 streams on 1 connection" in ran.stdout
        assert "NOT MULTIPLEXED: 3 pings on 3 connections (HTTP/1.1)" in ran.stdout
        said = shell_2(explain[1], directory, env, codes=(1,)).stdout  # contrast's HTTP/1.1: a problem, exit 1
    assert "http1_only" in said
    assert "multiplexed" in said
    assert (directory / "contrast.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert json.loads((directory / "seed.json").read_text(encoding="utf-8"))["multiplexed"] is True
    assert not (REPO / "seed.json").exists()  # the checkout itself untouched
