"""A link that stays down, said in a line every ``EVERY_S`` of it, not a line per failed dial.

A session whose controller has gone redials with backoff, and every ping waiting on it fails the same way: 269
"connection refused" lines in 85 s, with their "TCP connect start" and "reconnect #n" between them, said nothing the
first did not. While the link is down, the printed trace holds back the dials, the failures and the reconnects
that repeat why it went down, and says them as one line: ``link still down: the controller is down: connection
refused x 269 over 85 s (redialling every 5.0 s)``, when something else happens, every ``EVERY_S`` and at the end.
Only the printed trace: ``--json`` and the HTML report keep every event.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim_switch.model.events import (
    GetConnection,
    LinkDown,
    LinkGaveUp,
    LinkUp,
    PingFailed,
    Reconnecting,
    StepFailed,
    TcpConnecting,
    TlsStarted,
    TraceEvent,
)
from sim_switch.render.failures import sentence
from sim_switch.render.trace import describe_loss, render_event, trace_line

EVERY_S = 10.0  # of trace time: a link down for a minute is still said to be, six times


@dataclass
class _Down:
    reason: str  # why, in the trace's words
    since_s: float
    failures: int = 0
    dials: int = 0
    backoff_s: float = 0.0
    said_at_s: float = 0.0
    held: int = 0  # failures held back since the last line


class RepeatsHeld:
    """Turns trace events into the lines to print, repeated failures of a down link held back and counted."""

    def __init__(self) -> None:
        self._down: _Down | None = None
        self._last_s = 0.0  # the latest event's time

    def lines(self, event: TraceEvent) -> list[str]:
        down = self._down
        self._last_s = event.at_s
        if isinstance(event, LinkDown):
            self._down = _Down(describe_loss(event.loss), event.at_s, said_at_s=event.at_s)
            return [render_event(event)]
        if down is None:
            return [render_event(event)]
        if self._repeats(down, event):
            if event.at_s - down.said_at_s >= EVERY_S:
                return self._summary(event.at_s)
            return []
        if isinstance(event, LinkGaveUp):  # it says how long the link was down, and why: the last word on it
            self._down = None
            return [render_event(event)]
        said = self._summary(event.at_s)
        if isinstance(event, LinkUp):
            self._down = None
        return [*said, render_event(event)]

    def flush(self) -> list[str]:
        """What is held back, said (the run's end)."""
        return self._summary(self._last_s)

    def _repeats(self, down: _Down, event: TraceEvent) -> bool:
        """Whether ``event`` only repeats the link being down (and is counted)."""
        match event:
            case TcpConnecting() | TlsStarted() | GetConnection():
                down.dials += isinstance(event, TcpConnecting)
                return True
            case PingFailed(failure=failure) | StepFailed(failure=failure) if failure is not None:
                if sentence(failure) != down.reason:
                    return False
                down.failures += isinstance(event, PingFailed)
                down.held += isinstance(event, PingFailed)
                return True
            case Reconnecting(loss=loss, to_url=None) if describe_loss(loss) == down.reason:  # (a failover is news)
                down.backoff_s = event.delay_s
                return True
        return False

    def _summary(self, at_s: float) -> list[str]:
        down = self._down
        if down is None or not down.held:
            return []
        down.said_at_s, down.held = at_s, 0
        over_s = at_s - down.since_s
        backoff = f", redialling every {down.backoff_s:.1f} s" if down.backoff_s else ""
        return [
            trace_line(
                at_s,
                f"link still down: {down.reason} x {down.failures} over {over_s:.0f} s ({down.dials} dials{backoff})",
            )
        ]
