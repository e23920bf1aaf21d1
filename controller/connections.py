"""The controller's own account of its TLS connections: which switch opened each one, and how many streams it
carried, at most how many at once. Kept in memory and bounded; per-switch totals are exact."""

from __future__ import annotations

import datetime
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Enough for a long soak of short-lived connections, small enough to serve as one JSON answer.
DEFAULT_HISTORY = 10_000


@dataclass
class ControllerConnection:
    """One accepted TLS connection. ``tls`` is its ASGI TLS extension dict (asgiref specs/tls.rst)."""

    id: int
    peer: str  # "ip:port", "[ip6]:port"
    switch: str | None  # the client certificate's CN
    alpn: str | None
    tls_version: str | None
    tls: dict[str, Any]
    opened_at: str
    closed_at: str | None = None
    streams: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    _totals: SwitchTotals | None = field(default=None, repr=False)

    def begin_stream(self) -> int:
        """Count a request that has started on this connection; returns its number on the connection (1, 2, ...)."""
        self.streams += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self._totals is not None:
            self._totals.streams += 1
            self._totals.peak_in_flight = max(self._totals.peak_in_flight, self.in_flight)
        return self.streams

    def end_stream(self) -> None:
        self.in_flight -= 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "switch": self.switch,
            "peer": self.peer,
            "alpn": self.alpn,
            "tls_version": self.tls_version,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "streams": self.streams,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


@dataclass
class SwitchTotals:
    connections: int = 0
    streams: int = 0
    peak_in_flight: int = 0  # on any one connection

    def describe(self) -> str:
        return (
            f"{plural(self.connections, 'connection')}, {plural(self.streams, 'stream')}, "
            f"peak {self.peak_in_flight} at once"
        )


class ConnectionRegistry:
    def __init__(self, history: int = DEFAULT_HISTORY, server_cert_pem: str | None = None) -> None:
        self.server_cert_pem = server_cert_pem
        self._recent: deque[ControllerConnection] = deque(maxlen=history)
        self._totals: dict[str, SwitchTotals] = {}
        self._next_id = 1

    def open(self, peer: str, switch: str | None, alpn: str | None, tls_version: str | None,
             tls: dict[str, Any]) -> ControllerConnection:  # fmt: skip
        totals = self._totals.setdefault(switch or "(no certificate)", SwitchTotals())
        totals.connections += 1
        connection = ControllerConnection(
            id=self._next_id, peer=peer, switch=switch, alpn=alpn, tls_version=tls_version, tls=tls,
            opened_at=utc_now(), _totals=totals,
        )  # fmt: skip
        self._next_id += 1
        self._recent.append(connection)
        logger.info("conn #%d opened by %s from %s (%s, ALPN %s)", connection.id, switch, peer, tls_version, alpn)
        return connection

    def close(self, connection: ControllerConnection) -> None:
        """Mark ``connection`` closed; only the first call counts."""
        if connection.closed_at is not None:
            return
        connection.closed_at = utc_now()
        logger.info(
            "conn #%d closed: %s, %s, peak %d at once",
            connection.id, connection.switch, plural(connection.streams, "stream"), connection.peak_in_flight,
        )  # fmt: skip

    def connections(self, switch: str | None = None) -> list[ControllerConnection]:
        return [c for c in self._recent if switch is None or c.switch == switch]

    def totals(self) -> dict[str, SwitchTotals]:
        return dict(sorted(self._totals.items()))


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def plural(count: int, noun: str) -> str:
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("ch", "sh", "s", "x")) else f"{count} {noun}s"


def format_address(host: str, port: int) -> str:
    """``ip:port``, with an IPv6 address in brackets: the same text the switch uses for its end."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
