"""``python -m sim_switch``: dial the controller, fire a scenario's pings at once, trace and judge them.

stdout carries the trace and the summary, or with ``--json`` exactly one JSON object; stderr carries errors.
Exit codes: 0 every ping got 200 and every expectation held, 1 otherwise, 2 usage, config or certificate error,
3 nothing failed but the cross-check was inconclusive (an answer read late while this process's own event loop
lagged as long: the machine was too busy to tell), 70 a bug of dialout's (one line; ``DIALOUT_TRACEBACK=1`` shows
where).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dialout.command_line import OneLineParser, command_first, run_guarded
from dialout.config import load_config
from dialout.errors import DialoutError
from dialout.pages import Page, read_more
from sim_switch.fleet.run import Shard, parse_shard
from sim_switch.run import MergeOptions, RunOptions, merge_shards, run


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "merge":
        return merge_shards(MergeOptions(tuple(args.files), args.json, args.html))
    options = RunOptions(
        args.config,
        args.scenario,
        args.url,
        args.json,
        args.html,
        args.shard,
        args.workers,
        args.verbose,
        frames=args.trace == "frames",
    )
    try:
        return run(options)
    except BrokenPipeError:
        # stdout's reader went away (`| head`): say nothing more, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


COMMANDS = {
    "run": "dial the controller and run a scenario (the default)",
    "merge": "one fleet's summary, verdict and exit code from the --json of each of its shards (--shard I/N)",
}


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """``run`` and ``merge``, each with its own options; ``python -m sim_switch [options]`` still runs."""
    parser, made = parsers(argv)
    return parser.parse_args(command_first(argv, made, "run"))


def parsers(argv: Sequence[str] = ()) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line: the parser, and each sub-command's own (docs/reference/cli.md is made from them).
    ``argv``: when it asks for help, ``--scenario``'s help lists the config's scenarios."""
    parser = OneLineParser(
        prog="python -m sim_switch",
        description="The switch end of the dial-out pair: concurrent pings to the controller, traced, with a "
        "verdict on whether they were multiplexed over one HTTP/2 connection.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    run = sub.add_parser("run", help=COMMANDS["run"], description=COMMANDS["run"])
    run.add_argument("--config", type=Path, default=Path("config.yaml"), help="default: %(default)s")
    run.add_argument("--scenario", default="seed", help=_scenarios_help(argv))
    run.add_argument("--url", help="the controller's base URL (default: switch.controller_url)")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of the trace")
    run.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write the run as one self-contained HTML page (a waterfall of every ping)",
    )
    run.add_argument(
        "--shard",
        type=_shard_option,
        metavar="I/N",
        help="fleets: run shard I (0 to N-1) of N of the switches; merge the shards' --json with "
        "`python -m sim_switch merge`",
    )
    run.add_argument(
        "--workers",
        type=_workers_option,
        metavar="N",
        help="fleets: split the switches over N processes (default: one per CPU)",
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="show every step of every request (on stderr with --json)"
    )
    run.add_argument(
        "--trace",
        choices=("frames",),
        help="frames: also every HTTP/2 frame either way, as Go's GODEBUG=http2debug=2 prints them",
    )
    merge = sub.add_parser("merge", help=COMMANDS["merge"], description=COMMANDS["merge"])
    merge.add_argument("files", nargs="+", type=Path, metavar="SHARD.json")
    merge.add_argument("--json", action="store_true", help="print one JSON object, as one run of the fleet would")
    merge.add_argument("--html", type=Path, metavar="FILE", help="also write the fleet's HTML report")
    parser.epilog = f"{read_more(Page.READING_A_RUN)}; every option: {Page.CLI}"
    run.epilog = read_more(Page.READING_A_RUN)
    merge.epilog = read_more(Page.FLEETS)
    return parser, {"run": run, "merge": merge}


def _scenarios_help(argv: Sequence[str]) -> str:
    """``--scenario``'s help: the config's scenarios by name, when help is asked for and the config can be read
    (``--config``, or config.yaml here); its load is not paid for otherwise."""
    plain = "a scenario in the config (default: %(default)s)"
    if not {"-h", "--help"} & set(argv):
        return plain
    path = Path("config.yaml")
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            path = Path(argv[index + 1])
        elif arg.startswith("--config="):
            path = Path(arg.removeprefix("--config="))
    try:
        names = [scenario.name for scenario in load_config(path).scenarios]
    except DialoutError as exc:
        said = str(exc).replace("%", "%%")  # argparse formats help with %
        return f"{plain}; {path} cannot be read to list them: {said}"
    return f"a scenario of {path}: {', '.join(names)} (default: %(default)s)"


def _shard_option(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _workers_option(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of processes, at least 1, got {text!r}")
    return int(text)


if __name__ == "__main__":
    sys.exit(run_guarded("sim_switch", main))
