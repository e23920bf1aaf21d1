"""``python -m sim_switch``: dial the controller, fire a scenario's pings at once, trace and judge them.

stdout carries the trace and the summary, or with ``--json`` exactly one JSON object; stderr carries errors.
Exit codes: 0 every ping got 200 and every expectation held, 1 otherwise, 2 usage, config or certificate error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from controller.config import ConfigError, Scenario, check_controller_url, load_config
from controller.pki import PKIError, ensure_certs
from sim_switch.client import run_scenario
from sim_switch.report import judge, render_event, render_summary, to_json
from sim_switch.session import run_session
from sim_switch.tls import SwitchSetupError, client_ssl_context
from sim_switch.tracing import CONNECTION, DETAIL, REQUEST, SESSION, TraceEvent


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # stdout's reader went away (`| head`): say nothing more, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="sim_switch: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request INFO line repeats our trace
    try:
        cfg = load_config(args.config)
        scenario = cfg.scenario(args.scenario)
        url = args.url or cfg.switch.controller_url
        if args.url:
            check_controller_url(args.url, "--url")
        ensure_certs(cfg.switch.certs_dir, cfg.controller.hostnames, [cfg.switch.switch_id])
        ssl_context = client_ssl_context(cfg.switch.certs_dir, cfg.switch.switch_id)
    except (ConfigError, PKIError, SwitchSetupError) as exc:
        print(f"sim_switch: {exc}", file=sys.stderr)
        return 2

    trace_stream = None if args.json and not args.verbose else (sys.stderr if args.json else sys.stdout)
    # A session's requests would drown its story (connections, failures, reconnects): those need -v.
    shown = {CONNECTION, REQUEST, SESSION} if scenario.persistent is None else {CONNECTION, SESSION}
    if args.verbose:
        shown |= {REQUEST, DETAIL}

    def show(event: TraceEvent) -> None:
        nonlocal trace_stream
        if trace_stream is None or event.kind not in shown:
            return
        try:
            print(render_event(event), file=trace_stream, flush=True)
        except BrokenPipeError:
            # The reader went away (`| head`): stop tracing, but let the run finish and account for its pings.
            trace_stream = None

    if not args.json:
        print(f"scenario {scenario.name}: {_describe(scenario)} to {url} as {cfg.switch.switch_id}, "
              f"{'HTTP/2 (ALPN h2, http/1.1)' if scenario.http2 else 'HTTP/1.1 only (ALPN http/1.1)'}",
              flush=True)  # fmt: skip
    per_connection = cfg.controller.max_concurrent_streams  # what our controller takes; httpcore caps it at 100
    if scenario.persistent is None:
        run = run_scenario(scenario, url, ssl_context, cfg.switch.request_timeout_s, show, cfg.switch.switch_id,
                           streams_per_connection=per_connection)  # fmt: skip
    else:
        run = run_session(scenario, url, ssl_context, cfg.switch, show, streams_per_connection=per_connection)
    try:
        result = asyncio.run(run)
    except KeyboardInterrupt:
        print("sim_switch: interrupted", file=sys.stderr)
        return 1
    verdict = judge(result)
    if args.json:
        print(json.dumps(to_json(result, verdict), indent=2))
        if not verdict.ok:
            print(f"sim_switch: {verdict.line}", file=sys.stderr)
    else:
        print(render_summary(result, verdict), flush=True)
    return 0 if verdict.ok else 1


def _describe(scenario: Scenario) -> str:
    schedule = scenario.persistent
    if schedule is None:
        intervals = ", ".join(f"{interval:g}" for interval in scenario.pings_s)
        return f"{len(scenario.pings_s)} concurrent pings ({intervals} s)"
    span = f"for {schedule.duration_s:g} s" if schedule.duration_s is not None else f"{schedule.count} pings in all"
    return (
        f"a persistent session, {schedule.batch} ping(s) of {schedule.interval_s:g} s every {schedule.every_s:g} s "
        f"{span}"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sim_switch",
        description="The switch end of the dial-out pair: concurrent pings to the controller, traced, with a "
        "verdict on whether they were multiplexed over one HTTP/2 connection.",
    )
    parser.add_argument("--config", type=Path, default=Path("config.yaml"), help="default: %(default)s")
    parser.add_argument("--scenario", default="seed", help="a scenario in the config (default: %(default)s)")
    parser.add_argument("--url", help="the controller's base URL (default: switch.controller_url)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the trace")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every httpcore step (on stderr with --json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
