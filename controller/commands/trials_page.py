"""``python -m controller trials --html FILE``: the trials' results as one page, drawn from the report's JSON (the
same data ``--json`` writes): the scorecard, then each trial's waterfall, the switch's connections as rows and its
requests as bars in them, the controller's actions as red lines across, what the switch did as marks on its
connection.

The SVG geometry is computed here; the page around it is a Jinja2 template (``templates/trials.html``,
autoescaped).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

GENERATOR = "dialout trials"
WIDTH = 900  # the SVG's width, in px
LABELS = 120  # the left margin, where each row says which connection it is
LANE = 9  # one request's bar, in px
ROW = 14  # a connection's row at least, in px: its label's height
GAP = 4  # between connections' rows
MARGIN_S = 0.5  # the waterfall begins this long before its trial, and ends as long after
_OURS = re.compile(rb'<meta name="generator" content="dialout trials"')
_TEMPLATES = Environment(
    loader=PackageLoader("controller.commands", "templates"), autoescape=select_autoescape(), undefined=StrictUndefined
)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    css: str


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Row:
    y: float
    height: float
    label: str


@dataclass(frozen=True)
class Action:
    x: float
    title: str


@dataclass(frozen=True)
class Waterfall:
    name: str
    verdict: str
    sentence: str
    height: float
    rows: list[Row]
    bars: list[Bar]
    marks: list[Mark]
    actions: list[Action]
    ticks: list[tuple[float, str]]


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a trials page this command wrote (only such a page is ever replaced)."""
    try:
        with path.open("rb") as page:
            return _OURS.search(page.read(4096)) is not None
    except OSError:
        return False


def render(report: dict[str, Any]) -> str:
    timeline = report.get("timeline", {"connections": [], "streams": []})
    return _TEMPLATES.get_template("trials.html").render(
        generator=GENERATOR,
        report=report,
        waterfalls=[_waterfall(trial, timeline) for trial in report["trials"]],
        width=WIDTH,
    )


def _waterfall(trial: dict[str, Any], timeline: dict[str, list[dict[str, Any]]]) -> Waterfall:
    begin, end = float(trial["started_s"]) - MARGIN_S, float(trial["ended_s"]) + MARGIN_S

    def x(at_s: float | None) -> float:
        at_s = end if at_s is None else min(max(at_s, begin), end)
        return round(LABELS + (at_s - begin) / (end - begin) * (WIDTH - LABELS), 1)

    def overlaps(start: float | None, stop: float | None) -> bool:
        return (start if start is not None else begin) <= end and (stop if stop is not None else end) >= begin

    streams = [s for s in timeline["streams"] if overlaps(s["started_s"], s["ended_s"])]
    touched = {step["connection"] for step in trial["steps"]} | {s["connection"] for s in streams}
    connections = [c for c in timeline["connections"] if c["id"] in touched or overlaps(c["dialled_s"], c["closed_s"])]
    rows, bars, marks, y = [], [], [], 20.0
    where: dict[int, float] = {}
    for connection in connections:
        mine = [s for s in streams if s["connection"] == connection["id"]]
        lanes = _lanes(mine)
        height = max(ROW, (max(lanes.values(), default=0) + 1) * LANE)
        rows.append(Row(y, height, f"conn #{connection['id']} {connection['alpn'] or ''}".strip()))
        left = x(connection["dialled_s"])
        bars.append(Bar(left, y, x(connection["closed_s"]) - left, height, "", "conn"))
        for index, stream in enumerate(mine):
            title = f"{stream['target']} on stream {stream['stream']}: {stream['started_s']} to {stream['ended_s']} s"
            left = x(stream["started_s"])
            css = "answer" if stream["ended_s"] is not None else "open"
            width = max(1.0, x(stream["ended_s"]) - left)
            bars.append(Bar(left, y + lanes[index] * LANE + 1, width, LANE - 2, title, css))
        where[connection["id"]] = y + height / 2
        y += height + GAP
    for step in trial["steps"]:
        if step["by"] == "switch":
            marks.append(
                Mark(x(step["at_s"]), where.get(step["connection"], 10.0), f"{step['at_s']} s: {step['what']}")
            )
    actions = [
        Action(x(step["at_s"]), f"{step['at_s']} s: {step['what']}")
        for step in trial["steps"]
        if step["by"] == "controller"
    ]
    return Waterfall(
        trial["name"], trial["verdict"], trial["sentence"], y + 16, rows, bars, marks, actions, _ticks(begin, end, x)
    )


def _lanes(streams: list[dict[str, Any]]) -> dict[int, int]:
    """A lane for each stream (by its index), the lowest free when it starts: overlapping requests side by side."""
    free_at: list[float] = []
    lanes: dict[int, int] = {}
    for index, stream in sorted(enumerate(streams), key=lambda item: item[1]["started_s"]):
        ends = math.inf if stream["ended_s"] is None else stream["ended_s"]
        lane = next((n for n, free in enumerate(free_at) if free <= stream["started_s"]), len(free_at))
        if lane == len(free_at):
            free_at.append(ends)
        free_at[lane] = ends
        lanes[index] = lane
    return lanes


def _ticks(begin: float, end: float, x: Callable[[float | None], float]) -> list[tuple[float, str]]:
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 30, 60) if (end - begin) / s <= 12)
    first = math.ceil(begin / step) * step
    return [(x(t), f"{t:g} s") for t in _range(first, end, step)]


def _range(first: float, end: float, step: float) -> Iterable[float]:
    at = first
    while at <= end:
        yield round(at, 3)
        at += step
