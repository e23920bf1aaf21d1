"""What the user reads: trace lines, the summary, the verdict, and the ``--json`` object scripts rely on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from controller.config import VIEW_REQUIRED
from sim_switch.results import ControllerFinding, PingResult, RunResult, format_interval, plural
from sim_switch.streams import HTTPCORE_MAX_STREAMS
from sim_switch.tracing import TraceEvent

# Summary lines list at most this many pings, stream ids or failures; --json has them all.
MAX_LISTED = 12
MULTIPLEXED = "multiplexed"  # the controller's finding kind (controller/findings.py) for shared connections


@dataclass(frozen=True)
class Check:
    """One ``expect:`` entry of the scenario, held against the run."""

    expected: str  # e.g. "connections = 1"
    seen: str
    failure: str | None  # None when it held


@dataclass(frozen=True)
class Verdict:
    ok: bool  # every ping got 200, every expectation held, and the controller agrees
    multiplexed: bool  # some connection carried two or more pings at once, and the controller saw it too
    line: str
    checks: tuple[Check, ...]
    failures: tuple[str, ...]


def judge(result: RunResult) -> Verdict:
    failed = [ping for ping in result.pings if not ping.ok]
    checks = tuple(_check_expectations(result))
    failures = [f"ping {ping.number} ({format_interval(ping.interval_s)} s): {ping.error}" for ping in failed]
    failures += [check.failure for check in checks if check.failure]
    view = result.controller_view
    required = result.scenario.expect.controller_view == VIEW_REQUIRED
    one_sided = view is not None and view.no_account is not None
    if view is not None:
        failures += [f"controller view: {problem}" for problem in view.disagreements]
        failures += [f"controller view: {view.error}"] if view.error else []
        if one_sided and required:
            failures.append(f"controller view: required (expect.controller_view), but {view.describe()}")
    switch_saw_it = max((result.peak_in_flight(record.number) for record in result.connections), default=0) >= 2
    if view is not None and view.findings is not None:
        failures += _diagnosis_disagrees(view.findings, switch_saw_it)
    # Proven only when both ends agree: the controller counted the same streams, at the same time. A controller
    # that keeps no account (not dialout's) leaves the switch's view, said as such, unless the scenario requires both.
    multiplexed = switch_saw_it and view is not None and (view.agrees or (one_sided and not required))
    line = _verdict_line(result, failed, switch_saw_it if one_sided else multiplexed, one_sided)
    return Verdict(not failures, multiplexed, line, checks, tuple(failures))


def _diagnosis_disagrees(findings: tuple[ControllerFinding, ...], switch_saw_it: bool) -> list[str]:
    """The controller's own conclusion must be the switch's: multiplexed on both ends, or on neither."""
    controller_saw_it = any(finding.kind == MULTIPLEXED for finding in findings)
    if controller_saw_it == switch_saw_it:
        return []
    kinds = ", ".join(finding.kind for finding in findings) or "no findings"
    if switch_saw_it:
        return [f"controller's diagnosis: the switch had two or more pings at once on a connection, the "
                f"controller does not find them multiplexed ({kinds})"]  # fmt: skip
    return [f"controller's diagnosis: it finds the pings multiplexed, the switch never had two at once on a "
            f"connection ({kinds})"]  # fmt: skip


def _check_expectations(result: RunResult) -> list[Check]:
    expect = result.scenario.expect
    checks: list[Check] = []
    if expect.connections is not None:
        opened = len(result.connections)
        failure = f"expected {plural(expect.connections, 'connection')}, opened {opened}"
        held = opened == expect.connections
        checks.append(Check(f"connections = {expect.connections}", str(opened), None if held else failure))
    if expect.http_version is not None:
        others = [ping for ping in result.pings if ping.http_version != expect.http_version]
        got = ", ".join(f"{ping.http_version or 'no answer'} for ping {ping.number}" for ping in others)
        seen = ", ".join(sorted({ping.http_version or "no answer" for ping in result.pings}))
        failure = f"expected {expect.http_version} for every ping, got {got}"
        checks.append(Check(f"http_version = {expect.http_version}", seen, failure if others else None))
    return checks


def _verdict_line(result: RunResult, failed: list[PingResult], multiplexed: bool, one_sided: bool = False) -> str:
    if result.scenario.persistent is not None:
        return _session_line(result, failed)
    count = len(result.pings)
    if failed:
        reasons = Counter(ping.error for ping in failed)
        reason = next(iter(reasons)) if len(reasons) == 1 else f"{len(reasons)} different errors, see above"
        return f"FAILED: {len(failed)} of {plural(count, 'ping')} failed: {reason}"
    connections = len(result.connections)
    versions = "/".join(sorted({ping.http_version or "?" for ping in result.pings}))
    longest = max(ping.interval_s for ping in result.pings)
    timing = f"{result.wall_time_s:.2f} s for a longest interval of {format_interval(longest)} s"
    whose = " (the switch's view; the controller keeps no account)" if one_sided else ""
    if count == 1:
        return f"NOTHING TO MULTIPLEX{whose}: 1 ping on 1 connection ({versions}), {timing}"
    if multiplexed:
        return (
            f"MULTIPLEXED{whose}: {count} pings as {count} streams on {plural(connections, 'connection')} "
            f"({versions}), {timing}"
        )
    return f"NOT MULTIPLEXED{whose}: {count} pings on {plural(connections, 'connection')} ({versions}), {timing}"


def _session_line(result: RunResult, failed: list[PingResult]) -> str:
    outcomes = Counter(ping.outcome for ping in result.pings)
    count = len(result.pings)
    tally = (
        f"{outcomes['ok']} ok, {outcomes['retried-then-ok']} retried then ok, {outcomes['failed']} failed; "
        f"{plural(result.reconnects, 'reconnect')}, {plural(len(result.connections), 'connection')}"
    )
    if failed:
        reasons = Counter(ping.error for ping in failed)
        reason = next(iter(reasons)) if len(reasons) == 1 else f"{len(reasons)} different errors, see above"
        return f"SESSION FAILED: {len(failed)} of {plural(count, 'ping')} failed for good ({tally}): {reason}"
    peak = max((result.peak_in_flight(record.number) for record in result.connections), default=0)
    return f"SESSION OK: {plural(count, 'ping')}, {tally}, up to {peak} at once, {result.wall_time_s:.2f} s"


def render_event(event: TraceEvent) -> str:
    ping = f"ping {event.ping}" if event.ping is not None else "switch"
    connection = f"conn #{event.connection}" if event.connection is not None else ""
    return f"{event.at_s:+9.3f}s  {ping:<8} {connection:<8} {event.text}"


def render_summary(result: RunResult, verdict: Verdict) -> str:
    connections = result.connections
    alpn = ", ".join(sorted({record.alpn or "none" for record in connections})) or "none"
    handshakes = sum(1 for record in connections if record.tls_version)
    lines = [f"connections opened: {len(connections)} (TLS handshakes: {handshakes}; ALPN: {alpn})"]
    for record in connections:
        streams = [ping.stream_id for ping in result.pings if ping.connection == record.number and ping.stream_id]
        ids = f" (stream ids {', '.join(map(str, streams))})" if 0 < len(streams) <= MAX_LISTED else ""
        lines.append(
            f"  conn #{record.number}  {record.local_address} -> {record.remote_address}  {record.tls_version}  "
            f"ALPN {record.alpn or 'none'}  {plural(len(record.pings), 'ping')}{ids}, "
            f"{result.peak_in_flight(record.number)} at once"
        )
    if result.scenario.persistent is None:
        lines.append("pings:")
        lines += ["  " + _render_ping(ping) for ping in result.pings[:MAX_LISTED]]
        if len(result.pings) > MAX_LISTED:
            slowest = max(result.pings, key=lambda ping: ping.elapsed_s)
            lines.append(f"  ... and {len(result.pings) - MAX_LISTED} more (all in --json); the slowest:")
            lines.append("  " + _render_ping(slowest))
        longest = max(ping.interval_s for ping in result.pings)
        total = sum(ping.interval_s for ping in result.pings)
        lines.append(
            f"wall time: {result.wall_time_s:.3f} s = {_ratio(result.wall_time_s, longest)} the longest interval "
            f"({format_interval(longest)} s), {_ratio(result.wall_time_s, total)} the sum ({total:g} s)"
        )
    else:
        outcomes = Counter(ping.outcome for ping in result.pings)
        lines.append(
            f"pings: {len(result.pings)} sent, {outcomes['ok']} ok, {outcomes['retried-then-ok']} retried then ok, "
            f"{outcomes['failed']} failed; {plural(result.reconnects, 'reconnect')}"
        )
        unusual = [ping for ping in result.pings if ping.outcome != "ok"]
        lines += ["  " + _render_ping(ping) for ping in unusual[:MAX_LISTED]]
        if len(unusual) > MAX_LISTED:
            lines.append(f"  ... and {len(unusual) - MAX_LISTED} more")
    waited = _waited_for_a_stream(result)
    if waited:
        longest_wait = max(ping.stream_wait_s or 0.0 for ping in waited)
        lines.append(
            f"stream waits: {plural(len(waited), 'ping')} waited for a free stream, up to {longest_wait:.3f} s "
            f"(streams: {result.scenario.streams}; `streams: spill` opens another connection instead)"
        )
    lines += [
        f"expect {check.expected}: {'FAILED' if check.failure else 'ok'} ({check.seen})" for check in verdict.checks
    ]
    lines += [f"failure: {failure}" for failure in verdict.failures[:MAX_LISTED]]
    if len(verdict.failures) > MAX_LISTED:
        lines.append(f"failure: ... and {len(verdict.failures) - MAX_LISTED} more (all of them in --json)")
    view = result.controller_view
    if view is not None:
        agreement = (
            "" if view.error or view.no_account else ("; both views agree" if view.agrees else "; the views DISAGREE")
        )
        lines.append(view.describe() + agreement)
    lines.append(verdict.line)
    if view is not None and view.findings:
        lines.append(f"the controller's diagnosis of {view.switch} ({_numbering(result)}):")
        lines += [f"  {finding.severity:<7} {finding.kind}: {finding.sentence}" for finding in view.findings]
    return "\n".join(lines)


def _numbering(result: RunResult) -> str:
    """Which of the controller's connection numbers is which of ours: its sentences use its own."""
    assert result.controller_view is not None
    ours = {record.local_address: record.number for record in result.connections}
    pairs = [(int(record["id"]), ours[str(record["peer"])]) for record in result.controller_view.records
             if str(record["peer"]) in ours]  # fmt: skip
    named = ", ".join(f"#{theirs} is our #{mine}" for theirs, mine in sorted(pairs)[:MAX_LISTED])
    more = ", ..." if len(pairs) > MAX_LISTED else ""
    return f"its conn {named}{more}" if pairs else "its connection numbers"


def _waited_for_a_stream(result: RunResult) -> list[PingResult]:
    return result.queued_for_a_stream(HTTPCORE_MAX_STREAMS)


def _render_ping(ping: PingResult) -> str:
    tries = f" after {ping.attempts} tries" if ping.attempts > 1 else ""
    head = f"ping {ping.number}  interval {format_interval(ping.interval_s):>4} s{tries}  "
    if not ping.ok:
        return f"{head}FAILED after {ping.elapsed_s:.3f} s: {ping.error}"
    stream = f" stream {ping.stream_id}" if ping.stream_id else ""
    overhead_ms = (ping.elapsed_s - ping.interval_s) * 1000
    return (
        f"{head}{ping.status} {ping.http_version}  conn #{ping.connection}{stream}  "
        f"{ping.elapsed_s:.3f} s ({overhead_ms:+.0f} ms over its interval)"
    )


def to_json(result: RunResult, verdict: Verdict) -> dict[str, Any]:
    """The ``--json`` report. Scripts rely on these names: add fields, never rename or remove them."""
    return {
        "scenario": result.scenario.name,
        "mode": "one-shot" if result.scenario.persistent is None else "persistent",
        "controller": result.controller_url,
        "ok": verdict.ok,
        "multiplexed": verdict.multiplexed,
        "verdict": verdict.line,
        "connections_opened": len(result.connections),
        "tls_handshakes": sum(1 for record in result.connections if record.tls_version),
        "alpn": [record.alpn for record in result.connections],
        "wall_time_s": round(result.wall_time_s, 6),
        "longest_interval_s": max(ping.interval_s for ping in result.pings),
        "sum_of_intervals_s": round(sum(ping.interval_s for ping in result.pings), 6),
        "failures": list(verdict.failures),
        "sent": len(result.pings),
        "answered_ok": sum(1 for ping in result.pings if ping.outcome == "ok"),
        "retried_then_ok": sum(1 for ping in result.pings if ping.outcome == "retried-then-ok"),
        "failed": sum(1 for ping in result.pings if ping.outcome == "failed"),
        "reconnects": result.reconnects,
        "streams": result.scenario.streams,
        "pings_that_waited_for_a_stream": len(_waited_for_a_stream(result)),
        "stream_wait_max_s": round(max((ping.stream_wait_s or 0.0 for ping in result.pings), default=0.0), 6),
        "controller_view": _view_json(result),
        "connections": [
            {
                "connection": record.number,
                "local_address": record.local_address,
                "remote_address": record.remote_address,
                "local_port": record.local_port,
                "tls_version": record.tls_version,
                "alpn": record.alpn,
                "cipher": record.cipher,
                "controller_subject": record.controller_subject,
                "pings": list(record.pings),
                "peak_in_flight": result.peak_in_flight(record.number),
            }
            for record in result.connections
        ],
        "pings": [
            {
                "interval_s": ping.interval_s,
                "status": ping.status,
                "http_version": ping.http_version,
                "connection": ping.connection,
                "stream_id": ping.stream_id,
                "local_port": ping.local_port,
                "elapsed_s": round(ping.elapsed_s, 6),
                "error": ping.error,
                "attempts": ping.attempts,
                "outcome": ping.outcome,
                "stream_wait_s": None if ping.stream_wait_s is None else round(ping.stream_wait_s, 6),
            }
            for ping in result.pings
        ],
    }


def _view_json(result: RunResult) -> dict[str, Any] | None:
    view = result.controller_view
    if view is None:
        return None
    return {
        "switch": view.switch,
        "agrees": view.agrees,
        "connections": len(view.records),
        "streams": view.streams,
        "peak_in_flight": view.peak_in_flight,
        "unused_connections": view.unused,
        "disagreements": list(view.disagreements),
        "error": view.error,
        "kept_account": view.no_account is None,
        "no_account": view.no_account,
        "records": list(view.records),
        "findings": None
        if view.findings is None
        else [
            {"kind": f.kind, "severity": f.severity, "connections": list(f.connections), "sentence": f.sentence}
            for f in view.findings
        ],
    }


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else "n/a x"
