"""The controller's Prometheus metrics (``GET /metrics`` on the admin listener), from prometheus_client.

Label cardinality is bounded on purpose: nothing is labelled by switch or by connection (a fleet of 10,000 switches
would make 10,000 series per metric); statuses are the handful the app answers with, ALPN one of three values,
and handshake failure reasons a fixed list of OpenSSL's, the rest counted as ``other``. Per-switch numbers are in
``/connections`` and ``/diagnosis``.

Connections and streams are read from the ``ConnectionRegistry`` (and the account's from its ``Ledger``) when
scraped, so they cost the hot path nothing; only an answered ping and a failed handshake are counted as they
happen.

``serve --workers N``: the metrics are every worker's, whichever worker's admin listener is scraped. Each worker
keeps its metrics in files of a directory the parent makes for the run (prometheus_client's multiprocess mode, as
for gunicorn's workers), brings what its registry counts into them every ``REFRESH_S``, and the scrape sums the
files: counters over every worker that ever ran (one started again keeps its predecessor's counts), gauges over
those running now. A switch is a name, not a count: each worker keeps the names of its switches connected now in a
file of its own beside them, and the scrape counts the names of all, so that a switch with connections to two
workers is one. Process metrics are then the workers' CPU summed (``dialout_controller_cpu_seconds``);
prometheus_client's own, one process's, are left out. A run's directory is named after its parent's pid: one whose
parent was killed (SIGKILL: no one left to remove it) is removed by the next run to start, once none of the
processes that wrote in it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from controller.accounts.connections import ConnectionRegistry
from controller.http.cpu import controller_cpu

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
SWITCHES_NAME, SWITCHES_HELP = "dialout_switches_connected", "Switches with an open connection now."


logger = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often each worker brings its registry's counts into its files (serve --workers N)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus_client's multiprocess mode keeps its files
RUN_PREFIX = "dialout-metrics-"  # a run's directory: RUN_PREFIX, the parent's pid, "-", mkdtemp's letters
SWITCHES_FILE = "switches_{pid}.json"  # a worker's switches connected now (prometheus_client's are *_{pid}.db)
_over_workers: list[Path] = []  # the run's directory, in the parent of serve --workers N and in its workers


@contextlib.contextmanager
def counted_over_workers() -> Iterator[None]:
    """In the parent of ``serve --workers N``, before the fork: every metric made from now on keeps its value in
    a file of a directory of this run's, which the scrape sums; the directory is removed at the end."""
    _remove_dead_runs(Path(tempfile.gettempdir()))
    directory = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-"))
    previous = values.ValueClass
    os.environ[MULTIPROCESS_DIR] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # (its multiprocess parts are untyped)
    _over_workers.append(directory)
    logger.info("/metrics sums every worker's, kept in %s until the stop", directory)
    try:
        yield
    finally:
        _over_workers.remove(directory)
        values.ValueClass = previous
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(directory, ignore_errors=True)


def worker_gone(pid: int) -> None:
    """A worker process has ended: its gauges leave the sum (its counters stay in it), its switches the count."""
    if _over_workers:
        mark_process_dead(pid, str(_over_workers[-1]))  # type: ignore[no-untyped-call]
        (_over_workers[-1] / SWITCHES_FILE.format(pid=pid)).unlink(missing_ok=True)


def _remove_dead_runs(under: Path) -> None:
    """The directories of earlier runs whose parent and workers have all ended without removing them."""
    for run in under.glob(f"{RUN_PREFIX}*-*"):
        parent = run.name.removeprefix(RUN_PREFIX).split("-", 1)[0]
        if not parent.isdigit():
            continue  # (not ours: before runs were named after their parent)
        writers = {int(parent)} | {
            int(pid) for pid in re.findall(r"_(\d+)\.(?:db|json)$", "\n".join(_names(run)), re.M)
        }
        if not any(_alive(pid) for pid in writers):
            shutil.rmtree(run, ignore_errors=True)


def _names(directory: Path) -> list[str]:
    try:
        return [entry.name for entry in directory.iterdir()]
    except OSError:  # (another user's, or gone meanwhile)
        return []


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie (ended, not yet reaped by its parent, as a killed parent's workers
    stay where nothing reaps orphans) does not. From /proc (Linux), else as a signal 0 finds it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _signalled(pid)
    except OSError:
        return True  # (unreadable: taken as running, and its run kept)
    return state not in ("Z", "X")


def _signalled(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: there, all the same
        pass
    return True


class Metrics:
    """One controller's metrics, on a registry of its own: two controllers in one process (as the tests run
    them) count apart."""

    def __init__(self, connections: ConnectionRegistry) -> None:
        self._connections = connections
        self.registry = CollectorRegistry()
        registry = self.registry
        self._pings = Counter(
            "dialout_pings_answered", "Pings answered, by HTTP status.", ["status"], registry=registry
        )
        self._lateness = Histogram(
            "dialout_ping_lateness_seconds",
            "How much later than its interval a ping (status 200) was answered.",
            buckets=LATENESS_BUCKETS_S,
            registry=registry,
        )
        self._handshake_failures = Counter(
            "dialout_tls_handshake_failures",
            "TLS handshakes that failed, by OpenSSL's reason.",
            ["reason"],
            registry=registry,
        )
        self._open = Gauge(
            "dialout_connections_open",
            "Connections open now, by ALPN.",
            ["alpn"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._opened = Counter(
            "dialout_connections_opened", "Connections opened since the controller started.", registry=registry
        )
        self._in_flight = Gauge(
            "dialout_streams_in_flight",
            "Requests being answered now, on every connection.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._calmed = Counter(
            "dialout_connections_calmed",
            "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for what they sent, by reason.",
            ["reason"],
            registry=registry,
        )
        # Over workers, switches are counted by name at the scrape (``_SwitchesOverWorkers``), not summed.
        self._switches = None if _over_workers else Gauge(SWITCHES_NAME, SWITCHES_HELP, registry=registry)
        self._published: set[str] | None = None  # the switches this worker's file names
        # Known label values start at 0, so that a scrape shows them before the first count: over workers,
        # prometheus_client's files hold only the series that were made.
        self._pings.labels("200")
        for reason in (*sorted(HANDSHAKE_REASONS), "other"):
            self._handshake_failures.labels(reason)
        self._account = None if connections.ledger is None else _AccountMetrics(registry)
        self._counted: dict[object, int] = {}  # what each counter fed from the registry has been told so far
        if _over_workers:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, str(_over_workers[-1]))  # type: ignore[no-untyped-call]
            self._exposed.register(_SwitchesOverWorkers(_over_workers[-1]))
        else:
            self._exposed = registry
            ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, open fds
        self._exposed.register(_ControllerCpu())

    def answered(self, status: int, late_s: float | None) -> None:
        self._pings.labels(str(status)).inc()
        if late_s is not None:
            self._lateness.observe(max(0.0, late_s))

    def handshake_failed(self, reason: str | None) -> None:
        self._handshake_failures.labels(reason if reason in HANDSHAKE_REASONS else "other").inc()

    def text(self) -> bytes:
        self.refresh()
        return generate_latest(self._exposed)

    def refresh(self) -> None:
        """Connections and streams as the registry has them now, and the account's store as the ledger does."""
        connections = self._connections
        open_now = [c for c in connections.connections() if c.closed_at is None]
        for alpn in (*ALPN_VALUES, "none"):
            self._open.labels(alpn).set(
                sum(1 for c in open_now if (c.alpn if c.alpn in ALPN_VALUES else "none") == alpn)
            )
        self._in_flight.set(sum(c.in_flight for c in open_now))
        switches = {c.switch for c in open_now if c.switch is not None}
        if self._switches is not None:
            self._switches.set(len(switches))
        else:
            self._publish(switches)
        self._count(self._opened, connections.opened_total)
        for reason, count in sorted(connections.calmed.items()):  # three reasons at most (h2_limits.Calmed)
            self._count(self._calmed.labels(reason), count)
        ledger = connections.ledger
        if self._account is not None and ledger is not None:
            account = self._account
            self._count(account.written, ledger.written_rows)
            self._count(account.dropped, ledger.dropped_rows)
            self._count(account.failures, ledger.failures)
            account.waiting.set(ledger.waiting_rows)

    def _publish(self, switches: set[str]) -> None:
        """This worker's switches connected now, in its file, when they changed (written whole, then renamed)."""
        if switches == self._published:
            return
        target = _over_workers[-1] / SWITCHES_FILE.format(pid=os.getpid())
        written = target.with_suffix(".tmp")
        written.write_text(json.dumps(sorted(switches)))
        written.replace(target)
        self._published = switches

    def _count(self, counter: Counter, total: int) -> None:
        """``counter`` up to ``total``, a count kept elsewhere that only grows."""
        grown = total - self._counted.get(counter, 0)
        if grown > 0:
            counter.inc(grown)
            self._counted[counter] = total

    @contextlib.asynccontextmanager
    async def kept_fresh(self) -> AsyncIterator[None]:
        """While serving, in a worker of ``serve --workers N``: refreshed every ``REFRESH_S`` (any worker may be
        scraped for all of them), and once more at the end."""
        if not _over_workers:
            yield
            return
        task = asyncio.create_task(self._refreshing())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.refresh()

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            self.refresh()


class _AccountMetrics:
    """How the account's store keeps up (controller.account): none of these when it has none."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "dialout_account_rows_written", "Rows written to the account's store.", registry=registry
        )
        self.dropped = Counter(
            "dialout_account_rows_dropped",
            "Streams' rows dropped unwritten: the store took no writes while more than the ledger holds waited.",
            registry=registry,
        )
        self.failures = Counter(
            "dialout_account_write_failures",
            "Writes to the account's store that failed (and were retried).",
            registry=registry,
        )
        self.waiting = Gauge(
            "dialout_account_rows_waiting",
            "Rows waiting for the store to take them.",
            registry=registry,
            multiprocess_mode="livesum",
        )


class _SwitchesOverWorkers(Collector):
    """Switches connected now to any worker, each once: the union of the names in the workers' files."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        names: set[str] = set()
        for kept in self._directory.glob(SWITCHES_FILE.format(pid="*")):
            with contextlib.suppress(OSError, ValueError):  # (its worker gone meanwhile: worker_gone)
                names.update(json.loads(kept.read_text()))
        yield GaugeMetricFamily(SWITCHES_NAME, SWITCHES_HELP, value=len(names))


class _ControllerCpu(Collector):
    """The CPU time of every process serving (``controller/http/cpu.py``), and how many they are."""

    def collect(self) -> Iterator[Metric]:
        cpu = controller_cpu()
        yield CounterMetricFamily(
            "dialout_controller_cpu_seconds", "User and system CPU time of every process serving.", value=cpu.cpu_s
        )
        yield GaugeMetricFamily("dialout_controller_processes", "Processes serving.", value=cpu.processes)
