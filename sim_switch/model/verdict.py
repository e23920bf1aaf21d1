"""The judgement of a run, as numbers and enums: what it came to, which expectations held, and every problem as
a value of its own kind. ``sim_switch/render/report.py`` puts it into words, the HTML report draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from dialout.config import Schedule, ViewPolicy
from sim_switch.model.failures import Failure
from sim_switch.model.results import (
    ControllerFinding,
    Disagreement,
    LateAnswer,
    PingOutcome,
    PingResult,
    RunResult,
)

# The controller's finding kind for shared connections (controller/diagnosis/findings.py).
MULTIPLEXED_FINDING = "multiplexed"
# No problem found, but a judgment this process's own loop lag could have made: run again on a quieter machine.
INCONCLUSIVE_EXIT = 3


class Outcome(StrEnum):
    """What a run came to (``--json``: ``outcome``)."""

    MULTIPLEXED = "multiplexed"  # two or more pings at once on one connection, both ends agreeing
    NOT_MULTIPLEXED = "not_multiplexed"
    NOTHING_TO_MULTIPLEX = "nothing_to_multiplex"  # a single ping
    FAILED = "failed"  # some ping failed
    SESSION_OK = "session_ok"
    SESSION_FAILED = "session_failed"


class Expected(StrEnum):
    """An ``expect:`` key of the scenario."""

    CONNECTIONS = "connections"
    HTTP_VERSION = "http_version"


@dataclass(frozen=True)
class Check:
    """One ``expect:`` entry held against the run."""

    key: Expected
    expected: int | str
    seen: tuple[int | str | None, ...]  # connections: (opened,); http_version: each ping's, in order
    held: bool


# Each problem that fails a run, one type per kind.
@dataclass(frozen=True)
class PingFailed:
    ping: PingResult


@dataclass(frozen=True)
class CheckFailed:
    check: Check


@dataclass(frozen=True)
class ViewDisagrees:
    """The controller counted something else than the switch (``controller_view.compare`` says what)."""

    disagreement: Disagreement


@dataclass(frozen=True)
class ViewUnavailable:
    """GET /connections failed."""

    error: Failure


@dataclass(frozen=True)
class ViewRequired:
    """``expect.controller_view: required``, and the controller keeps no account."""

    no_account: str


@dataclass(frozen=True)
class DiagnosisDisagrees:
    """The controller's diagnosis says multiplexed where the switch did not, or the other way round."""

    switch_saw_it: bool
    controller_kinds: tuple[str, ...]


Problem = PingFailed | CheckFailed | ViewDisagrees | ViewUnavailable | ViewRequired | DiagnosisDisagrees


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    multiplexed: bool  # some connection carried two or more pings at once, and the controller saw it too
    one_sided: bool  # the controller keeps no account: the switch's view alone
    pings: int
    failed: int
    connections: int
    http_versions: tuple[str, ...]  # sorted, "?" for a ping without an answer
    longest_interval_s: float
    wall_time_s: float
    peak_in_flight: int  # the most pings open at once on one connection
    outcomes: dict[PingOutcome, int]
    reconnects: int
    failovers: int
    checks: tuple[Check, ...]
    problems: tuple[Problem, ...]
    inconclusive: tuple[LateAnswer, ...] = ()  # late answers the switch's own loop lag could explain

    @property
    def ok(self) -> bool:
        """Every ping answered, every expectation held, and the controller agrees."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 ok, 1 a problem, ``INCONCLUSIVE_EXIT`` none, but a judgment the switch's loop lag could have made."""
        if self.problems:
            return 1
        return INCONCLUSIVE_EXIT if self.inconclusive else 0


def judge(result: RunResult) -> Verdict:
    pings = result.pings
    checks = tuple(_check_expectations(result))
    problems: list[Problem] = [PingFailed(ping) for ping in pings if not ping.ok]
    problems += [CheckFailed(check) for check in checks if not check.held]
    view = result.controller_view
    required = result.scenario.expect.controller_view == ViewPolicy.REQUIRED
    one_sided = view is not None and view.no_account is not None
    peak = max((result.peak_in_flight(record.number) for record in result.connections), default=0)
    switch_saw_it = peak >= 2
    # At once beyond what crossing on the wire explains (``surely_in_flight``): what the controller must have seen.
    switch_sure = any(result.surely_in_flight(record.number) >= 2 for record in result.connections)
    if view is not None:
        problems += [ViewDisagrees(problem) for problem in view.disagreements]
        problems += [ViewUnavailable(view.error)] if view.error else []
        if view.no_account is not None and required:
            problems.append(ViewRequired(view.no_account))
        if view.findings is not None:
            problems += _diagnosis_disagrees(view.findings, switch_saw_it, switch_sure)
    # Proven only when both ends agree: the controller counted the same streams, at the same time (two pings that
    # crossed on the wire were not). A controller that keeps no account (not dialout's) leaves the switch's view,
    # said as such, unless the scenario requires both.
    both_ends = view is not None and view.agrees and (view.peak_in_flight >= 2 or not view.records)
    multiplexed = switch_saw_it and view is not None and (both_ends or (one_sided and not required))
    failed = sum(not ping.ok for ping in pings)
    outcome = _outcome(result, failed, switch_saw_it if one_sided else multiplexed)
    return Verdict(
        outcome=outcome,
        multiplexed=multiplexed,
        one_sided=one_sided,
        pings=len(pings),
        failed=failed,
        connections=len(result.connections),
        http_versions=tuple(sorted({ping.http_version or "?" for ping in pings})),
        longest_interval_s=max((ping.interval_s for ping in pings), default=0.0),
        wall_time_s=result.wall_time_s,
        peak_in_flight=peak,
        outcomes={outcome: sum(ping.outcome == outcome for ping in pings) for outcome in PingOutcome},
        reconnects=result.reconnects,
        failovers=len(result.failovers),
        checks=checks,
        problems=tuple(problems),
        inconclusive=view.inconclusive if view is not None else (),
    )


def _outcome(result: RunResult, failed: int, multiplexed: bool) -> Outcome:
    if isinstance(result.scenario.kind, Schedule):
        return Outcome.SESSION_FAILED if failed else Outcome.SESSION_OK
    if failed:
        return Outcome.FAILED
    if len(result.pings) == 1:
        return Outcome.NOTHING_TO_MULTIPLEX
    return Outcome.MULTIPLEXED if multiplexed else Outcome.NOT_MULTIPLEXED


def _diagnosis_disagrees(
    findings: Sequence[ControllerFinding], switch_saw_it: bool, switch_sure: bool
) -> list[Problem]:
    """The controller's own conclusion must be the switch's: multiplexed on both ends, or on neither. Pings at once
    at the switch only as they crossed on the wire (``switch_sure`` False) may be either at the controller."""
    controller_saw_it = any(finding.kind == MULTIPLEXED_FINDING for finding in findings)
    if controller_saw_it == switch_saw_it or (switch_saw_it and not switch_sure):
        return []
    return [DiagnosisDisagrees(switch_saw_it, tuple(finding.kind for finding in findings))]


def _check_expectations(result: RunResult) -> list[Check]:
    expect = result.scenario.expect
    checks: list[Check] = []
    if expect.connections is not None:
        opened = len(result.connections)
        checks.append(Check(Expected.CONNECTIONS, expect.connections, (opened,), opened == expect.connections))
    if expect.http_version is not None:
        versions = tuple(ping.http_version for ping in result.pings)
        held = all(version == expect.http_version for version in versions)
        checks.append(Check(Expected.HTTP_VERSION, expect.http_version, versions, held))
    return checks
