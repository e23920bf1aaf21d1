"""A trial's outcome, as data: what the controller did and when, what the client did in response (from the
controller's account: which connection, which stream, when), the verdict and one sentence with the rule it rests
on and the likely fix. Times are seconds since the trials began."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOTE = "note"  # neither: what the client did, for the engineer to judge (or a trial that cannot run here)
    # the controller's own event loop lagged more than the trial's judgment holds through: no verdict (issue 28)
    INCONCLUSIVE = "inconclusive"
    # what the trial acts on never happened (no request to refuse, no connection to reset): it did not run, and its
    # sentence says what the client must do for it to (issue 29)
    NOT_EXERCISED = "not_exercised"


@dataclass(frozen=True)
class Step:
    """One thing that happened, at ``at_s``: ``by`` the controller (its action) or the switch (what its client
    did), on connection ``connection`` (the controller's number) and ``stream`` (an HTTP/2 stream id)."""

    at_s: float
    by: str  # "controller" or "switch"
    what: str
    connection: int | None = None
    stream: int | None = None


@dataclass(frozen=True)
class TrialResult:
    name: str
    verdict: Verdict
    sentence: str
    steps: tuple[Step, ...]
    started_s: float
    ended_s: float
