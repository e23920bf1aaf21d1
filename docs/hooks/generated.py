"""MkDocs hook: the references made from the code, never copied into it.

A page asks for one with a line ``<!-- generated: NAME -->``; the build puts the rendered Markdown there. A name
with no renderer fails the build (``mkdocs build --strict`` in ``make lint``), and so does a config key without a
meaning, so a reference can be neither stale nor holed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cli_reference import controller_cli, switch_cli
from config_reference import config_reference
from findings_reference import findings_reference
from trials_reference import trials_reference

RENDERERS: dict[str, Callable[[], str]] = {
    "config": config_reference,
    "cli-controller": controller_cli,
    "cli-switch": switch_cli,
    "trials": trials_reference,
    "findings": findings_reference,
}

_MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:  # noqa: ANN401 - MkDocs' own Page
    def render(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_path}: no generated reference named {name!r} ({', '.join(RENDERERS)})")
        return RENDERERS[name]()

    return _MARKER.sub(render, markdown)
