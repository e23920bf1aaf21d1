"""The controller's Prometheus metrics (``GET /metrics`` on the admin listener), from prometheus_client.

Label cardinality is bounded on purpose: nothing is labelled by switch or by connection (a fleet of 10,000 switches
would make 10,000 series per metric); statuses are the handful the app answers with, ALPN one of three values,
and handshake failure reasons a fixed list of OpenSSL's, the rest counted as ``other``. Per-switch numbers are in
``/connections`` and ``/diagnosis``.

Connections and streams are read from the ``ConnectionRegistry`` when scraped, so they cost the hot path nothing;
only an answered ping and a failed handshake are counted as they happen.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.accounts.connections import ConnectionRegistry
from controller.accounts.ledger import Ledger

# How late an answer was against the interval it was asked for: the controller's own delay, then queueing.
LATENESS_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# OpenSSL's reasons for a failed server handshake that a dial-out controller meets; anything else is "other".
HANDSHAKE_REASONS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "NO_SHARED_CIPHER",
        "UNSUPPORTED_PROTOCOL",
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "NO_APPLICATION_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNEXPECTED_EOF_WHILE_READING",
        "VERSION_TOO_LOW",
    }
)
ALPN_VALUES = ("h2", "http/1.1")


class Metrics:
    """One controller's metrics, on a registry of its own: two controllers in one process (as the tests run
    them) count apart."""

    def __init__(self, connections: ConnectionRegistry) -> None:
        self.registry = CollectorRegistry()
        self._pings = Counter(
            "dialout_pings_answered", "Pings answered, by HTTP status.", ["status"], registry=self.registry
        )
        self._lateness = Histogram(
            "dialout_ping_lateness_seconds",
            "How much later than its interval a ping (status 200) was answered.",
            buckets=LATENESS_BUCKETS_S,
            registry=self.registry,
        )
        self._handshake_failures = Counter(
            "dialout_tls_handshake_failures",
            "TLS handshakes that failed, by OpenSSL's reason.",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_Connections(connections))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, resident memory, open fds

    def answered(self, status: int, late_s: float | None) -> None:
        self._pings.labels(str(status)).inc()
        if late_s is not None:
            self._lateness.observe(max(0.0, late_s))

    def handshake_failed(self, reason: str | None) -> None:
        self._handshake_failures.labels(reason if reason in HANDSHAKE_REASONS else "other").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Connections(Collector):
    """Connections and streams as the registry has them at the time of the scrape."""

    def __init__(self, connections: ConnectionRegistry) -> None:
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        recorded = self._connections.connections()
        open_now = [c for c in recorded if c.closed_at is None]
        by_alpn = GaugeMetricFamily("dialout_connections_open", "Connections open now, by ALPN.", labels=["alpn"])
        for alpn in (*ALPN_VALUES, "none"):
            value = sum(1 for c in open_now if (c.alpn if c.alpn in ALPN_VALUES else "none") == alpn)
            by_alpn.add_metric([alpn], value)
        yield by_alpn
        yield CounterMetricFamily(
            "dialout_connections_opened",
            "Connections opened since the controller started.",
            value=self._connections.opened_total,
        )
        yield GaugeMetricFamily(
            "dialout_streams_in_flight",
            "Requests being answered now, on every connection.",
            value=sum(c.in_flight for c in open_now),
        )
        calmed = CounterMetricFamily(
            "dialout_connections_calmed",
            "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for what they sent, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self._connections.calmed.items()):  # three reasons at most (h2_limits.Calmed)
            calmed.add_metric([reason], count)
        yield calmed
        yield GaugeMetricFamily(
            "dialout_switches_connected",
            "Switches with an open connection now.",
            value=len({c.switch for c in open_now if c.switch is not None}),
        )
        yield from _account(self._connections.ledger)


def _account(ledger: Ledger | None) -> Iterator[Metric]:
    """How the account's store keeps up (controller.account): none of these when it has none."""
    if ledger is None:
        return
    yield CounterMetricFamily(
        "dialout_account_rows_written", "Rows this process wrote to the account's store.", value=ledger.written_rows
    )
    yield CounterMetricFamily(
        "dialout_account_rows_dropped",
        "Streams' rows dropped unwritten: the store took no writes while more than the ledger holds waited.",
        value=ledger.dropped_rows,
    )
    yield CounterMetricFamily(
        "dialout_account_write_failures",
        "Writes to the account's store that failed (and were retried).",
        value=ledger.failures,
    )
    yield GaugeMetricFamily(
        "dialout_account_rows_waiting", "Rows waiting for the store to take them.", value=ledger.waiting_rows
    )
