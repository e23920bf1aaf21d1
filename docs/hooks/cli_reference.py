"""The command-line reference, from the argparse parsers themselves: each command's ``--help``, as it prints."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import controller.__main__ as controller_main
import sim_switch.__main__ as switch_main

WIDTH = "100"  # argparse wraps to the terminal's width (COLUMNS): the page's is fixed, so the page is too


def controller_cli() -> str:
    parser, commands = controller_main.parsers()
    return _reference("python -m controller", parser, commands)


def switch_cli() -> str:
    parser, commands = switch_main.parsers()
    return _reference("python -m sim_switch", parser, commands)


def _reference(program: str, parser: argparse.ArgumentParser, commands: Mapping[str, argparse.ArgumentParser]) -> str:
    parts = [_help(f"{program} --help", parser)]
    parts += [_help(f"{program} {name} --help", command) for name, command in commands.items()]
    return "\n".join(parts)


def _help(said: str, parser: argparse.ArgumentParser) -> str:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        text = parser.format_help()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    return f'```text title="{said}"\n{text.rstrip()}\n```\n'
