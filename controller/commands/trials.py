"""``python -m controller trials``: serve as ``serve`` does, and put the first switch that dials in (or
``--switch``) through the plan (``controller/trials/plan.py``), then print a scorecard.

stdout carries each trial as it starts and ends, then the scorecard; the log goes to stderr as ever. ``--json
FILE`` writes the results (never over a file that is not a trials report of ours). Exit 0 when every trial passed
(or only noted), 1 when one failed or no switch came, 2 for bad input.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig

from controller.accounts.connections import ConnectionRegistry
from controller.http.app import Unavailable
from controller.server.serve import ALPN_PROTOCOLS, Listeners, new_registry, serve
from controller.server.tls_actions import TLSActions
from controller.trials import catalogue
from controller.trials.bench import Bench
from controller.trials.plan import PLAN, TrialSpec
from controller.trials.results import TrialResult, Verdict
from dialout.config import Config
from dialout.errors import ConfigError

GENERATOR = "dialout trials"
WAIT_FOR_SWITCH_S = 120.0


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
    lines = [f"{spec.name.value:<20} up to {spec.deadline_s:>4.0f} s  {spec.does}" for spec in PLAN]
    total = sum(spec.deadline_s for spec in PLAN)
    return "\n".join([*lines, f"the plan: {len(PLAN)} trials, at most {total:.0f} s (each ends by its deadline)"])


def check_json_path(path: Path) -> None:
    """Before serving: the report may go to ``path`` (its directory exists; nothing there, or a report of ours)."""
    if not path.parent.is_dir():
        raise ConfigError("--json", f"{path}: no such directory {path.parent}")
    if path.exists():
        try:
            ours = json.loads(path.read_text(encoding="utf-8")).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ConfigError("--json", f"{path}: exists and is not a dialout trials report; not overwriting it")


async def run_trials(
    cfg: Config,
    ssl_context: ssl.SSLContext,
    listeners: Listeners,
    plan: Sequence[TrialSpec],
    switch: str | None,
    json_path: Path | None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    registry = new_registry(cfg.controller)
    results: list[TrialResult] = []
    found: list[str] = []

    tls = TLSActions(ssl_context, cfg.controller, ALPN_PROTOCOLS)

    async def director(config: HypercornConfig, unavailable: Unavailable) -> None:
        try:
            await _direct(Bench(config, registry, unavailable, tls, switch), plan, results, found)
        finally:
            stop.set()

    await serve(cfg.controller, ssl_context, listeners, stop.wait, registry, alongside=director)
    if not found:
        print(f"trials: no switch dialled in within {WAIT_FOR_SWITCH_S:.0f} s", flush=True)
        return 1
    print(scorecard(found[0], results), flush=True)
    if len(results) < len(plan):
        print(f"trials: stopped after {len(results)} of {len(plan)} trials", flush=True)
    if json_path is not None:
        _write_json(json_path, report(found[0], results, registry))
    complete = len(results) == len(plan)
    return 0 if complete and all(result.verdict is not Verdict.FAIL for result in results) else 1


async def _direct(bench: Bench, plan: Sequence[TrialSpec], results: list[TrialResult], found: list[str]) -> None:
    print(f"trials: waiting for {bench.switch or 'a switch'} to dial in", flush=True)
    switch = await bench.first_switch(time.monotonic() + WAIT_FOR_SWITCH_S)
    if switch is None:
        return
    found.append(switch)
    print(f"trials: {switch} dialled in; {len(plan)} trials", flush=True)
    for spec in plan:
        print(f"  {spec.name.value}: the controller {spec.does}", flush=True)
        result = await catalogue.run(bench, spec)
        results.append(result)
        print(f"  {spec.name.value}: {result.verdict.value.upper()}: {result.sentence}", flush=True)


def scorecard(switch: str, results: Sequence[TrialResult]) -> str:
    counts = {verdict: sum(1 for r in results if r.verdict is verdict) for verdict in Verdict}
    lines = [f"\nscorecard for {switch}:"]
    lines += [f"  {r.verdict.value.upper():<5} {r.name:<20} {r.sentence}" for r in results]
    lines.append(
        f"{counts[Verdict.PASS]} passed, {counts[Verdict.FAIL]} failed, {counts[Verdict.NOTE]} noted "
        f"of {len(results)} trials"
    )
    return "\n".join(lines)


def report(switch: str, results: Sequence[TrialResult], registry: ConnectionRegistry) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "switch": switch,
        "passed": sum(1 for r in results if r.verdict is Verdict.PASS),
        "failed": sum(1 for r in results if r.verdict is Verdict.FAIL),
        "noted": sum(1 for r in results if r.verdict is Verdict.NOTE),
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
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    check_json_path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
