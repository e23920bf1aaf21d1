"""One run's client settings, held once, as ``httpx.Client`` holds its configuration: what every ping of the run
is sent with and judged against, instead of ten parameters passed from call to call."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from dialout.config import Request, Scenario, SwitchConfig


@dataclass(frozen=True)
class RunSettings:
    """``switch`` gives the switch's id, its request timeout and its policies (reconnect, retry, keepalive)."""

    scenario: Scenario
    switch: SwitchConfig
    ssl_context: ssl.SSLContext | None  # None: an http:// URL, no certificate to present or check
    ask: bool = True  # ask the controller at the end what it saw of the run
    trace_frames: bool = False  # every HTTP/2 frame either way into the trace (--trace frames)
    source_address: str | None = None  # the local address to dial from (a fleet on loopback: each switch its own)

    @property
    def switch_id(self) -> str:
        return self.switch.switch_id

    @property
    def request_timeout_s(self) -> float:
        return self.switch.request_timeout_s

    @property
    def request(self) -> Request:
        """What a ping is on the wire."""
        return self.scenario.request


@dataclass(frozen=True)
class Outgoing:
    """One ping about to be tried: its number in the run, the interval it asks for, and when it wanted to go (if it
    waited for a free stream before its try, its latency and stream wait count from then)."""

    number: int
    interval_s: float
    asked_at_s: float | None = None
