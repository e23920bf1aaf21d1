"""What every dialout command line shares: an argparse error is one line, and nothing a user types or writes in
config.yaml ever ends in a traceback.

Each ``main`` catches the errors it knows (exit 2 for usage, config or certificates); ``run_guarded`` is the
outermost net under ``python -m``: anything that still escapes is a bug of dialout's, said in one line too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

__all__ = ["BUG_EXIT", "OneLineParser", "command_first", "run_guarded"]

# An error dialout did not expect (sysexits.h's EX_SOFTWARE): neither the run failing (1) nor bad input (2).
BUG_EXIT = 70
# Set it to see the traceback of such an error, for a bug report.
TRACEBACK_VARIABLE = "DIALOUT_TRACEBACK"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit 2, not the usage block and then the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def command_first(argv: Sequence[str], commands: Mapping[str, argparse.ArgumentParser], default: str) -> list[str]:
    """``argv`` with its command word first, as sub-parsers want it, so that the spellings from before there were
    sub-commands keep working: options before the command (``--config X certs``), or no command at all (the
    ``default``). A word that is the value of an option (``--scenario demo``) is not taken for a command."""
    takes_value = {
        option
        for parser in commands.values()
        for action in parser._actions  # argparse has no public way to ask which options take a value
        if action.nargs != 0
        for option in action.option_strings
    }
    skip_next = False
    for index, word in enumerate(argv):
        if skip_next:
            skip_next = False
        elif word in takes_value:
            skip_next = True
        elif word in commands:
            return [word, *argv[:index], *argv[index + 1 :]]
    if "-h" in argv or "--help" in argv or (argv and not argv[0].startswith("-")):
        return list(argv)  # the commands' overview, or a word that is no command: argparse says which there are
    return [default, *argv]


def run_guarded(name: str, main: Callable[[], int]) -> int:
    """``main()``'s exit code; an exception that escaped it is one line on stderr and exit ``BUG_EXIT``."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130  # as a shell reports a process ended by SIGINT
    except Exception as exc:  # the last net: every known error was caught and said before this
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(
            f"{name}: unexpected error, a bug in dialout: {type(exc).__name__}: {exc} (run with "
            f"{TRACEBACK_VARIABLE}=1 for the traceback)",
            file=sys.stderr,
        )
        return BUG_EXIT
