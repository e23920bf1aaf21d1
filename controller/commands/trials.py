"""``python -m controller trials``: serve as ``serve`` does, and put the first switch that dials in (or
``--switch``) through the plan (``controller/trials/plan.py``), then print a scorecard.

stdout carries each trial as it starts and ends, then the scorecard; the log goes to stderr as ever. ``--json
FILE`` writes the results, ``--html FILE`` a page of them (``trials_page``), never over a file that is not ours;
both are written whatever went wrong (a trial that broke, a shutdown that had to cut streams), and say it.
Exit codes: ``EXIT_CODES``. A trial whose precondition never happened (no request to refuse, no connection to
reset) is "not exercised", with what the client must do for it to run (``TrialSpec.needs``; ``--list`` says what
traffic keeps every trial fed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.accounts.connections import ConnectionRegistry
from controller.commands import trials_page
from controller.http.app import Unavailable
from controller.server.hypercorn_seam import DialoutConfig
from controller.server.serve import ALPN_PROTOCOLS, Listeners, Stopped, log_stopped, new_registry, serve
from controller.server.tls_actions import TLSActions
from controller.trials import catalogue
from controller.trials.bench import Bench, target_of
from controller.trials.plan import PLAN, TRAFFIC, TrialSpec
from controller.trials.results import TrialResult, Verdict
from dialout.config import ControllerConfig
from dialout.errors import ConfigError
from dialout.loop_lag import LoopLag
from dialout.signals import TRIALS_OVER

GENERATOR = trials_page.GENERATOR
INCONCLUSIVE_EXIT = 3
NOT_EXERCISED_EXIT = 4
WAIT_FOR_SWITCH_S = 120.0
EXIT_CODES = {
    0: "every trial passed (or only noted)",
    1: "a trial failed, the plan stopped early, or no switch dialled in",
    2: "usage or config error",
    INCONCLUSIVE_EXIT: "none failed, but one was inconclusive: the controller's own loop lagged more than its judgment "
    "holds through (run it again on a quieter machine)",
    NOT_EXERCISED_EXIT: "none failed, but one was not exercised: the client did not give it what it acts on",
}


def choose(only: str | None) -> tuple[TrialSpec, ...]:
    """The trials ``--only a,b`` names, in the plan's order (all of them without it); a name not in the plan is a
    ConfigError (exit 2)."""
    if only is None:
        return PLAN
    names = [name.strip() for name in only.split(",") if name.strip()]
    known = {spec.name.value for spec in PLAN}
    for name in names:
        if name not in known:
            raise ConfigError("--only", f"no trial named {name!r} (known: {', '.join(sorted(known))})")
    return tuple(spec for spec in PLAN if spec.name.value in names)


def listing() -> str:
    """Each trial: how long, what the controller does, and what the client must do for it to run."""
    lines = []
    for spec in PLAN:
        lines.append(f"{spec.name.value:<20} up to {spec.deadline_s:>4.0f} s  {spec.does}")
        lines.append(f"{'':<33}needs: the client to {spec.needs}")
    total = sum(spec.deadline_s for spec in PLAN)
    return "\n".join(
        [
            *lines,
            f"the plan: {len(PLAN)} trials, at most {total:.0f} s (each ends by its deadline)",
            f"traffic: {TRAFFIC}",
        ]
    )


def check_json_path(path: Path) -> None:
    """Before serving: the report may go to ``path`` (its directory exists; nothing there, or a report of ours)."""
    _check_output("--json", path, _a_report_of_ours, "a dialout trials report")


def check_html_path(path: Path) -> None:
    """As ``check_json_path``, for ``--html``: only a page of ours is replaced."""
    _check_output("--html", path, trials_page.is_ours, "a dialout trials page")


def _check_output(option: str, path: Path, ours: Callable[[Path], bool], what: str) -> None:
    if not path.parent.is_dir():
        raise ConfigError(option, f"{path}: no such directory {path.parent}")
    if path.exists() and not ours(path):
        raise ConfigError(option, f"{path}: exists and is not {what}; not overwriting it")


def _a_report_of_ours(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("generator") == GENERATOR)
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class Outputs:
    """Where the results go besides stdout: ``--json FILE`` and ``--html FILE``."""

    json: Path | None = None
    html: Path | None = None

    def check(self) -> None:
        """Before serving: each may be written (its directory exists; nothing there, or a report of ours)."""
        if self.json is not None:
            check_json_path(self.json)
        if self.html is not None:
            check_html_path(self.html)


async def run_trials(
    cfg: ControllerConfig,
    ssl_context: ssl.SSLContext,
    listeners: Listeners,
    plan: Sequence[TrialSpec],
    switch: str | None,
    outputs: Outputs,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    registry = new_registry(cfg, keep_account=False)  # the scorecard is the trials' record
    results: list[TrialResult] = []
    benches: list[Bench] = []
    tls = TLSActions(ssl_context, cfg, ALPN_PROTOCOLS)

    async def director(config: DialoutConfig, unavailable: Unavailable) -> None:
        async with LoopLag.of_running_loop().running() as lag:
            benches.append(Bench(config, registry, unavailable, tls, switch, lag, cfg.proxy_names))
            try:
                await _direct(benches[0], plan, results)
            finally:
                config.goodbye = TRIALS_OVER  # a switch running --scenario trials ends its session on these words
                stop.set()

    stopped = await serve(cfg, ssl_context, listeners, stop.wait, registry, alongside=director)
    log_stopped(stopped)
    bench = benches[0] if benches else None
    if bench is None or bench.switch is None or not bench.arrived:
        print(f"trials: no switch dialled in within {WAIT_FOR_SWITCH_S:.0f} s", flush=True)
        return 1
    print(scorecard(bench.switch, results), flush=True)
    if len(results) < len(plan):
        print(f"trials: stopped after {len(results)} of {len(plan)} trials", flush=True)
    data = report(bench.switch, results, registry, bench.t0, stopped)
    if outputs.json is not None:
        _write(outputs.json, json.dumps(data, indent=2) + "\n", check_json_path)
    if outputs.html is not None:
        _write(outputs.html, trials_page.render(data), check_html_path)
    return exit_code(results, len(plan))


def exit_code(results: Sequence[TrialResult], planned: int) -> int:
    verdicts = {result.verdict for result in results}
    if len(results) < planned or Verdict.FAIL in verdicts:
        return 1
    if Verdict.INCONCLUSIVE in verdicts:
        return INCONCLUSIVE_EXIT
    return NOT_EXERCISED_EXIT if Verdict.NOT_EXERCISED in verdicts else 0


async def _direct(bench: Bench, plan: Sequence[TrialSpec], results: list[TrialResult]) -> None:
    print(f"trials: waiting for {bench.switch or 'a switch'} to dial in", flush=True)
    switch = await bench.first_switch(time.monotonic() + WAIT_FOR_SWITCH_S)
    if switch is None:
        return
    print(f"trials: {switch} dialled in; {len(plan)} trials", flush=True)
    for spec in plan:
        print(f"  {spec.name.value}: the controller {spec.does}", flush=True)
        result = await catalogue.run(bench, spec)
        results.append(result)
        print(f"  {spec.name.value}: {_shown(result.verdict)}: {result.sentence}", flush=True)


def scorecard(switch: str, results: Sequence[TrialResult]) -> str:
    counts = {verdict: sum(1 for r in results if r.verdict is verdict) for verdict in Verdict}
    lines = [f"\nscorecard for {switch}:"]
    lines += [f"  {_shown(r.verdict):<5} {r.name:<20} {r.sentence}" for r in results]  # INCONCLUSIVE: longer
    inconclusive = f", {counts[Verdict.INCONCLUSIVE]} inconclusive" if counts[Verdict.INCONCLUSIVE] else ""
    unexercised = f", {counts[Verdict.NOT_EXERCISED]} not exercised" if counts[Verdict.NOT_EXERCISED] else ""
    lines.append(
        f"{counts[Verdict.PASS]} passed, {counts[Verdict.FAIL]} failed, {counts[Verdict.NOTE]} noted{inconclusive}"
        f"{unexercised} of {len(results)} trials"
    )
    return "\n".join(lines)


def _shown(verdict: Verdict) -> str:
    """``PASS``, ``NOT EXERCISED``: a verdict as the scorecard prints it."""
    return verdict.value.replace("_", " ").upper()


def report(
    switch: str, results: Sequence[TrialResult], registry: ConnectionRegistry, t0: float, stopped: Stopped
) -> dict[str, Any]:
    """The results as JSON, with the switch's connections, and its timeline: each connection and stream the
    account still holds, in seconds since the trials began (``t0``, monotonic), as the steps' times are; and how
    the controller stopped (``shutdown``: the streams it had to cut when its grace ran out)."""
    return {
        "generator": GENERATOR,
        "switch": switch,
        "passed": sum(1 for r in results if r.verdict is Verdict.PASS),
        "failed": sum(1 for r in results if r.verdict is Verdict.FAIL),
        "noted": sum(1 for r in results if r.verdict is Verdict.NOTE),
        "inconclusive": sum(1 for r in results if r.verdict is Verdict.INCONCLUSIVE),
        "not_exercised": sum(1 for r in results if r.verdict is Verdict.NOT_EXERCISED),
        "trials": [
            {
                "name": r.name,
                "verdict": r.verdict.value,
                "sentence": r.sentence,
                "started_s": r.started_s,
                "ended_s": r.ended_s,
                "steps": [
                    {"at_s": s.at_s, "by": s.by, "what": s.what, "connection": s.connection, "stream": s.stream}
                    for s in r.steps
                ],
            }
            for r in results
        ],
        "connections": [c.to_json() for c in registry.connections(switch)],
        "timeline": _timeline(switch, registry, t0),
        "shutdown": dataclasses.asdict(stopped),
    }


def _timeline(switch: str, registry: ConnectionRegistry, t0: float) -> dict[str, list[dict[str, Any]]]:
    def since(moment: float | None) -> float | None:
        return None if moment is None else round(moment - t0, 3)

    connections = [c for c in registry.connections(switch) if c.opened >= t0]
    return {
        "connections": [
            {
                "id": c.id,
                "dialled_s": since(c.hello_at or c.opened),
                "opened_s": since(c.opened),
                "closed_s": since(c.closed),
                "alpn": c.alpn,
            }
            for c in connections
        ],
        "streams": [
            {
                "connection": span.connection.id,
                "stream": span.stream_id,
                "target": target_of(span),
                "started_s": since(span.started),
                "ended_s": since(span.ended),
            }
            for span in registry.spans()
            if span.connection.switch == switch and span.started >= t0
        ],
    }


def _write(path: Path, text: str, check: Callable[[Path], None]) -> None:
    check(path)  # again: a file the user put there while the trials ran is theirs
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
