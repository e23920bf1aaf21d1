"""What the user reads: trace lines, the summary, the verdict, and the ``--json`` object scripts rely on."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from typing import Any

from dialout.config import Schedule
from dialout.text import plural
from sim_switch.model.results import GiveUpReason, LateAnswer, PingOutcome, PingResult, RunResult, format_interval
from sim_switch.model.verdict import (
    Check,
    CheckFailed,
    DiagnosisDisagrees,
    Expected,
    Outcome,
    PingFailed,
    Problem,
    Verdict,
    ViewDisagrees,
    ViewRequired,
    ViewUnavailable,
)
from sim_switch.render.failures import headline, sentence
from sim_switch.render.trace import describe_disagreement, describe_loss, describe_view

# Summary lines list at most this many pings, stream ids or failures; --json has them all.
MAX_LISTED = 12
_GIVE_UP_WORDS = {
    GiveUpReason.NOT_RETRY_SAFE: "not safe to retry: it may have been processed",
    GiveUpReason.TIME_UP: "gave up",
    GiveUpReason.LINK_DOWN: "the link gave up",
}


def ping_error(ping: PingResult) -> str | None:
    """Why the ping failed, in one line (``--json``: ``error``); None when it was answered."""
    if ping.failure is None:
        return None
    text = sentence(ping.failure)
    if ping.gave_up is not None:
        gave_up = ping.gave_up
        tries = f"{gave_up.tries} {'try' if gave_up.tries == 1 else 'tries'}"
        text += f" ({_GIVE_UP_WORDS[gave_up.reason]}; {tries} over {gave_up.over_s:.1f} s)"
    return text


def problem_text(problem: Problem) -> str:
    match problem:
        case PingFailed(ping):
            return f"ping {ping.number} ({format_interval(ping.interval_s)} s): {ping_error(ping)}"
        case CheckFailed(check) if check.key is Expected.CONNECTIONS:
            return f"expected {plural(int(check.expected), 'connection')}, opened {check.seen[0]}"
        case CheckFailed(check):
            others = [
                (number, version) for number, version in enumerate(check.seen, start=1) if version != check.expected
            ]
            got = ", ".join(f"{version or 'no answer'} for ping {number}" for number, version in others)
            return f"expected {check.expected} for every ping, got {got}"
        case ViewDisagrees(disagreement):
            return f"controller view: {describe_disagreement(disagreement)}"
        case ViewUnavailable(error):
            return f"controller view: GET /connections failed: {sentence(error)}"
        case ViewRequired(no_account):
            return (
                f"controller view: required (expect.controller_view), but the controller keeps no account of its "
                f"connections ({no_account}): the switch's view alone"
            )
        case DiagnosisDisagrees(switch_saw_it, kinds):
            found = ", ".join(kinds) or "no findings"
            if switch_saw_it:
                return (
                    f"controller's diagnosis: the switch had two or more pings at once on a connection, the "
                    f"controller does not find them multiplexed ({found})"
                )
            return (
                f"controller's diagnosis: it finds the pings multiplexed, the switch never had two at once on a "
                f"connection ({found})"
            )


def problem_lines(verdict: Verdict) -> list[str]:
    """One line per problem (``--json``'s ``failures``)."""
    return [problem_text(problem) for problem in verdict.problems]


def grouped_problem_lines(verdict: Verdict) -> list[str]:
    """As ``problem_lines``, but pings that failed the same way are one line: a controller that went away is one
    reason, not 75 lines of it."""
    lines: list[str] = []
    failed: dict[str, list[PingResult]] = {}
    for problem in verdict.problems:
        if isinstance(problem, PingFailed) and problem.ping.failure is not None:
            failed.setdefault(sentence(problem.ping.failure), []).append(problem.ping)
        else:
            lines.append(problem_text(problem))
    for reason, pings in failed.items():
        if len(pings) == 1:
            lines.append(problem_text(PingFailed(pings[0])))
            continue
        numbers = [ping.number for ping in pings]
        which = (
            f"pings {numbers[0]}-{numbers[-1]}"
            if numbers == list(range(numbers[0], numbers[-1] + 1))
            else "pings " + ", ".join(map(str, numbers[:MAX_LISTED])) + (", ..." if len(numbers) > MAX_LISTED else "")
        )
        lines.append(f"{which} ({len(pings)} of them): {reason}{_gave_up_range(pings)}")
    return lines


def _gave_up_range(pings: list[PingResult]) -> str:
    """`` (gave up; 1-19 tries over 61.2-64.2 s)``: how a group of pings a session gave up on was tried."""
    given_up = [ping.gave_up for ping in pings if ping.gave_up is not None]
    if not given_up:
        return ""
    tries = sorted({gave_up.tries for gave_up in given_up})
    over = sorted(gave_up.over_s for gave_up in given_up)
    tried = f"{tries[0]}" if len(tries) == 1 else f"{tries[0]}-{tries[-1]}"
    spent = f"{over[0]:.1f}" if over[0] == over[-1] else f"{over[0]:.1f}-{over[-1]:.1f}"
    words = sorted({_GIVE_UP_WORDS[gave_up.reason] for gave_up in given_up})
    return f" ({'; '.join(words)}; {tried} {'try' if tries[-1] == 1 else 'tries'} over {spent} s)"


def check_text(verdict: Verdict) -> list[str]:
    lines = []
    for check in verdict.checks:
        seen = ", ".join(sorted({str(value or "no answer") for value in check.seen}))
        lines.append(f"expect {check.key} = {check.expected}: {'ok' if check.held else 'FAILED'} ({seen})")
    return lines


def verdict_line(verdict: Verdict) -> str:
    """The run's last line: what the pings showed, or, for a run that failed on something else than its pings
    (an expectation, the controller's view), why it failed."""
    if verdict.ok and verdict.inconclusive:
        return f"INCONCLUSIVE: {shown_line(verdict)}; {inconclusive_text(verdict.inconclusive[0])}"
    if verdict.ok or _pings_failed(verdict):
        return shown_line(verdict)
    return result_line(verdict)


def inconclusive_text(late: LateAnswer) -> str:
    theirs = f" and the controller's {late.controller_lag_s * 1000:.0f} ms" if late.controller_lag_s else ""
    return (
        f"ping {late.ping}'s answer was read {late.late_s * 1000:.0f} ms after the controller sent it, while this "
        f"switch's own event loop lagged {late.switch_lag_s * 1000:.0f} ms{theirs}: too busy a machine to tell "
        "whether the answer was late on its way (run again on a quieter one)"
    )


def result_line(verdict: Verdict) -> str:
    """Whether the run met what was asked of it, apart from what the pings showed: "as expected (...)", or why
    it failed."""
    if verdict.ok:
        held = ", ".join(_expected_text(check) for check in verdict.checks)
        return f"as expected ({held})" if held else "as expected"
    if _pings_failed(verdict):
        return "the run failed"
    more = len(verdict.problems) - 1
    return f"FAILED: {problem_text(verdict.problems[0])}" + (
        f" (and {plural(more, 'more problem')}, above)" if more else ""
    )


def _pings_failed(verdict: Verdict) -> bool:
    return verdict.outcome in (Outcome.FAILED, Outcome.SESSION_FAILED)


def _expected_text(check: Check) -> str:
    match check.key:
        case Expected.CONNECTIONS:
            return plural(int(check.expected), "connection")
        case Expected.HTTP_VERSION:
            return str(check.expected)


def shown_line(verdict: Verdict) -> str:
    """What the pings showed: multiplexed or not, the session's tally, or how many failed."""
    count = verdict.pings
    whose = " (the switch's view; the controller keeps no account)" if verdict.one_sided else ""
    versions = "/".join(verdict.http_versions)
    timing = (
        f"{verdict.wall_time_s:.2f} s for a longest interval of {format_interval(verdict.longest_interval_s)} s"
        if count
        else ""
    )
    match verdict.outcome:
        case Outcome.SESSION_OK | Outcome.SESSION_FAILED:
            tally = (
                f"{verdict.outcomes[PingOutcome.OK]} ok, {verdict.outcomes[PingOutcome.RETRIED_THEN_OK]} retried "
                f"then ok, {verdict.outcomes[PingOutcome.FAILED]} failed; {plural(verdict.reconnects, 'reconnect')}, "
                + (f"{plural(verdict.failovers, 'failover')}, " if verdict.failovers else "")
                + f"{plural(verdict.connections, 'connection')}"
            )
            if verdict.outcome is Outcome.SESSION_FAILED:
                return (
                    f"SESSION FAILED: {verdict.failed} of {plural(count, 'ping')} failed for good ({tally}): "
                    f"{_main_reason(verdict)}"
                )
            return (
                f"SESSION OK: {plural(count, 'ping')}, {tally}, up to {verdict.peak_in_flight} at once, "
                f"{verdict.wall_time_s:.2f} s"
            )
        case Outcome.FAILED:
            return f"FAILED: {verdict.failed} of {plural(count, 'ping')} failed: {_main_reason(verdict)}"
        case Outcome.NOTHING_TO_MULTIPLEX:
            return f"NOTHING TO MULTIPLEX{whose}: 1 ping on 1 connection ({versions}), {timing}"
        case Outcome.MULTIPLEXED:
            return (
                f"MULTIPLEXED{whose}: {count} pings as {count} streams on "
                f"{plural(verdict.connections, 'connection')} ({versions}), {timing}"
            )
        case Outcome.NOT_MULTIPLEXED:
            return (
                f"NOT MULTIPLEXED{whose}: {count} pings on {plural(verdict.connections, 'connection')} "
                f"({versions}), {timing}"
            )


def _main_reason(verdict: Verdict) -> str:
    reasons = Counter(
        sentence(problem.ping.failure)
        for problem in verdict.problems
        if isinstance(problem, PingFailed) and problem.ping.failure is not None
    )
    if len(reasons) <= 1:
        return next(iter(reasons), "no reason given")
    ((most, count),) = reasons.most_common(1)
    return f"{count} of them: {most}; {len(reasons) - 1} other errors, above"


def failure_kinds(pings: Iterable[PingResult]) -> dict[str, int]:
    """Failed pings by ``FailureKind`` (``--json``: ``failure_kinds``), most first."""
    kinds = Counter(ping.failure.kind for ping in pings if ping.failure is not None)
    return {str(kind): count for kind, count in kinds.most_common()}


def errors_by_kind(pings: Iterable[PingResult]) -> dict[str, int]:
    """Failed pings by their kind in words, with the status for HTTP refusals ('HTTP 403'), most first."""
    kinds = Counter(headline(ping.failure) for ping in pings if ping.failure is not None)
    return dict(kinds.most_common())


def render_summary(result: RunResult, verdict: Verdict) -> str:
    connections = result.connections
    alpn = ", ".join(sorted({record.alpn or "none" for record in connections})) or "none"
    handshakes = sum(1 for record in connections if record.tls_version)
    lines = [f"connections opened: {len(connections)} (TLS handshakes: {handshakes}; ALPN: {alpn})"]
    for record in connections:
        streams = [ping.stream_id for ping in result.pings if ping.connection == record.number and ping.stream_id]
        ids = f" (stream ids {', '.join(map(str, streams))})" if 0 < len(streams) <= MAX_LISTED else ""
        lines.append(
            f"  {_conn(result, record.number)}  {record.local_address} -> {record.remote_address}  "
            f"{record.tls_version}  ALPN {record.alpn or 'none'}  {plural(len(record.pings), 'ping')}{ids}, "
            f"{result.peak_in_flight(record.number)} at once"
        )
    if not isinstance(result.scenario.kind, Schedule):
        lines.append("pings:")
        lines += ["  " + _render_ping(ping, result) for ping in result.pings[:MAX_LISTED]]
        if len(result.pings) > MAX_LISTED:
            slowest = max(result.pings, key=lambda ping: ping.elapsed_s)
            lines.append(f"  ... and {len(result.pings) - MAX_LISTED} more (all in --json); the slowest:")
            lines.append("  " + _render_ping(slowest, result))
        longest = max(ping.interval_s for ping in result.pings)
        total = sum(ping.interval_s for ping in result.pings)
        lines.append(
            f"wall time: {result.wall_time_s:.3f} s = {_ratio(result.wall_time_s, longest)} the longest interval "
            f"({format_interval(longest)} s), {_ratio(result.wall_time_s, total)} the sum ({total:g} s)"
        )
    else:
        outcomes = verdict.outcomes
        lines.append(
            f"pings: {len(result.pings)} sent, {outcomes[PingOutcome.OK]} ok, {outcomes[PingOutcome.RETRIED_THEN_OK]} "
            f"retried then ok, {outcomes[PingOutcome.FAILED]} failed; {plural(result.reconnects, 'reconnect')}"
        )
        # (the failed ones are the failure lines' below, grouped by why)
        unusual = [ping for ping in result.pings if ping.outcome is PingOutcome.RETRIED_THEN_OK]
        lines += ["  " + _render_ping(ping, result) for ping in unusual[:MAX_LISTED]]
        if len(unusual) > MAX_LISTED:
            lines.append(f"  ... and {len(unusual) - MAX_LISTED} more")
        lines += _render_controllers(result)
    lines += _stream_lines(result)
    lines += check_text(verdict)
    failures = grouped_problem_lines(verdict)
    lines += [f"failure: {failure}" for failure in failures[:MAX_LISTED]]
    lines += [f"inconclusive: {inconclusive_text(late)}" for late in verdict.inconclusive[:MAX_LISTED]]
    if len(failures) > MAX_LISTED:
        lines.append(f"failure: ... and {len(failures) - MAX_LISTED} more (all of them in --json)")
    view = result.controller_view
    if view is not None:
        agreement = (
            "" if view.error or view.no_account else ("; both views agree" if view.agrees else "; the views DISAGREE")
        )
        lines.append(describe_view(view) + agreement)
    lines.append(shown_line(verdict))
    if view is not None and view.findings:
        lines.append(f"the controller's diagnosis of {view.switch} ({_numbering(result)}):")
        lines += [f"  {finding.severity:<7} {finding.kind}: {finding.sentence}" for finding in view.findings]
    if verdict_line(verdict) != shown_line(verdict):  # it failed on something else: the last word says what
        lines.append(verdict_line(verdict))
    return "\n".join(lines)


def _stream_lines(result: RunResult) -> list[str]:
    """What the controller's stream limit did to the run: the connections spill took, the pings that queued."""
    lines = []
    spilled = result.spilled()
    if spilled is not None:
        lines.append(
            f"spill: {spilled.connections} connections for {plural(len(result.pings), 'ping')}, the controller taking "
            f"{spilled.limit} streams a connection (its SETTINGS_MAX_CONCURRENT_STREAMS)"
        )
    waited = _waited_for_a_stream(result)
    if waited:
        longest_wait = max(ping.stream_wait_s or 0.0 for ping in waited)
        lines.append(
            f"stream waits: {plural(len(waited), 'ping')} waited for a free stream, up to {longest_wait:.3f} s "
            f"(streams: {result.scenario.streams}; `streams: spill` opens another connection instead)"
        )
    return lines


def _render_controllers(result: RunResult) -> list[str]:
    """Which controller answered how many pings, and each failover, when a session used more than one."""
    if len(result.controllers) < 2 and not result.failovers:
        return []
    answered = ", ".join(f"{url} {count}" for url, count in result.controllers.items())
    lines = [f"answered by: {answered}"]
    lines += [
        f"failover at {failover.at_s:.1f} s: {failover.from_url} -> {failover.to_url} ({describe_loss(failover.loss)})"
        for failover in result.failovers
    ]
    return lines


def _numbering(result: RunResult) -> str:
    """Which of the controller's connection numbers is which of ours: its sentences use its own."""
    assert result.controller_view is not None
    ours = {record.local_address: record.number for record in result.connections}
    pairs = [
        (int(record["id"]), ours[str(record["peer"])])
        for record in result.controller_view.records
        if str(record["peer"]) in ours
    ]
    named = ", ".join(f"#{theirs} is our #{mine}" for theirs, mine in sorted(pairs)[:MAX_LISTED])
    more = ", ..." if len(pairs) > MAX_LISTED else ""
    return f"its conn {named}{more}" if pairs else "its connection numbers"


def _waited_for_a_stream(result: RunResult) -> list[PingResult]:
    return result.queued_for_a_stream()


def _conn(result: RunResult, number: int | None) -> str:
    """``conn #1 (controller #2)``: our number for a connection, and the controller's beside it where it has one."""
    theirs = result.controller_connection(number)
    return f"conn #{number}" + (f" (controller #{theirs})" if theirs is not None else "")


def _render_ping(ping: PingResult, result: RunResult) -> str:
    tries = f" after {ping.attempts} tries" if ping.attempts > 1 else ""
    head = f"ping {ping.number}  interval {format_interval(ping.interval_s):>4} s{tries}  "
    if not ping.ok:
        return f"{head}FAILED after {ping.elapsed_s:.3f} s: {ping_error(ping)}"
    stream = f" stream {ping.stream_id}" if ping.stream_id else ""
    return (
        f"{head}{ping.status} {ping.http_version}  {_conn(result, ping.connection)}{stream}  "
        f"{ping.elapsed_s:.3f} s ({against_interval(ping.elapsed_s - ping.interval_s)})"
    )


def against_interval(overhead_s: float) -> str:
    """How an answer's time compares with the interval it asked for: "+42 ms over its interval", or, from a
    controller that answered before it (not dialout's), "4.97 s early"."""
    if overhead_s >= 0:
        return f"+{overhead_s * 1000:.0f} ms over its interval"
    return f"{-overhead_s:.3g} s early"


def to_json(result: RunResult, verdict: Verdict) -> dict[str, Any]:
    """The ``--json`` report. Scripts rely on these names: add fields, never rename or remove them."""
    return {
        "scenario": result.scenario.name,
        "mode": result.scenario.kind.mode,
        "controller": result.controller_url,
        "ok": verdict.ok,
        "multiplexed": verdict.multiplexed,
        "verdict": verdict_line(verdict),
        "outcome": verdict.outcome,
        "connections_opened": len(result.connections),
        "tls_handshakes": sum(1 for record in result.connections if record.tls_version),
        "alpn": [record.alpn for record in result.connections],
        "wall_time_s": round(result.wall_time_s, 6),
        "longest_interval_s": max(ping.interval_s for ping in result.pings),
        "sum_of_intervals_s": round(sum(ping.interval_s for ping in result.pings), 6),
        "failures": problem_lines(verdict),
        "inconclusive": [inconclusive_text(late) for late in verdict.inconclusive],
        "failure_kinds": failure_kinds(result.pings),
        "checks": [
            {"key": check.key, "expected": check.expected, "seen": list(check.seen), "held": check.held}
            for check in verdict.checks
        ],
        "sent": len(result.pings),
        "answered_ok": verdict.outcomes[PingOutcome.OK],
        "retried_then_ok": verdict.outcomes[PingOutcome.RETRIED_THEN_OK],
        "failed": verdict.outcomes[PingOutcome.FAILED],
        "reconnects": result.reconnects,
        "answered_by": result.controllers,
        "failovers": [
            {
                "at_s": round(failover.at_s, 6),
                "from": failover.from_url,
                "to": failover.to_url,
                "reason": describe_loss(failover.loss),
            }
            for failover in result.failovers
        ],
        "streams": result.scenario.streams,
        "spill": dataclasses.asdict(spilled) if (spilled := result.spilled()) else None,
        "pings_that_waited_for_a_stream": len(_waited_for_a_stream(result)),
        "stream_wait_max_s": round(max((ping.stream_wait_s or 0.0 for ping in result.pings), default=0.0), 6),
        "controller_view": _view_json(result),
        "connections": [
            {
                "connection": record.number,
                "controller_connection": result.controller_connection(record.number),
                "local_address": record.local_address,
                "remote_address": record.remote_address,
                "local_port": record.local_port,
                "tls_version": record.tls_version,
                "alpn": record.alpn,
                "cipher": record.cipher,
                "controller_subject": record.controller_subject,
                "controller": record.controller,
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
                "controller_connection": result.controller_connection(ping.connection),
                "stream_id": ping.stream_id,
                "local_port": ping.local_port,
                "elapsed_s": round(ping.elapsed_s, 6),
                "error": ping_error(ping),
                "failure": _failure_json(ping),
                "attempts": ping.attempts,
                "outcome": ping.outcome,
                "stream_wait_s": None if ping.stream_wait_s is None else round(ping.stream_wait_s, 6),
                "controller": ping.controller,
                "loop_lag_s": round(ping.loop_lag_s, 6),  # this process's loop lag while it was out
            }
            for ping in result.pings
        ],
    }


def _failure_json(ping: PingResult) -> dict[str, Any] | None:
    failure = ping.failure
    if failure is None:
        return None
    gave_up = ping.gave_up
    return {
        "kind": failure.kind,
        "detail": failure.detail,
        "retry_safe": failure.retry_safe,
        "status": failure.status,
        "gave_up": None
        if gave_up is None
        else {"reason": gave_up.reason, "tries": gave_up.tries, "over_s": round(gave_up.over_s, 6)},
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
        "disagreements": [describe_disagreement(disagreement) for disagreement in view.disagreements],
        "error": None if view.error is None else f"GET /connections failed: {sentence(view.error)}",
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
