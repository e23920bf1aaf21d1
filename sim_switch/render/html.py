"""One self-contained HTML file per run (``--html FILE``): the verdict, a waterfall of connections and pings, both
ends' views side by side, a session's link bands, a fleet's histograms.

Drawn as inline SVG from Python, with no script and no asset from anywhere: the file opens offline in any
browser, reads as plain markup, and stays small (about 1 KiB per ping with its trace; a plotting library that
inlines its assets starts at several MB). Hovering a bar shows its ``<title>``: that ping's trace events.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from dialout.config import Schedule
from dialout.errors import DialoutError
from dialout.pages import Page
from dialout.text import plural
from sim_switch.fleet.bottleneck import CpuShares
from sim_switch.fleet.histograms import Histogram
from sim_switch.fleet.tally import FleetTally
from sim_switch.fleet.verdict import FleetVerdict
from sim_switch.model.events import EventKind, LinkDown, LinkUp, Reconnecting, TraceEvent
from sim_switch.model.frames import Direction, FrameEvent
from sim_switch.model.results import ConnectionRecord, PingOutcome, PingResult, RunResult, format_interval
from sim_switch.model.verdict import Outcome, Verdict
from sim_switch.render.fleet import cpu_lines, errors_by_kind, fleet_line
from sim_switch.render.fleet import problem_lines as fleet_problems
from sim_switch.render.frames import describe_frame, frame_name
from sim_switch.render.report import ping_error, problem_lines, result_line, shown_line
from sim_switch.render.trace import describe, describe_disagreement, describe_view

GENERATOR = "dialout"  # <meta name="generator">: how a report is told from a file that is not ours
# The page around the pictures: templates beside this module, every value escaped unless it is the SVG made here.
_TEMPLATES = Environment(
    loader=PackageLoader("sim_switch.render", "templates"), autoescape=select_autoescape(), undefined=StrictUndefined
)
LABEL_W = 250  # the lane labels, left of the plot
PLOT_W = 900
AXIS_H = 28
ROW_H_MAX = 14  # one ping per row within its lane; rows shrink when a lane holds many
LANE_H_MAX = 480
MAX_TITLE_EVENTS = 16  # per ping, in its tooltip (plumbing, -v's DETAIL, left out)
MAX_FRAME_MARKS = 5_000  # per connection: enough for a run of --trace frames, not a soak's

# Where a time in the run (seconds) goes on the plot (pixels).
_Scale = Callable[[float], float]


class ReportFileError(DialoutError):
    """The report cannot be written there; one line, naming the file."""

    page = Page.READING_A_RUN


def check_report_path(path: Path) -> None:
    """Before a run: the report may go to ``path`` (its directory exists; nothing there, or a report of ours).
    A file of the user's is never overwritten."""
    if not path.parent.is_dir():
        raise ReportFileError(f"{path}: no such directory {path.parent}")
    if path.exists() and not _is_ours(path):
        raise ReportFileError(f"{path}: exists and is not a dialout report; not overwriting it (choose another name)")


def write_report(path: Path, html: str) -> None:
    """Write whole or not at all: a browser never opens half a report."""
    check_report_path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, path)


def _is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return f'<meta name="generator" content="{GENERATOR}">'.encode() in file.read(512)
    except OSError:
        return False


_LEGEND = (
    ("connect", "#f2b705", "TCP connect"),
    ("tls", "#a142f4", "TLS handshake"),
    ("wait", "#9aa0a6", "waiting for SETTINGS or a free stream"),
    ("answer", "#1a73e8", "waiting for the answer"),
    ("retrying", "#fde293", "earlier tries (session)"),
    ("failed", "#d93025", "failed"),
)


def run_html(result: RunResult, verdict: Verdict, events: Sequence[TraceEvent]) -> str:
    """The report of a one-shot run or a persistent session."""
    scenario, view = result.scenario, result.controller_view
    return _TEMPLATES.get_template("run.html").render(
        generator=GENERATOR,
        title=f"dialout {scenario.name}",
        heading=f"dialout: scenario {scenario.name}",
        subtitle=f"{scenario.kind.mode} run against {result.controller_url}",
        shown={"css": _SHOWN_CLASS[verdict.outcome], "text": shown_line(verdict)},
        result={"ok": verdict.ok, "text": result_line(verdict)},
        problems=problem_lines(verdict),
        legend=[(color, text) for _, color, text in _LEGEND],
        waterfall=Markup(_waterfall(result, events)),  # SVG built here, every text in it escaped
        view_summary=describe_view(view) if view is not None else None,
        views=_view_rows(result),
        findings=view.findings if view is not None and view.findings else (),
    )


def fleet_html(tally: FleetTally, verdict: FleetVerdict, shares: CpuShares | None = None) -> str:
    """The report of a fleet: distributions, not lanes (a thousand switches do not fit in lanes). Drawn from its
    tally, so a fleet run over workers or merged from shards has the same report; ``shares``: each side's CPU and
    the bottleneck, as the summary says them (None: not known, as in a merge)."""
    return _TEMPLATES.get_template("fleet.html").render(
        generator=GENERATOR,
        title=f"dialout fleet {tally.scenario}",
        heading=f"dialout: scenario {tally.scenario}",
        subtitle=f"a fleet of {tally.switches} switches against {' '.join(tally.controllers)}",
        shown=None,
        result={"ok": verdict.ok, "text": fleet_line(tally, verdict)},
        problems=fleet_problems(verdict),
        distributions=[
            _distribution("Latency (request to end of answer)", tally.latency, "latency"),
            _distribution("Overhead over the interval", tally.overhead, "overhead"),
            _distribution("TLS handshake per switch", tally.handshake, "handshake"),
        ],
        per_switch=sorted(tally.connections_per_switch.items()),
        errors=[(n, e) for e, n in sorted(errors_by_kind(tally).items(), key=lambda item: -item[1])],
        cpu=cpu_lines(shares) if shares is not None else [],
    )


# --- pieces --------------------------------------------------------------------------------------------------


# What the pings showed, coloured apart from whether the run met what was asked of it: a NOT MULTIPLEXED that the
# scenario expects is a success, and is not drawn as one.
_SHOWN_CLASS = {
    Outcome.MULTIPLEXED: "good",
    Outcome.SESSION_OK: "good",
    Outcome.NOT_MULTIPLEXED: "warn",
    Outcome.NOTHING_TO_MULTIPLEX: "neutral",
    Outcome.FAILED: "bad",
    Outcome.SESSION_FAILED: "bad",
}


@dataclass(frozen=True)
class _Lane:
    record: ConnectionRecord | None  # None: the pings that never got a connection
    pings: tuple[PingResult, ...]
    rows: dict[int, int]  # ping number -> its row within the lane


def _lanes(result: RunResult) -> list[_Lane]:
    by_connection: dict[int | None, list[PingResult]] = {}
    for ping in result.pings:
        by_connection.setdefault(ping.connection, []).append(ping)
    lanes = [
        _Lane(record, tuple(by_connection.get(record.number, ())), _pack(by_connection.get(record.number, [])))
        for record in result.connections
    ]
    if None in by_connection:
        lanes.append(_Lane(None, tuple(by_connection[None]), _pack(by_connection[None])))
    return lanes


def _pack(pings: list[PingResult]) -> dict[int, int]:
    """Each ping on the first row free at its start, so overlapping bars never hide each other."""
    row_ends: list[float] = []
    rows: dict[int, int] = {}
    for ping in sorted(pings, key=_start):
        start, end = _start(ping), _end(ping)
        row = next((index for index, row_end in enumerate(row_ends) if row_end <= start), len(row_ends))
        if row == len(row_ends):
            row_ends.append(end)
        row_ends[row] = end
        rows[ping.number] = row
    return rows


def _start(ping: PingResult) -> float:
    """Its first try: a retried ping's bar covers the whole wait."""
    end = _end(ping)
    return max(0.0, end - ping.elapsed_s)


def _end(ping: PingResult) -> float:
    if ping.finished_at_s is not None:
        return ping.finished_at_s
    return (ping.started_at_s or 0.0) + ping.elapsed_s


def _waterfall(result: RunResult, events: Sequence[TraceEvent]) -> str:
    lanes = _lanes(result)
    t_max = max([result.wall_time_s, *(_end(ping) for ping in result.pings)]) or 1.0
    scale = PLOT_W / t_max

    def x(at_s: float) -> float:
        return LABEL_W + at_s * scale

    by_ping: dict[int, list[TraceEvent]] = {}
    frames: dict[int, list[FrameEvent]] = {}  # by connection: --trace frames
    for event in events:
        if isinstance(event, FrameEvent) and event.connection is not None:
            frames.setdefault(event.connection, []).append(event)
        elif event.ping is not None and event.kind not in (EventKind.DETAIL, EventKind.FRAME):
            by_ping.setdefault(event.ping, []).append(event)
    parts: list[str] = []
    y = float(AXIS_H)
    for lane in lanes:
        rows = max(lane.rows.values(), default=-1) + 1
        row_h = max(2.0, min(ROW_H_MAX, LANE_H_MAX / rows)) if rows else ROW_H_MAX
        lane_h = max(2 * ROW_H_MAX + 6, rows * row_h + 6)
        lane_frames = frames.get(lane.record.number, []) if lane.record is not None else []
        parts.append(_lane_svg(lane, _Band(y, lane_h, row_h), x, by_ping, result) + _frame_marks(lane_frames, y, x))
        y += lane_h + 2
    parts.append(_session_bands(events, x, AXIS_H, y - AXIS_H) if isinstance(result.scenario.kind, Schedule) else "")
    height = y + 4
    axis = _axis(t_max, x, height)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" width="{LABEL_W + PLOT_W + 20}" '
        f'height="{height:.0f}" data-lanes="{len(lanes)}" data-pings="{len(result.pings)}">'
        + axis
        + "".join(parts)
        + "</svg>"
    )


@dataclass(frozen=True)
class _Band:
    """Where a lane goes down the plot (pixels): its top, its height, and the height of each of its rows."""

    y: float
    height: float
    row_h: float


def _lane_svg(lane: _Lane, band: _Band, x: _Scale, by_ping: dict[int, list[TraceEvent]], result: RunResult) -> str:
    y, lane_h, row_h = band.y, band.height, band.row_h
    record = lane.record
    view = result.controller_view
    theirs = ""
    if record is not None and view is not None:
        their_number = view.connection_id(record.local_address)
        theirs = f" · controller #{their_number}" if their_number is not None else " · controller: no record"
    if record is None:
        first, second, number = "no connection", plural(len(lane.pings), "ping"), ""
    else:
        first = f"conn #{record.number}{theirs}"
        carried = plural(len(lane.pings), "ping") if lane.pings else "carried no ping"
        second = f"{record.alpn or 'no ALPN'} · {record.tls_version or 'cleartext'} · {carried}"
        number = str(record.number)
    bars = "".join(
        _ping_svg(ping, y + 3 + lane.rows[ping.number] * row_h, row_h, x, by_ping.get(ping.number, []))
        for ping in lane.pings
    )
    return (
        f'<g class="lane" data-connection="{number}"><rect class="lane-bg" x="0" y="{y:.1f}" '
        f'width="{LABEL_W + PLOT_W + 20}" height="{lane_h:.1f}"/>'
        f'<text x="6" y="{y + 13:.1f}">{escape(first)}</text><text x="6" y="{y + 26:.1f}">{escape(second)}</text>'
        f"{bars}</g>"
    )


def _frame_marks(frames: Sequence[FrameEvent], y: float, x: _Scale) -> str:
    """A tick per frame along the top of its connection's lane (received above, sent below), its line as title."""
    marks = []
    for frame in frames[:MAX_FRAME_MARKS]:
        top = y + (0.5 if frame.direction is Direction.RECEIVED else 3.0)
        name = frame_name(frame).lower()
        marks.append(
            f'<rect class="frame {name} {frame.direction}" x="{x(frame.at_s):.1f}" y="{top:.1f}" width="1.2" '
            f'height="2.5"><title>{escape(f"{frame.at_s:+.3f}s {describe_frame(frame)}")}</title></rect>'
        )
    return f'<g class="frames">{"".join(marks)}</g>' if marks else ""


def _ping_svg(ping: PingResult, y: float, h: float, x: _Scale, events: Sequence[TraceEvent]) -> str:
    first_try, end = _start(ping), _end(ping)
    started = ping.started_at_s if ping.started_at_s is not None else first_try
    sent = ping.headers_sent_at_s
    edges: list[tuple[str, float, float]] = []
    if started > first_try + 1e-6:
        edges.append(("retrying", first_try, started))
    if ping.tls_started_at_s is not None:
        edges.append(("connect", started, ping.tls_started_at_s))
        if ping.tls_done_at_s is not None:
            edges.append(("tls", ping.tls_started_at_s, ping.tls_done_at_s))
    ready = ping.tls_done_at_s if ping.tls_done_at_s is not None else ping.tls_started_at_s or started
    if sent is not None:
        edges += [("wait", ready, sent), ("answer", sent, end)]
    else:
        edges.append(("wait", ready, end))
    bar_h = max(1.5, h - 2)
    rects = "".join(
        f'<rect class="seg {name}" x="{x(a):.1f}" y="{y:.1f}" width="{max(0.8, x(b) - x(a)):.1f}" '
        f'height="{bar_h:.1f}"/>'
        for name, a, b in edges
        if b >= a
    )
    outcome = {PingOutcome.OK: "ok", PingOutcome.RETRIED_THEN_OK: "retried", PingOutcome.FAILED: "failed"}
    state = outcome[ping.outcome]
    marks = ""
    if state == "failed" and h >= 8:
        marks = f'<text class="mark failed" x="{x(end) + 3:.1f}" y="{y + bar_h - 1:.1f}">✕</text>'
    elif state == "retried" and h >= 8:
        marks = f'<text class="mark retried" x="{x(end) + 3:.1f}" y="{y + bar_h - 1:.1f}">↻{ping.attempts}</text>'
    return (
        f'<g class="ping {state}" data-ping="{ping.number}"><title>{escape(_tooltip(ping, events))}</title>'
        f"{rects}{marks}</g>"
    )


def _tooltip(ping: PingResult, events: Sequence[TraceEvent]) -> str:
    head = f"ping {ping.number}, interval {format_interval(ping.interval_s)} s: "
    head += (
        f"{ping.status} {ping.http_version} in {ping.elapsed_s:.3f} s"
        if ping.ok
        else f"FAILED after {ping.elapsed_s:.3f} s: {ping_error(ping)}"
    )
    if ping.stream_id:
        head += f", stream {ping.stream_id}"
    shown = list(events[:MAX_TITLE_EVENTS])
    lines = [head, *(f"{event.at_s:+.3f}s  {describe(event)}" for event in shown)]
    if len(events) > MAX_TITLE_EVENTS:
        lines.append(f"... and {len(events) - MAX_TITLE_EVENTS} more events")
    return "\n".join(lines)


def _axis(t_max: float, x: _Scale, height: float) -> str:
    step = _nice_step(t_max / 8)
    ticks = []
    for index in range(int(t_max / step) + 1):
        at = index * step
        ticks.append(
            f'<line class="grid" x1="{x(at):.1f}" y1="{AXIS_H - 6}" x2="{x(at):.1f}" y2="{height:.0f}"/>'
            f'<text x="{x(at) + 2:.1f}" y="{AXIS_H - 10}">{at:g} s</text>'
        )
    return f'<g class="axis">{"".join(ticks)}</g>'


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(float(m * magnitude) for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _session_bands(events: Sequence[TraceEvent], x: _Scale, top: float, height: float) -> str:
    """Link down (shaded, from LinkDown to LinkUp again) and each redial, from the session's trace."""
    parts: list[str] = []
    down_since: float | None = None
    for event in events:
        if isinstance(event, LinkDown) and down_since is None:
            down_since = event.at_s
        elif isinstance(event, LinkUp) and event.again and down_since is not None:
            parts.append(_band(down_since, event.at_s, describe(event), x, top, height))
            down_since = None
        elif isinstance(event, Reconnecting):
            parts.append(
                f'<line class="reconnect" x1="{x(event.at_s):.1f}" y1="{top}" x2="{x(event.at_s):.1f}" '
                f'y2="{top + height:.0f}"><title>{escape(describe(event))}</title></line>'
            )
    if down_since is not None and events:
        parts.append(_band(down_since, events[-1].at_s, "link down until the end", x, top, height))
    return f'<g class="session">{"".join(parts)}</g>'


def _band(start: float, end: float, text: str, x: _Scale, top: float, height: float) -> str:
    return (
        f'<rect class="down" x="{x(start):.1f}" y="{top}" width="{max(1.0, x(end) - x(start)):.1f}" '
        f'height="{height:.0f}"><title>{escape(text)}</title></rect>'
    )


@dataclass(frozen=True)
class _ViewRow:
    """One connection, as the switch sent on it and as the controller saw it."""

    number: int
    local_address: str
    alpn: str
    sent: int
    peak: int
    theirs: dict[str, Any] | None  # the controller's record of it
    judged: bool  # the controller gave a view to hold it against
    disputes: tuple[str, ...]


def _view_rows(result: RunResult) -> list[_ViewRow]:
    view = result.controller_view
    judged = view is not None and not view.no_account and not view.error
    return [
        _ViewRow(
            number=record.number,
            local_address=record.local_address,
            alpn=record.alpn or "none",
            sent=sum(1 for ping in result.pings if ping.connection == record.number and ping.status is not None),
            peak=result.peak_in_flight(record.number),
            theirs=view.record_of(record.local_address) if view is not None else None,
            judged=judged,
            disputes=tuple(
                describe_disagreement(d) for d in (view.disagreements if view else ()) if d.connection == record.number
            ),
        )
        for record in result.connections
    ]


def _histogram(histogram: Histogram, name: str, bins: int = 40) -> str:
    if not histogram.count:
        return "<p>no values</p>"
    low, high = histogram.min, histogram.max
    width = (high - low) / bins or 1e-9
    counts = [0] * bins
    for value, count in histogram.buckets():
        counts[min(bins - 1, max(0, int((value - low) / width)))] += count
    plot_w, plot_h, left = 720.0, 160.0, 50.0
    tallest = max(counts)
    bars = "".join(
        f'<rect class="hist" x="{left + i * plot_w / bins:.1f}" y="{20 + plot_h - c / tallest * plot_h:.1f}" '
        f'width="{plot_w / bins - 1:.1f}" height="{c / tallest * plot_h:.1f}"><title>{c} between '
        f"{(low + i * width) * 1000:.1f} and {(low + (i + 1) * width) * 1000:.1f} ms</title></rect>"
        for i, c in enumerate(counts)
    )
    marks = {mark: value for mark, value in histogram.marks().items() if mark != "max"}
    lines = "".join(
        f'<line class="pct" x1="{left + (v - low) / (width * bins) * plot_w:.1f}" y1="14" '
        f'x2="{left + (v - low) / (width * bins) * plot_w:.1f}" y2="{20 + plot_h:.0f}"/>'
        f'<text x="{left + (v - low) / (width * bins) * plot_w + 2:.1f}" y="{12 + 11 * i}">{k} {v * 1000:.1f} ms</text>'
        for i, (k, v) in enumerate(marks.items())
    )
    axis = (
        f'<text x="{left}" y="{plot_h + 36:.0f}">{low * 1000:.1f} ms</text>'
        f'<text x="{left + plot_w - 60}" y="{plot_h + 36:.0f}">{high * 1000:.1f} ms</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="histogram {name}" width="{left + plot_w + 20:.0f}" '
        f'height="{plot_h + 44:.0f}">{bars}{lines}{axis}</svg>'
    )


@dataclass(frozen=True)
class _Distribution:
    """One histogram of a fleet's page: its picture and its percentiles."""

    title: str
    name: str
    svg: Markup
    head: tuple[str, ...]
    row: tuple[str, ...]


def _distribution(title: str, histogram: Histogram, name: str) -> _Distribution:
    marks = {mark: value for mark, value in histogram.marks().items() if mark != "max"}
    svg = Markup(_histogram(histogram, name))  # SVG built here, every text in it escaped
    if not histogram.count:
        return _Distribution(title, name, svg, (), ())
    values = (str(histogram.count), *(f"{v * 1000:.1f} ms" for v in marks.values()), f"{histogram.max * 1000:.1f} ms")
    return _Distribution(title, name, svg, ("n", *marks, "max"), values)
