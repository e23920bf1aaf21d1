"""Bad input is one line on stderr and exit 2, never a traceback: every command line with a table of bad
arguments, and config files built to crash a YAML loader (issue 17, items 5 to 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controller.commands.explain import ExplainError
from controller.server.serve import ServerError
from dialout.command_line import BUG_EXIT, TRACEBACK_VARIABLE, OneLineParser, command_first, run_guarded
from dialout.config import ConfigError, load_config
from dialout.config_yaml import MAX_DEPTH
from dialout.errors import DialoutError, PKIError
from sim_switch.fleet.tally import MergeError
from sim_switch.fleet.workers import WorkerError
from sim_switch.render.html import ReportFileError
from tests.commands import run_switch
from tests.servers import REPO, ControllerProcess

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)
BAD_FILES: dict[str, bytes] = {
    "not-utf8.yaml": b"controller:\n  host: \xff\xfe\n",
    "deep.yaml": b"[" * 20_000,
    "bomb.yaml": BILLION_LAUGHS.encode(),
    "devnull.yaml": b"controller: {certs_dir: /dev/null}\nswitch: {certs_dir: /dev/null}\n"
    b"scenarios: {seed: {pings: [0]}}\n",
    "broken.yaml": b"scenarios:\n  seed: {pings: [1, 2\n",
    "bad-interval.yaml": b"scenarios:\n  seed:\n    pings: [1, abc]\n",
    "config.yaml": b"controller: {port: 0}\nscenarios: {seed: {pings: [0]}, fleet: {fleet: {switches: 2, pings: 1, "
    b"interval_s: 0}}}\n",
    "empty.json": b"{}",
    "bad.json": b"nope",
}

# (command, what the one line must say)
CASES: list[tuple[list[str], str]] = [
    (["controller", "demo", "--scenario", "nosuch", "--port", "0"], "no scenario named 'nosuch'"),
    (["controller", "--port", "abc"], "argument --port: invalid int value: 'abc'"),
    (["controller", "--port", "99999"], "--port: must be 0 to 65535, got 99999"),
    (["controller", "--admin-port", "-1"], "--admin-port: must be 0 to 65535"),
    (["controller", "nosuch-command"], "invalid choice: 'nosuch-command'"),
    (["controller", "--config", "missing.yaml"], "missing.yaml: cannot read config"),
    (["controller", "--config", "."], "cannot read config: Is a directory"),
    (["controller", "--config", "not-utf8.yaml"], "not-utf8.yaml:2: not UTF-8 text"),
    (["controller", "--config", "deep.yaml"], f"deep.yaml:1: nested more than {MAX_DEPTH} levels deep"),
    (["controller", "--config", "bomb.yaml"], "bomb.yaml:7: expands to more than 1,000,000 values"),
    (["controller", "--config", "devnull.yaml"], "/dev/null: cannot hold certificates"),
    (["controller", "--config", "devnull.yaml", "certs"], "/dev/null: cannot hold certificates"),
    (["controller", "--config", "broken.yaml"], "broken.yaml:3: not valid YAML"),
    (["controller", "--config", "bad-interval.yaml"], "bad-interval.yaml:3: scenarios.seed.pings[1]"),
    (["controller", "explain", "--since", "yesterday"], "--since: must be seconds ago"),
    (["controller", "explain", "--url", "https://127.0.0.1:1"], "cannot ask as switch-1: certs/switch-1.pem"),
    (["controller", "explain"], "controller.port is 0"),
    (["controller", "nginx-conf", "--listen", "nowhere"], "--listen: must be HOST:PORT"),
    (["sim_switch", "--scenario", "nosuch"], "no scenario named 'nosuch'"),
    (["sim_switch", "--url", "notaurl"], "--url: must be an https:// URL"),
    (["sim_switch", "--url", "https://localhost:99999"], "--url: has a bad port"),
    (["sim_switch", "--shard", "3/2"], "argument --shard"),
    (["sim_switch", "--shard", "0/2"], "only a fleet scenario is split"),
    (["sim_switch", "--workers", "0"], "argument --workers"),
    (["sim_switch", "--bogus"], "unrecognized arguments: --bogus"),
    (["sim_switch", "--html", "nowhere/x.html"], "no such directory"),
    (["sim_switch", "--config", "not-utf8.yaml"], "not UTF-8 text"),
    (["sim_switch", "--config", "deep.yaml"], "nested more than"),
    (["sim_switch", "--config", "bomb.yaml"], "expands to more than"),
    (["sim_switch", "--config", "devnull.yaml"], "/dev/null: cannot hold certificates"),
    (["sim_switch", "merge"], "required: SHARD.json"),
    (["sim_switch", "merge", "missing.json"], "missing.json: No such file or directory"),
    (["sim_switch", "merge", "bad.json"], "bad.json: not the --json of a fleet run"),
    (["sim_switch", "merge", "empty.json"], "empty.json: no fleet tally"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case run once, as ``python -m`` in a directory of its own, a few at a time."""
    directory = tmp_path_factory.mktemp("bad-input")
    for name, data in BAD_FILES.items():
        (directory / name).write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DIALOUT_TRACEBACK", None)

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(run, (args for args, _ in CASES)))
    return {" ".join(args): result for (args, _), result in zip(CASES, done, strict=True)}


@pytest.mark.parametrize(("args", "says"), CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(
    outcomes: dict[str, subprocess.CompletedProcess[str]], args: list[str], says: str
) -> None:
    done = outcomes[" ".join(args)]
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]
    assert done.returncode == 2, done.stderr


def test_an_alias_bomb_is_refused_before_it_is_walked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"expands to more than 1,000,000 values through its aliases"):
        load_config(path)


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "scenarios:\n  a: {pings: &pings [1, 2], description: &words one}\n  b: {pings: *pings, description: *words}\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert cfg.scenario("b").kind == cfg.scenario("a").kind


def test_an_unexpected_error_is_one_line_and_its_own_exit_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last net under ``python -m``: an error no ``main`` expected (a bug) is one line naming it, exit 70, and
    its traceback is there for the asking."""

    def buggy() -> int:
        counts: dict[str, int] = {}
        return counts["no such key"]

    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    assert run_guarded("sim_switch", buggy) == BUG_EXIT
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "sim_switch: unexpected error, a bug in dialout: KeyError: 'no such key' (run with "
        "DIALOUT_TRACEBACK=1 for the traceback)"
    )
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(KeyError):
        run_guarded("sim_switch", buggy)


def test_https_to_the_admin_port_says_it_answered_in_plain_http(controller_process: ControllerProcess) -> None:
    admin = controller_process.admin_url.replace("http://", "https://")
    done = run_switch(controller_process.config, admin)
    assert done.returncode == 1
    host_port = admin.removeprefix("https://")
    assert f"the server answered in plain HTTP: is {host_port} the admin port?" in done.stdout
    report = json.loads(run_switch(controller_process.config, admin, "--json").stdout)
    assert report["failure_kinds"] == {"plain_http": 3}


def test_http_to_the_tls_port_says_it_expects_tls(controller_process: ControllerProcess) -> None:
    url = controller_process.url.replace("https://", "http://")
    for scenario in ("seed", "contrast"):  # h2c with prior knowledge, and HTTP/1.1
        done = run_switch(controller_process.config, url, "--scenario", scenario)
        assert done.returncode == 1
        assert f"the server expects TLS: use {controller_process.url}" in done.stdout, done.stdout


def test_every_error_a_person_is_told_is_a_dialout_error() -> None:
    """Each __main__ catches DialoutError alone: the halves' own errors are in its tree, with their exit codes."""
    for error in (ConfigError("a", "b"), PKIError("x"), ExplainError("x"), ReportFileError("x"), MergeError("x")):
        assert isinstance(error, DialoutError)
        assert error.code == 2
    assert WorkerError("x").code == 1
    assert ServerError("port taken").code == 1
    assert ServerError("not loopback", usage=True).code == 2


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["--port", "0"], ["serve", "--port", "0"]),  # no command: the default, as before sub-commands
        (["--config", "x.yaml", "certs"], ["certs", "--config", "x.yaml"]),  # options before the command
        (["demo", "--scenario", "seed"], ["demo", "--scenario", "seed"]),
        (["--scenario", "certs", "demo"], ["demo", "--scenario", "certs"]),  # a value is not taken for a command
        (["nosuch"], ["nosuch"]),  # left for argparse to name the commands
        (["--help"], ["--help"]),
    ],
)
def test_the_spellings_from_before_sub_commands_still_work(argv: list[str], command: list[str]) -> None:
    parser = OneLineParser()
    sub = parser.add_subparsers(dest="command")
    commands = {name: sub.add_parser(name) for name in ("serve", "certs", "demo")}
    for each in commands.values():
        each.add_argument("--config")
        each.add_argument("--port")
        each.add_argument("--scenario")
    assert command_first(argv, commands, "serve") == command
