"""MkDocs hook: the references made from the code, never copied into it.

A page asks for one with a line ``<!-- generated: NAME -->``; the build puts the rendered Markdown there. A name
with no renderer fails the build (``mkdocs build --strict`` in ``make lint``), and so does a config key without a
meaning, so a reference can be neither stale nor holed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_reference import controller_cli, switch_cli
from config_reference import config_reference
from findings_reference import findings_reference
from refusals_reference import refusals_reference
from trials_reference import trials_reference

from controller.commands import explain, trials


def bench_results() -> str:
    """bench/RESULTS.md, the record of every bench run with its date and command, a level below the page's own
    headings: kept where bench/run.py's figures are written, shown here."""
    record = (Path(__file__).parents[2] / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    lines = record.splitlines()[1:]  # its own title is the page's section
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in lines) + "\n"


def exit_codes(codes: dict[int, str]) -> Callable[[], str]:
    """A command's exit codes as its --help lists them, from the same table."""
    return lambda: (
        "| exit | meaning |\n|---|---|\n" + "\n".join(f"| {code} | {said} |" for code, said in codes.items()) + "\n"
    )


RENDERERS: dict[str, Callable[[], str]] = {
    "config": config_reference,
    "cli-controller": controller_cli,
    "cli-switch": switch_cli,
    "trials": trials_reference,
    "findings": findings_reference,
    "refusals": refusals_reference,
    "bench-results": bench_results,
    "explain-exit-codes": exit_codes(explain.EXIT_CODES),
    "trials-exit-codes": exit_codes(trials.EXIT_CODES),
}

_MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:  # noqa: ANN401 - MkDocs' own Page
    def render(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_path}: no generated reference named {name!r} ({', '.join(RENDERERS)})")
        return RENDERERS[name]()

    return _MARKER.sub(render, markdown)
