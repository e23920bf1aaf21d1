"""One run of the switch, as ``python -m sim_switch`` asks for it (``__main__`` only reads the command line): the
plan checked before any dial, the scenario run (one-shot, session or fleet), its trace shown as it comes, and its
report (the summary or ``--json``, ``--html``) with the exit code it means; and a fleet's report merged from its
shards' ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from dialout.asyncio_seam import smaller_tls_read_buffers
from dialout.collector import pace_for_many_objects
from dialout.config import (
    Config,
    ConfigError,
    Fleet,
    OneShot,
    Scenario,
    Schedule,
    check_controller_url,
    load_config,
)
from dialout.errors import DialoutError
from dialout.h2_seam import check_h2_version
from dialout.pki import PKIError, ensure_switch_certs
from dialout.tls_files import check_other_half, switch_files
from sim_switch.dial.client import run_scenario
from sim_switch.dial.destinations import Destinations
from sim_switch.dial.session import run_session
from sim_switch.dial.settings import RunSettings
from sim_switch.dial.tls import switch_ssl_context
from sim_switch.fleet.bottleneck import CpuShares, cpu_shares
from sim_switch.fleet.cpu_watch import CpuWatch
from sim_switch.fleet.run import Shard, run_fleet, switches_of
from sim_switch.fleet.tally import FleetTally, MergeError, merge, tally, tally_from_json
from sim_switch.fleet.verdict import judge_fleet
from sim_switch.fleet.workers import WorkerError, run_in_workers
from sim_switch.model.events import EventKind, TraceEvent
from sim_switch.model.verdict import judge
from sim_switch.render.fleet import fleet_json, fleet_line, render_fleet
from sim_switch.render.html import ReportFileError, check_report_path, fleet_html, run_html, write_report
from sim_switch.render.repeats import RepeatsHeld
from sim_switch.render.report import render_summary, to_json, verdict_line
from sim_switch.render.trace import event_json, render_event


@dataclass(frozen=True)
class RunOptions:
    """``python -m sim_switch run``'s options."""

    config: Path
    scenario: str
    url: str | None = None
    json: bool = False
    html: Path | None = None
    shard: Shard | None = None
    workers: int | None = None
    verbose: bool = False
    frames: bool = False  # --trace frames


@dataclass(frozen=True)
class MergeOptions:
    """``python -m sim_switch merge``'s: the shards' ``--json`` files, and what to write."""

    files: tuple[Path, ...]
    json: bool = False
    html: Path | None = None


@dataclass(frozen=True)
class Plan:
    """What a run will do, once its config, URLs and certificates have been checked."""

    cfg: Config
    scenario: Scenario
    urls: tuple[str, ...]  # where it may dial
    url: str  # where a one-shot run dials: the one start_with picks (sessions fail over, fleets spread)
    ssl_context: ssl.SSLContext | None  # None: an http:// URL, no certificate to present or check


def run(args: RunOptions) -> int:
    """The run ``args`` ask for; its exit code (``__main__``'s docstring lists them)."""
    logging.basicConfig(level=logging.INFO, format="sim_switch: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request INFO line repeats our trace
    try:
        plan = _plan(args)
    except DialoutError as exc:
        print(f"sim_switch: {exc.told()}", file=sys.stderr)
        return exc.code
    cfg, scenario = plan.cfg, plan.scenario
    fleet = isinstance(scenario.kind, Fleet)
    output = Output(args.json, args.html, args.verbose, frames=args.frames)
    show = TraceSink(scenario, output)
    if not args.json:
        to = plan.url if isinstance(scenario.kind, OneShot) else " | ".join(plan.urls)
        print(
            f"scenario {scenario.name}: {_describe(scenario)} to {to} as {cfg.switch.switch_id}, "
            f"{'HTTP/2 (ALPN h2, http/1.1)' if scenario.http2 else 'HTTP/1.1 only (ALPN http/1.1)'}",
            flush=True,
        )
    # A fleet's switches each make their own TLS context.
    settings = RunSettings(scenario, cfg.switch, None if fleet else plan.ssl_context, trace_frames=output.frames)
    pace_for_many_objects()
    smaller_tls_read_buffers()
    match scenario.kind:
        case Fleet():
            return _run_fleet(cfg, settings, plan.urls, show, Split(args.shard, args.workers), output)
        case OneShot():
            run = run_scenario(settings, plan.url, show)
        case Schedule():
            run = run_session(settings, plan.urls, show)
    try:
        result = asyncio.run(run)
    except KeyboardInterrupt:
        print("sim_switch: interrupted", file=sys.stderr)
        return 1
    finally:
        show.finish()
    verdict = judge(result)
    if args.html is not None:
        _write_html(args.html, run_html(result, verdict, show.events))
    return _report(
        args.json,
        lambda: to_json(result, verdict) | ({"trace": [event_json(e) for e in show.events]} if output.frames else {}),
        lambda: render_summary(result, verdict),
        verdict.exit_code,
        verdict_line(verdict),
    )


def _plan(args: RunOptions) -> Plan:
    """The run the arguments ask for, everything checked that can be before a dial; DialoutError otherwise."""
    check_h2_version()  # the wire bends h2 (dialout/h2_seam.py)
    cfg = load_config(args.config)
    scenario = cfg.scenario(args.scenario)
    urls = (args.url,) if args.url else cfg.switch.controller_urls
    if args.url:
        check_controller_url(args.url, "--url")
    url = Destinations(urls, cfg.switch.start_with, random.random).current
    fleet = isinstance(scenario.kind, Fleet)
    ids = scenario.kind.switch_ids() if isinstance(scenario.kind, Fleet) else [cfg.switch.switch_id]
    if args.frames and fleet:
        raise ConfigError("--trace", "frames are traced for one switch (a one-shot run or a session), not a fleet")
    if (args.shard or args.workers) and not fleet:
        raise ConfigError(
            "--shard" if args.shard else "--workers",
            f"only a fleet scenario is split; {scenario.name!r} is {scenario.kind.mode}",
        )
    if args.html is not None:
        check_report_path(args.html)  # before the run and its certificates: a run is not lost to a bad name
    if urlsplit(url).scheme != "https":
        return Plan(cfg, scenario, urls, url, None)
    if cfg.switch.tls is None:  # the user's own PKI is never touched
        # A fleet asks its controllers for their CPU time as the config's own switch, not one of the fleet.
        _ensure_certs(cfg, args.config, [*ids, cfg.switch.switch_id] if fleet else ids, quiet=fleet)
    # A fleet's switches each get theirs in run_fleet; its first one stands for them in the checks here.
    ssl_context = switch_ssl_context(switch_files(cfg.switch, ids[0]))
    for each in urls:
        check_other_half(cfg, "switch", each, ids[0])
    return Plan(cfg, scenario, urls, url, ssl_context)


class TraceSink:
    """Where a run's trace events go: printed as they come (stdout, or stderr under --json with -v), those of
    the kinds this run shows, and kept for the HTML report's tooltips."""

    def __init__(self, scenario: Scenario, output: Output) -> None:
        json_quiet = output.json and not output.verbose
        self._stream: TextIO | None = None if json_quiet else (sys.stderr if output.json else sys.stdout)
        # A session's requests would drown its story (connections, failures, reconnects): those need -v. A fleet's
        # thousand traces would interleave beyond reading: it shows its summary and a progress line, -v shows all.
        shown: set[EventKind]
        match scenario.kind:
            case OneShot():
                shown = {EventKind.CONNECTION, EventKind.REQUEST, EventKind.SESSION}
            case Schedule():
                shown = {EventKind.CONNECTION, EventKind.SESSION}
            case Fleet():
                shown = set()
        self._shown = shown | ({EventKind.REQUEST, EventKind.DETAIL} if output.verbose else set())
        self._shown |= {EventKind.FRAME} if output.frames else set()
        # The page's tooltips and lanes, and --json's "trace" under --trace frames. A fleet's draws no lanes.
        self._keep = (output.html is not None or (output.json and output.frames)) and not isinstance(
            scenario.kind, Fleet
        )
        self.events: list[TraceEvent] = []
        self._held = RepeatsHeld()  # a link that stays down: a line every few seconds, not one per failed dial

    def __call__(self, event: TraceEvent) -> None:
        if self._keep:
            self.events.append(event)
        if self._stream is None or event.kind not in self._shown:
            return
        self._print(self._held.lines(event))

    def finish(self) -> None:
        """The run is over: say what was held back."""
        if self._stream is not None:
            self._print(self._held.flush())

    def _print(self, lines: list[str]) -> None:
        try:
            for line in lines:
                print(line, file=self._stream, flush=True)
        except BrokenPipeError:
            # The reader went away (`| head`): stop tracing, but let the run finish and account for its pings.
            self._stream = None


def _write_html(path: Path, html: str) -> None:
    try:
        write_report(path, html)
    except (OSError, ReportFileError) as exc:  # the run's own report still goes out
        print(f"sim_switch: no HTML report: {exc}", file=sys.stderr)
        return
    print(f"sim_switch: HTML report: {path}", file=sys.stderr)


def _ensure_certs(cfg: Config, config_path: Path, ids: list[str], quiet: bool) -> None:
    if quiet:  # one line for the fleet's certificates, not one per switch
        logging.getLogger("dialout.pki").setLevel(logging.WARNING)
    fleet = None if quiet else cfg.controller.switches  # (a fleet's ids come from its pattern)
    written = ensure_switch_certs(cfg.switch.certs_dir, ids, fleet, str(config_path))
    if quiet and written:
        print(f"sim_switch: issued {len(written) // 2} certificates in {cfg.switch.certs_dir}", file=sys.stderr)


@dataclass(frozen=True)
class Output:
    """How a run is told: ``--json``, ``--html FILE``, ``-v``, ``--trace frames``."""

    json: bool
    html: Path | None
    verbose: bool
    frames: bool = False  # --trace frames: every HTTP/2 frame, shown, in --json's "trace" and the page's lanes


@dataclass(frozen=True)
class Split:
    """How a fleet is split: ``--shard I/N`` (this process runs that shard), ``--workers N`` (over N processes)."""

    shard: Shard | None
    workers: int | None


def _run_fleet(
    cfg: Config,
    settings: RunSettings,
    urls: tuple[str, ...],
    show: Callable[[TraceEvent], None],
    split: Split,
    output: Output,
) -> int:
    scenario, shard = settings.scenario, split.shard
    assert isinstance(scenario.kind, Fleet)
    workers = max(1, min(len(switches_of(scenario.kind, shard)), split.workers or os.cpu_count() or 1))
    asking = _asking(cfg, cleartext=urlsplit(urls[0]).scheme == "http")
    progress = Progress(sys.stderr)
    try:
        with CpuWatch(urls, asking, workers) as watch:
            if workers == 1:
                result = asyncio.run(run_fleet(settings, urls, show, progress, shard))
                fleet_tally = tally(result)
            else:
                trace = render_event if output.verbose else None
                fleet_tally = run_in_workers(settings, urls, shard, workers, progress, trace)
    except KeyboardInterrupt:
        print("sim_switch: interrupted", file=sys.stderr)
        return 1
    except (WorkerError, MergeError) as exc:  # the run's own workers: a failed run, not bad input
        print(f"sim_switch: {exc.told()}", file=sys.stderr)
        return 1
    progress.finish()
    shares = cpu_shares(fleet_tally, watch.samples)
    return _report_fleet(fleet_tally, shard is None, output.json, output.html, shares)


def _asking(cfg: Config, cleartext: bool) -> tuple[ssl.SSLContext | None, str] | None:
    """How a fleet asks its controllers for their CPU time: as the config's own switch (not one of the fleet,
    whose accounts would then count the asking), or not at all when that switch has no certificate here."""
    if cleartext:
        return None, cfg.switch.switch_id
    try:
        return switch_ssl_context(switch_files(cfg.switch, cfg.switch.switch_id)), cfg.switch.switch_id
    except PKIError:
        return None


def _report_fleet(
    fleet_tally: FleetTally, whole: bool, as_json: bool, html: Path | None, shares: CpuShares | None = None
) -> int:
    """``shares``: who used how much CPU, when this process ran the fleet (a merge of shards cannot know the
    controllers')."""
    verdict = judge_fleet(fleet_tally, whole)
    if html is not None:
        _write_html(html, fleet_html(fleet_tally, verdict, shares))
    return _report(
        as_json,
        lambda: fleet_json(fleet_tally, verdict, shares),
        lambda: render_fleet(fleet_tally, verdict, shares),
        0 if verdict.ok else 1,
        fleet_line(fleet_tally, verdict),
    )


def merge_shards(args: MergeOptions) -> int:
    """``python -m sim_switch merge SHARD.json ...``: the fleet's report from its shards' ``--json``."""
    try:
        if args.html is not None:
            check_report_path(args.html)
        parts = [tally_from_json(_read_shard(path).get("tally"), str(path)) for path in args.files]
        merged = merge(parts)
    except DialoutError as exc:
        print(f"sim_switch: merge: {exc.told()}", file=sys.stderr)
        return exc.code
    return _report_fleet(merged, True, args.json, args.html)


def _read_shard(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MergeError(f"{path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MergeError(f"{path}: not the --json of a fleet run ({exc})") from exc
    if not isinstance(data, dict):
        raise MergeError(f"{path}: not the --json of a fleet run")
    return data


def _report(
    as_json: bool, report: Callable[[], dict[str, Any]], summary: Callable[[], str], code: int, verdict: str
) -> int:
    """stdout: exactly one JSON object, or the summary; with --json a failure is also one line on stderr. Returns
    ``code``, the exit code."""
    if as_json:
        print(json.dumps(report(), indent=2))
        if code:
            print(f"sim_switch: {verdict}", file=sys.stderr)
    else:
        print(summary(), flush=True)
    return code


class Progress:
    """A progress line on stderr for a run that lasts more than a couple of seconds: redrawn in place on a
    terminal, a line per tenth of the run otherwise (a log should not fill with carriage returns)."""

    QUIET_FOR_S = 2.0

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._tty = stream.isatty()
        self._last_tenth = 0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if time.monotonic() - self._started < self.QUIET_FOR_S:
            return
        tenth = done * 10 // total
        if not self._tty and tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        bar = "#" * (done * 30 // total)
        start, end = ("\r", "") if self._tty else ("", "\n")
        self._stream.write(f"{start}fleet: [{bar:<30}] {done}/{total} switches done{end}")
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn and self._tty:
            self._stream.write("\n")


def _describe(scenario: Scenario) -> str:
    match scenario.kind:
        case Fleet() as fleet:
            ramp = f", starts spread over {fleet.ramp_up_s:g} s" if fleet.ramp_up_s else ""
            each = f"each {fleet.pings} concurrent pings of {fleet.interval_s:g} s"
            return f"a fleet of {fleet.switches} switches, {each}{ramp}"
        case OneShot(pings_s):
            intervals = ", ".join(f"{interval:g}" for interval in pings_s)
            return f"{len(pings_s)} concurrent pings ({intervals} s)"
        case Schedule() as schedule:
            every = f"{schedule.batch} ping(s) of {schedule.interval_s:g} s every {schedule.every_s:g} s"
            span = f"{schedule.count} pings in all" if schedule.duration_s is None else f"for {schedule.duration_s:g} s"
            return f"a persistent session, {every} {span}"
