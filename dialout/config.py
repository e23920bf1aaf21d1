"""The one config file that drives both halves: schema, strict parsing, and loading with line numbers.

A leaf module: it imports nothing of Quart or Hypercorn, so ``sim_switch`` can use it.

``parse_config`` turns a plain mapping into frozen dataclasses and raises ``ConfigError(path, message)`` for the
first thing it rejects; ``load_config`` reads the YAML file, remembers on which line every key stands, and adds the
file name and line to that error. Unknown keys, wrong types (YAML's ``yes`` is a bool, not a number) and values
out of range are all rejected: a misspelt key that is silently ignored is a scenario that silently tests the wrong
thing.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Literal

from dialout import config_fields as field
from dialout.config_fields import check_controller_url
from dialout.config_schema import build, read_settings, setting, subsection
from dialout.config_yaml import line_of, load_yaml
from dialout.errors import ConfigError

__all__ = [
    "HTTP_VERSIONS",
    "KIND_DOCS",
    "Config",
    "ConfigError",
    "ControllerConfig",
    "ControllerTLS",
    "Expectation",
    "Fleet",
    "Keepalive",
    "Listener",
    "OneShot",
    "ReconnectPolicy",
    "Request",
    "RetryPolicy",
    "Scenario",
    "ScenarioKind",
    "ScenarioMode",
    "Schedule",
    "Spread",
    "StartWith",
    "StreamPolicy",
    "SwitchConfig",
    "SwitchTLS",
    "ViewPolicy",
    "check_controller_url",
    "load_config",
    "parse_config",
]

DEFAULT_ACCOUNT = "account.sqlite3"  # beside config.yaml (git ignores it)
DEFAULT_PORT = 8443
DEFAULT_MAX_INTERVAL_S = 60.0
DEFAULT_MAX_CONCURRENT_STREAMS = 100
# Hypercorn keeps an RFC 7540 priority tree per connection whose node count is capped at 1000: the 1000th
# concurrent stream kills the whole connection, so the largest value we accept is 999.
MAX_CONCURRENT_STREAMS_LIMIT = 999
# Hypercorn's own default (1000) sends GOAWAY after that many requests on one connection, in the middle of a run:
# a prototype lost 1851 of 20000 pings that way. A switch session is long-lived, so the default is effectively
# "never"; lower it only to test GOAWAY handling.
DEFAULT_KEEP_ALIVE_MAX_REQUESTS = 2**31 - 1
DEFAULT_GRACEFUL_TIMEOUT_S = 20.0
# A TLS handshake not done in this long is dropped: a real switch's takes milliseconds, and a peer that opens TCP
# and never speaks holds a socket and about 300 KB (Hypercorn's own default is 60 s).
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
# A connection with no request in flight for this long is closed. Hypercorn's own 5 s closed a call-home session
# between its pings, and a CPU-starved switch's new connection before its first request (the fleet bench's
# "closed the connection" errors on two controllers); nginx's keepalive_timeout is 75 s.
DEFAULT_IDLE_TIMEOUT_S = 300.0
# The request line and headers of one request: larger ones are refused (HTTP/1.1: 431) before they cost memory.
# 16 KiB is Hypercorn's own HTTP/1.1 default, far above what a ping needs.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# Per HTTP/2 connection, a bucket that holds a second's worth (controller/server/h2_limits.py). Resets: a switch
# may cancel every ping it has in flight at once (max_concurrent_streams, 100) and then some; a rapid-reset attacker
# (CVE-2023-44487) resets thousands a second. PING and SETTINGS: a switch sends a few a minute (keepalive); a flood
# sends millions, each asking for an ACK.
DEFAULT_MAX_RESETS_PER_S = 200
DEFAULT_MAX_CONTROL_FRAMES_PER_S = 100
# TLS handshakes under way at once: a connection beyond either cap is reset at accept, before TLS costs anything.
# Each pending one holds a descriptor and ~300 KB for up to handshake_timeout_s; a switch's takes milliseconds, so
# even a fleet redialling at once after a restart has few pending, and those refused redial after their backoff.
DEFAULT_MAX_PENDING_HANDSHAKES = 1024
DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS = 256
# A server's costliest handshake step (the ClientHello's: a key exchange and a signature) takes up to about 1 ms of
# CPU here (bench/handshake_cost.py): at 0.5 ms a turn runs one such step, or a few cheap ones. In a storm of short
# connections the rest of a turn is the storm's own requests and closes, about twice the slice, and a victim's ping
# waits some seven turns: its median overhead was 21-23 ms at 1 ms, 14-15 ms at 0.5 ms (6,000 connections, 50 at
# once; at 4 ms its worst was 67-77 ms). Fleets of 1,000 dialling together were no slower at 0.5 ms than at 1, four
# rounds each taking turns (bench/RESULTS.md, 2026-12-08): a loop with nothing else to do turns at once.
DEFAULT_HANDSHAKE_SLICE_MS = 0.5
DEFAULT_REQUEST_TIMEOUT_S = 90.0
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")

HTTP_VERSIONS = ("HTTP/1.1", "HTTP/2")
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ControllerTLS:
    """The controller's own PKI instead of dialout's: any file names, chains with intermediates, RSA or EC keys.
    When set, nothing in ``certs_dir`` is made, reissued or read for the controller."""

    cert: Path = setting(
        field.file_path, relative=True, doc="The controller's certificate, then any intermediates (RSA or EC)."
    )
    key: Path = setting(field.file_path, relative=True, doc="The private key of `cert`.")
    client_ca: Path = setting(
        field.file_path,
        relative=True,
        doc="The CA certificate(s) that issued the switches' certificates: the only ones trusted.",
    )


@dataclass(frozen=True)
class Listener:
    """A plain-TCP listener (h2c with prior knowledge, or HTTP/1.1), for proxies and the report's own h2c check."""

    port: int = setting(field.port, doc="The cleartext port (required).")
    host: str = setting(
        field.string,
        "127.0.0.1",
        doc="The cleartext listen address: loopback, unless `controller.trusted_proxies` names the proxy's address.",
    )


@dataclass(frozen=True)
class Retention:
    """How much of the account its store keeps (``controller.account``): what is older, or beyond either count, is
    dropped as the controller writes, oldest first, and by ``python -m controller account prune``."""

    max_age_s: float = setting(
        field.positive_number, 7 * 24 * 3600.0, doc="Connections closed, and streams ended, longer ago are dropped."
    )
    max_connections: int = setting(
        field.int_range(1, 2**62), 100_000, doc="Closed connections kept, the latest; open ones are always kept."
    )
    max_streams: int = setting(
        field.int_range(1, 2**62),
        1_000_000,
        doc="Streams kept with their times, the latest (some 100 bytes each); the per-switch totals stay exact.",
    )


@dataclass(frozen=True)
class Admin:
    """The admin listener: plain HTTP for a browser with no switch certificate (/, /connections, /diagnosis,
    /metrics). Loopback only, unless ``allow_remote`` says otherwise: it shows every switch and takes no
    certificate."""

    enabled: bool = setting(
        field.boolean,
        True,
        doc="Serve the admin listener: the live page, `/connections`, `/diagnosis` and `/metrics` over plain HTTP.",
    )
    host: str = setting(
        field.string,
        "127.0.0.1",
        doc=(
            "Its listen address. Loopback, and a request must name a loopback host (a page elsewhere cannot rebind to "
            "it)."
        ),
    )
    port: int | None = setting(
        field.port, None, doc="Its port. Default: `controller.port` + 1, or any free one when `controller.port` is 0."
    )
    allow_remote: bool = setting(field.boolean, False, doc="Listen off loopback too; needs `token_file`.")
    token_file: Path | None = setting(
        field.file_path,
        None,
        relative=True,
        doc="A file (mode 0600) holding a bearer token every request must carry; a browser opens `/?token=...`.",
    )
    max_event_clients: int = setting(
        field.int_range(1, 10_000),
        16,
        doc="Live pages open at once: each holds a stream and gets a snapshot five times a second; more get 503.",
    )


@dataclass(frozen=True)
class ControllerConfig:
    host: str = setting(
        field.string,
        "localhost",
        doc="The TLS listen address; a name listens on every address it resolves to (`localhost`: 127.0.0.1 and ::1).",
    )
    port: int = setting(field.port, DEFAULT_PORT, doc="The TLS port; 0 takes any free port and prints it at start.")
    certs_dir: Path = setting(
        field.file_path,
        Path("certs"),
        relative=True,
        doc=(
            "dialout's own CA, the controller's and the clients' certificates: made on first run when missing, never "
            "overwritten."
        ),
    )
    hostnames: tuple[str, ...] = setting(
        field.string_list,
        DEFAULT_HOSTNAMES,
        doc="The names in the controller certificate's SAN: the names a switch may dial.",
    )
    max_interval_s: float = setting(
        field.positive_number,
        DEFAULT_MAX_INTERVAL_S,
        doc="The longest `/ping?interval=` served; a longer one gets 400.",
    )
    max_concurrent_streams: int = setting(
        field.int_range(1, MAX_CONCURRENT_STREAMS_LIMIT),
        DEFAULT_MAX_CONCURRENT_STREAMS,
        doc=(
            "SETTINGS_MAX_CONCURRENT_STREAMS: streams one HTTP/2 connection may carry at once, 1 to 999 (Hypercorn "
            "kills the connection at the 1000th)."
        ),
    )
    keep_alive_max_requests: int = setting(
        field.int_range(1, 2**31 - 1),
        DEFAULT_KEEP_ALIVE_MAX_REQUESTS,
        doc=(
            "Requests one connection may carry before the controller sends GOAWAY. Hypercorn's own 1000 cut long runs "
            "mid-flight; lower it only to test GOAWAY handling."
        ),
    )
    graceful_timeout_s: float = setting(
        field.number_at_least_0,
        DEFAULT_GRACEFUL_TIMEOUT_S,
        doc="On SIGINT or SIGTERM, how long pings in flight may take to finish after GOAWAY.",
    )
    handshake_timeout_s: float = setting(
        field.positive_number,
        DEFAULT_HANDSHAKE_TIMEOUT_S,
        doc=(
            "A TLS handshake not done by then is dropped: a peer that opens TCP and never speaks holds a socket and "
            "about 300 KB."
        ),
    )
    idle_timeout_s: float = setting(
        field.positive_number,
        DEFAULT_IDLE_TIMEOUT_S,
        doc=(
            "A connection with no request in flight this long is closed. Hypercorn's own 5 s closed call-home sessions"
            " between their pings; nginx's keepalive_timeout is 75 s."
        ),
    )
    switches: tuple[str, ...] = setting(
        field.switch_ids,
        ("switch-1",),
        doc=(
            "The fleet: client-certificate CNs let in, or patterns of them (`fleet-*`); any other verified CN gets "
            "403. Each listed id gets a certificate in `certs_dir`. Default: `switch.id`."
        ),
    )
    max_header_bytes: int = setting(
        field.int_range(1024, 1024 * 1024),
        DEFAULT_MAX_HEADER_BYTES,
        doc=(
            "The request line and headers of one request: larger ones are refused (HTTP/1.1: 431); an HTTP/2 header "
            "block larger than this ends the connection."
        ),
    )
    max_resets_per_s: int = setting(
        field.int_range(1, 1_000_000),
        DEFAULT_MAX_RESETS_PER_S,
        doc=(
            "RST_STREAMs one HTTP/2 connection may send a second (a burst of as many): more is rapid reset "
            "(CVE-2023-44487) and gets GOAWAY ENHANCE_YOUR_CALM."
        ),
    )
    max_control_frames_per_s: int = setting(
        field.int_range(1, 1_000_000),
        DEFAULT_MAX_CONTROL_FRAMES_PER_S,
        doc=(
            "PING and SETTINGS frames one HTTP/2 connection may send a second, likewise: each asks for an ACK, and a "
            "flood gets GOAWAY ENHANCE_YOUR_CALM."
        ),
    )
    max_pending_handshakes: int = setting(
        field.int_range(1, 1_000_000),
        DEFAULT_MAX_PENDING_HANDSHAKES,
        doc="TLS handshakes under way at once; a connection beyond this is reset at accept, before TLS costs anything.",
    )
    max_pending_handshakes_per_address: int = setting(
        field.int_range(1, 1_000_000),
        DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS,
        doc=(
            "The same from one address, so that one peer's flood cannot crowd out the fleet's. Addresses in "
            "`trusted_proxies` and `balancers` carry many switches: only the cap in all holds there."
        ),
    )
    handshake_slice_ms: float = setting(
        field.number_range(0, 1000),
        DEFAULT_HANDSHAKE_SLICE_MS,
        doc=(
            "TLS handshake work one turn of a worker's event loop does at most (CPU milliseconds) before it serves"
            " what else is ready; the rest waits for the next turns, handshakes already begun first. It bounds what"
            " handshakes add to a turn that also serves the pings of connections already up (a storm's requests and"
            " closes are not paced), and a fleet's handshakes finish one after another instead of all at the end."
            " 0: no pacing."
        ),
    )
    trusted_proxies: tuple[str, ...] = setting(
        field.proxy_identities,
        (),
        doc=(
            "Proxies whose forwarded identity of a switch is believed: CNs of their client certificates (each gets one"
            " in `certs_dir`) or addresses. The controller still verifies the forwarded certificate itself."
        ),
    )
    balancers: tuple[str, ...] = setting(
        field.networks,
        (),
        doc=(
            "Addresses of TCP load balancers in front of the controllers (nginx's stream module: `python -m "
            "controller nginx-conf --stream`), through which many switches' connections come: each must begin "
            "with the PROXY protocol's header (version 1 or 2), which gives the switch's own address, and one without "
            "it is closed; only `max_pending_handshakes` holds for them, not the cap per address. Trusted for "
            "nothing else: TLS passes through them, and each switch is known by its own certificate."
        ),
    )
    operators: tuple[str, ...] = setting(
        field.names,
        (),
        doc=(
            "CNs (or patterns) that may read every switch's records on the TLS port; a switch reads only its own. Each"
            " listed CN gets a certificate in `certs_dir`."
        ),
    )
    tls: ControllerTLS | None = subsection(
        ControllerTLS, None, doc="Your own PKI instead of `certs_dir`: nothing there is made or touched."
    )
    cleartext: Listener | None = subsection(
        Listener, None, doc="Also serve h2c (prior knowledge) and HTTP/1.1 without TLS, on loopback."
    )
    admin: Admin = subsection(Admin, Admin(), doc="The admin listener: plain HTTP for a browser or Prometheus.")
    account: Path | str | None = setting(
        field.account_store,
        None,
        relative=True,
        in_file=Path(DEFAULT_ACCOUNT),
        doc=(
            "The account of every connection and stream, kept across restarts and read by `/connections`, "
            "`/diagnosis`, `explain` and the switch's cross-check (`python -m controller account` shows it): an "
            "SQLite file, or a PostgreSQL URL (`postgresql://user@host/db`) that controllers on several machines "
            "share. `null`: kept in memory only, and gone at stop."
        ),
    )
    retention: Retention = subsection(Retention, Retention(), doc="How much of the account is kept.")
    workers: int | Literal["auto"] = setting(
        field.worker_count,
        "auto",
        doc=(
            "Processes that serve (`python -m controller serve`; `--workers` overrides): `auto` is one per core. They "
            "share the port and the account; the first also serves the admin listener. `demo` and `trials` serve in "
            "one process."
        ),
    )

    @property
    def worker_count(self) -> int:
        """How many processes serve: ``workers``, or one per core."""
        return (os.cpu_count() or 1) if self.workers == "auto" else self.workers

    @property
    def admin_port(self) -> int:
        """Where the admin listener listens: its own port, else the controller's next one (0 stays 0)."""
        if self.admin.port is not None:
            return self.admin.port
        return self.port + 1 if self.port else 0

    @property
    def proxy_names(self) -> tuple[str, ...]:
        """The trusted proxies named by the CN of their client certificate (the others are addresses)."""
        return tuple(entry for entry in self.trusted_proxies if not _is_network(entry))

    # Bench mode only (h2load cannot present a client certificate, nghttp2 issue #1479): a connection without one is
    # served as an anonymous switch. Never read from config.yaml; the CLI allows it on loopback addresses only.
    client_certs_optional: bool = False


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a switch redials after losing the controller: exponential backoff with jitter (RFC 8071 leaves the
    schedule to the implementation; this is the usual one)."""

    initial_s: float = setting(field.positive_number, 0.1, doc="The first wait before a redial.")
    max_s: float = setting(field.positive_number, 5.0, doc="The longest wait.")
    multiplier: float = setting(field.number_range(1, 100), 2.0, doc="Each wait is this times the last.")
    jitter: float = setting(
        field.number_range(0, 1),
        0.2,
        doc="Each wait is scaled by a random factor within +/- this fraction, so that a fleet does not redial in step.",
    )
    give_up_after_s: float = setting(
        field.number_at_least_0, 60.0, doc="A ping still failing this long after its first try fails for good."
    )

    def delay_s(self, attempt: int, unit_random: float) -> float:
        """The wait before redial ``attempt`` (1, 2, ...); ``unit_random`` is uniform in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        return base * (1 + self.jitter * (2 * unit_random - 1))


class RetryPolicy(StrEnum):
    """Which failed pings a persistent session sends again (``switch.retry``)."""

    # Only those known not to have been processed: never left the switch, or the controller refused the stream
    # (RST_STREAM REFUSED_STREAM), or its GOAWAY said so (RFC 9113 sections 6.8 and 8.7).
    SAFE = "safe"
    # Also a ping whose connection broke while it was in flight: GET is idempotent (RFC 9110 section 9.2.2).
    IDEMPOTENT = "idempotent"


@dataclass(frozen=True)
class SwitchTLS:
    """The switch's own PKI instead of dialout's. ``{id}`` in a path stands for the switch id (fleets)."""

    cert: Path = setting(
        field.file_path,
        relative=True,
        doc="The switch's client certificate, then any intermediates; `{id}` stands for the switch id.",
    )
    key: Path = setting(
        field.file_path, relative=True, doc="The private key of `cert`; `{id}` stands for the switch id."
    )
    ca: Path = setting(field.file_path, relative=True, doc="The CA chain that verifies the controller's certificate.")

    def for_switch(self, switch_id: str) -> SwitchTLS:
        return SwitchTLS(*(Path(str(path).replace("{id}", switch_id)) for path in (self.cert, self.key, self.ca)))


class StartWith(StrEnum):
    """``switch.start_with``: which of ``switch.controllers`` a session dials first, and first again after it lost
    its link (RFC 8071 section 4.1; ietf-netconf-server's ``start-with``). A dial that fails moves to the next."""

    FIRST_LISTED = "first-listed"
    LAST_CONNECTED = "last-connected"
    RANDOM = "random"


@dataclass(frozen=True)
class Keepalive:
    """``switch.keepalive``: how soon a controller that went silent (no FIN, no RST) is noticed.

    Both TCP keepalive on every socket (for a peer whose packets are dropped) and, in a persistent session, a ping
    of 0 s on the same connection once nothing has been heard for ``idle_s`` while pings are out (for a peer whose
    TCP stack still answers but which forwards nothing, e.g. a stalled proxy). Either way a dead controller is
    noticed within ``bound_s``."""

    idle_s: float = setting(
        field.positive_number, 5.0, doc="Silence before checking: TCP keepalive probes, and in a session a ping of 0 s."
    )
    interval_s: float = setting(field.positive_number, 1.0, doc="Between TCP keepalive probes.")
    count: int = setting(
        field.int_range(1, 100), 3, doc="TCP keepalive probes unanswered before the connection is dead."
    )

    @property
    def bound_s(self) -> float:
        return self.idle_s + self.interval_s * self.count


@dataclass(frozen=True)
class SwitchConfig:
    switch_id: str = setting(
        field.switch_id,
        "switch-1",
        key="id",
        doc="The switch's identity: the CN of its client certificate, files `<certs_dir>/<id>.pem` and `.key`.",
    )
    controller_url: str = setting(
        field.string,
        f"https://localhost:{DEFAULT_PORT}",
        doc="Where the switch dials out to. Default: `https://localhost:<controller.port>`.",
    )
    controllers: tuple[str, ...] = setting(
        field.string_list,
        (),
        doc=(
            "Several controllers instead of `controller_url`: a session fails over among them, a fleet spreads its "
            "switches over them."
        ),
    )
    start_with: StartWith = setting(
        field.choice(StartWith),
        StartWith.FIRST_LISTED,
        doc=(
            "Where a session begins, and begins again after losing its link (RFC 8071 section 4.1); each failed dial "
            "moves on to the next in the list."
        ),
    )
    keepalive: Keepalive = subsection(
        Keepalive,
        Keepalive(),
        doc=(
            "How soon a controller that went silent (no FIN, no RST) is noticed: within `idle_s` + `interval_s` x "
            "`count`."
        ),
    )
    certs_dir: Path = setting(
        field.file_path,
        Path("certs"),
        relative=True,
        doc="Where the switch finds `ca.pem` and its own `<id>.pem` and `<id>.key`.",
    )
    request_timeout_s: float = setting(
        field.positive_number, DEFAULT_REQUEST_TIMEOUT_S, doc="A ping with no complete answer after this long fails."
    )
    reconnect: ReconnectPolicy = subsection(
        ReconnectPolicy, ReconnectPolicy(), doc="How a persistent session redials: exponential backoff with jitter."
    )
    retry: RetryPolicy = setting(
        field.choice(RetryPolicy),
        RetryPolicy.SAFE,
        doc=(
            "Which failed pings a persistent session sends again: `safe`, only those known not to have been processed "
            "(never sent, REFUSED_STREAM, excluded by GOAWAY); `idempotent`, also those whose connection broke in "
            "flight (GET is idempotent, RFC 9110 section 9.2.2)."
        ),
    )
    tls: SwitchTLS | None = subsection(SwitchTLS, None, doc="Your own PKI instead of `certs_dir`.")

    @property
    def controller_urls(self) -> tuple[str, ...]:
        """Where this switch dials: ``controllers``, or the one ``controller_url``."""
        return self.controllers or (self.controller_url,)


class ViewPolicy(StrEnum):
    """``expect.controller_view``: whether a controller that keeps no account (no /connections) fails the run."""

    OPTIONAL = "optional"
    REQUIRED = "required"


class StreamPolicy(StrEnum):
    """``streams``: what a ping does when its HTTP/2 connection carries as many streams as it takes."""

    QUEUE = "queue"  # wait for a free stream
    SPILL = "spill"  # open another connection


class Spread(StrEnum):
    """``fleet.spread``: which of ``switch.controllers`` each switch of a fleet dials."""

    HASH = "hash"  # by a hash of its id: the same controller whatever the fleet's size or shard
    ROUND_ROBIN = "round-robin"  # switch n dials controller n mod the list's length: even counts


class ScenarioMode(StrEnum):
    ONE_SHOT = "one-shot"
    PERSISTENT = "persistent"
    FLEET = "fleet"


@dataclass(frozen=True)
class Expectation:
    """What a scenario must show to pass; ``None`` means "not checked"."""

    connections: int | None = setting(field.int_range(1, 1_000_000), None, doc="TCP+TLS connections the run must open.")
    http_version: str | None = setting(field.one_of(*HTTP_VERSIONS), None, doc="The HTTP version every ping must use.")
    controller_view: ViewPolicy = setting(
        field.choice(ViewPolicy),
        ViewPolicy.OPTIONAL,
        doc="Whether a controller that keeps no account (no `/connections`) fails the run: `required` or `optional`.",
    )


@dataclass(frozen=True)
class Request:
    """What one ping is on the wire: dialout's ``GET /ping?interval=N`` by default, or a real controller's
    long-poll endpoint. ``{interval}`` in the path is the ping's interval in seconds, ``{n}`` its number."""

    method: str = setting(field.http_method, "GET", doc="The ping's method.")
    path: str = setting(
        field.request_path,
        "/ping?interval={interval}",
        doc=(
            "The ping's target: `{interval}` is its interval in seconds, `{n}` its number in the run (a target of its "
            "own per ping, so that a controller can tell a retry from the next ping)."
        ),
    )
    headers: tuple[tuple[str, str], ...] = setting(
        field.headers, (), doc="Headers every ping carries, a mapping of names to values."
    )
    body: str | None = setting(field.optional_string, None, doc="A body every ping carries.")
    statuses: tuple[int, ...] = setting(field.statuses, (200,), doc="The statuses that count as an answer.")

    def target(self, interval: str, number: int = 0) -> str:
        return self.path.format(interval=interval, n=number)


@dataclass(frozen=True)
class OneShot:
    """A one-shot run: these pings, all at once (key ``pings``)."""

    mode: ClassVar[ScenarioMode] = ScenarioMode.ONE_SHOT
    pings_s: tuple[float, ...]


@dataclass(frozen=True)
class Schedule:
    """A persistent session (key ``persistent``): a batch of pings every ``every_s``, for ``duration_s`` or until
    ``count`` pings."""

    mode: ClassVar[ScenarioMode] = ScenarioMode.PERSISTENT

    every_s: float = setting(
        field.positive_number, doc="A batch each period, whether or not the last one has finished (required)."
    )
    interval_s: float = setting(field.number_at_least_0, doc="Each ping's interval (required).")
    batch: int = setting(field.int_range(1, 10_000), 1, doc="Pings per batch, sent at once.")
    duration_s: float | None = setting(
        field.positive_number, None, doc="How long the session runs (give this or `count`)."
    )
    count: int | None = setting(field.int_range(1, 10_000_000), None, doc="Pings in all (give this or `duration_s`).")

    def batches(self) -> int:
        if self.count is not None:
            return -(-self.count // self.batch)
        assert self.duration_s is not None
        return max(1, math.ceil(self.duration_s / self.every_s))

    def total_pings(self) -> int:
        return self.count if self.count is not None else self.batches() * self.batch


@dataclass(frozen=True)
class Fleet:
    """Many switches at once (key ``fleet``), each with its own certificate, client and connection, each sending
    ``pings`` concurrent pings of ``interval_s``; their starts spread over ``ramp_up_s``."""

    mode: ClassVar[ScenarioMode] = ScenarioMode.FLEET

    switches: int = setting(field.int_range(1, 100_000), doc="How many switches (required).")
    pings: int = setting(field.int_range(1, 10_000), doc="Concurrent pings per switch (required).")
    interval_s: float = setting(field.number_at_least_0, doc="Each ping's interval (required).")
    id_pattern: str = setting(
        field.string,
        "fleet-{n:04d}",
        doc="The switches' ids, `str.format` of n = 1, 2, ...; they must match `controller.switches`.",
    )
    ramp_up_s: float = setting(field.number_at_least_0, 0.0, doc="Spread the switches' starts over this long.")
    spread: Spread = setting(
        field.choice(Spread),
        Spread.HASH,
        doc=(
            "How switches are spread over `switch.controllers`: `hash` (of the switch id: the same controller whatever"
            " the fleet's size or shard) or `round-robin`."
        ),
    )

    def switch_ids(self) -> list[str]:
        return [self.id_pattern.format(n=n) for n in range(1, self.switches + 1)]


# What a scenario runs: exactly one of these, under its own key.
ScenarioKind = OneShot | Schedule | Fleet
_KIND_KEYS: dict[str, type[Schedule] | type[Fleet]] = {"persistent": Schedule, "fleet": Fleet}
# What each kind's key means, for the configuration reference (its own keys are documented on Schedule and Fleet).
KIND_DOCS = {
    "pings": (
        "A one-shot run: one ping per interval in seconds, all sent at once (`[5, 10, 15]`), or many of one "
        "interval (`{count: 1000, interval_s: 1}`)."
    ),
    "persistent": "A persistent session: a batch of pings every period, redialling when its link goes.",
    "fleet": "Many switches at once, each with its own certificate, client and connection.",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: ScenarioKind  # read apart, from whichever of pings, persistent and fleet the scenario has
    http2: bool = setting(field.boolean, True, doc="Offer h2 in ALPN; `false`: HTTP/1.1 only.")
    streams: StreamPolicy = setting(
        field.choice(StreamPolicy),
        StreamPolicy.QUEUE,
        doc="A connection at its stream limit: `queue` (wait for a free stream) or `spill` (open another connection).",
    )
    description: str = setting(field.string, "", doc="One line, printed with the run.")
    expect: Expectation = subsection(
        Expectation, Expectation(), doc="What must hold for exit code 0; a key left out is not checked."
    )
    request: Request = subsection(
        Request,
        Request(),
        doc=(
            "What one ping is on the wire: dialout's `GET /ping?interval=N` by default, or a real controller's "
            "endpoint."
        ),
    )


@dataclass(frozen=True)
class Config:
    controller: ControllerConfig
    switch: SwitchConfig
    scenarios: tuple[Scenario, ...]

    @property
    def switch_ids(self) -> tuple[str, ...]:
        """Every switch that needs a certificate: the fleet (not its patterns), and the switch this file runs as.
        A fleet scenario's generated ids get theirs when it runs."""
        listed = (switch for switch in self.controller.switches if "*" not in switch)
        return tuple(dict.fromkeys((*listed, self.switch.switch_id)))

    @property
    def client_ids(self) -> tuple[str, ...]:
        """Every client certificate dialout's PKI issues: the switches', the trusted proxies' (named by CN) and the
        operators'."""
        operators = (name for name in self.controller.operators if "*" not in name)
        return tuple(dict.fromkeys((*self.switch_ids, *self.controller.proxy_names, *operators)))

    def scenario(self, name: str) -> Scenario:
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        known = ", ".join(s.name for s in self.scenarios) or "none"
        raise ConfigError("scenarios", f"no scenario named {name!r} (known: {known})")


# --- loading -------------------------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and parse ``path``. Every failure, from a missing file to a bad value, is a ``ConfigError`` that
    names the file, and the line and key path where it has them."""
    data, lines = load_yaml(path)
    try:
        return parse_config(data if data is not None else {}, base_dir=path.parent)
    except ConfigError as exc:
        exc.location = f"{path}:{line_of(exc.path, lines)}" if lines else str(path)
        raise


# --- parsing -------------------------------------------------------------------------------------------------


def parse_config(data: object, base_dir: Path = Path()) -> Config:
    """Turn a mapping (as YAML gives it) into a ``Config``. Relative paths resolve against ``base_dir``, the
    config file's directory, never the working directory."""
    root = field.mapping(data, "", {"controller", "switch", "scenarios"})
    controller = _parse_controller(root.get("controller", {}), base_dir)
    switch = _parse_switch(root.get("switch", {}), base_dir, controller)
    if "switches" not in root.get("controller", {}):
        # The fleet defaults to the one switch this file describes, so the demo needs no list.
        controller = replace(controller, switches=(switch.switch_id,))
    scenarios_data = field.mapping(root.get("scenarios", {}), "scenarios", None)
    scenarios = tuple(
        _parse_scenario(name, value, f"scenarios.{name}", base_dir) for name, value in scenarios_data.items()
    )
    return Config(controller=controller, switch=switch, scenarios=scenarios)


def _parse_controller(data: object, base_dir: Path) -> ControllerConfig:
    controller = build(ControllerConfig, data, "controller", base_dir)
    if not controller.hostnames:
        raise ConfigError("controller.hostnames", "must name at least one hostname for the controller certificate")
    cleartext = controller.cleartext
    if cleartext is not None:
        _check_cleartext_host(cleartext, controller.trusted_proxies)
    admin = controller.admin
    if admin.enabled and not admin.allow_remote and not is_loopback_host(admin.host):
        raise ConfigError(
            "controller.admin.host",
            f"{admin.host} is not loopback: the admin listener shows every "
            "switch and takes no certificate; set allow_remote: true to listen there anyway",
        )
    if admin.enabled and admin.allow_remote and not is_loopback_host(admin.host) and admin.token_file is None:
        raise ConfigError(
            "controller.admin.token_file",
            f"a remote admin listener ({admin.host}) needs a credential: name a file (mode 0600) holding a bearer "
            "token, or read the records on the TLS port with a certificate in controller.operators",
        )
    if controller.port == 65535 and controller.admin.port is None and admin.enabled:
        raise ConfigError("controller.admin.port", "controller.port is 65535, so there is no next port: set one")
    return controller


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_cleartext_host(listener: Listener, trusted_proxies: tuple[str, ...]) -> None:
    """Cleartext carries no certificate: anyone who can reach it is served anonymously. Loopback only, unless a
    trusted proxy is named by the address it listens on."""
    try:
        address = ipaddress.ip_address(listener.host)
    except ValueError:
        if listener.host != "localhost":
            raise ConfigError("controller.cleartext.host", f"must be an IP address, got {listener.host!r}") from None
        return
    if address.is_loopback:
        return
    networks = [ipaddress.ip_network(entry) for entry in trusted_proxies if _is_network(entry)]
    if not any(address in network for network in networks):
        raise ConfigError(
            "controller.cleartext.host",
            f"{listener.host} is not loopback: cleartext listens on loopback only, unless controller.trusted_proxies "
            "names the address of the proxy that uses it",
        )


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text)
    except ValueError:
        return False
    return True


def _parse_switch(data: object, base_dir: Path, controller: ControllerConfig) -> SwitchConfig:
    values = read_settings(SwitchConfig, data, "switch", base_dir)
    if "controller_url" in values and values.get("controllers"):
        raise ConfigError(
            "switch.controllers", "give controller_url (one controller) or controllers (a list), not both"
        )
    if "controllers" in values and not values["controllers"]:
        raise ConfigError("switch.controllers", "must list at least one controller URL")
    values.setdefault("controller_url", f"https://localhost:{controller.port}")
    check_controller_url(values["controller_url"], "switch.controller_url")
    controllers = values.get("controllers", ())
    for index, url in enumerate(controllers):
        check_controller_url(url, f"switch.controllers[{index}]")
    if len(set(controllers)) != len(controllers):
        raise ConfigError("switch.controllers", "lists a controller twice")
    switch = SwitchConfig(**values)
    policy = switch.reconnect
    if policy.max_s < policy.initial_s:
        raise ConfigError(
            "switch.reconnect.max_s", f"must be >= initial_s ({policy.initial_s:g}), got {policy.max_s:g}"
        )
    return switch


def _parse_scenario(name: str, data: object, path: str, base_dir: Path) -> Scenario:
    if not isinstance(name, str) or not _SCENARIO_NAME.fullmatch(name):
        raise ConfigError(path, f"scenario names are letters, digits, '-' and '_', got {name!r}")
    section = field.mapping(data, path, None)
    kinds = [kind for kind in ("pings", "persistent", "fleet") if kind in section]
    if len(kinds) != 1:
        raise ConfigError(
            f"{path}.{kinds[1] if kinds[1:] else 'pings'}",
            "give one of pings (a one-shot run, e.g. [5, 10, 15]), persistent (a session) or fleet (many switches), "
            + (f"not {' and '.join(kinds)}" if kinds else "got none"),
        )
    values = read_settings(Scenario, section, path, base_dir, also=frozenset({"pings", *_KIND_KEYS}))
    [key] = kinds
    kind: ScenarioKind = (
        OneShot(_parse_pings(section[key], f"{path}.pings"))
        if key == "pings"
        else build(_KIND_KEYS[key], section[key], f"{path}.{key}", base_dir)
    )
    if isinstance(kind, Schedule) and (kind.duration_s is None) == (kind.count is None):
        raise ConfigError(
            f"{path}.persistent.duration_s",
            "give either duration_s (seconds) or count (pings in "
            "all), not " + ("both" if kind.count is not None else "neither"),
        )
    if isinstance(kind, Fleet):
        _check_id_pattern(kind, f"{path}.fleet.id_pattern")
    return Scenario(name=name, kind=kind, **values)


def _parse_pings(pings: object, path: str) -> tuple[float, ...]:
    if isinstance(pings, dict):  # {count: 1000, interval_s: 1}: many pings of one interval
        many = field.mapping(pings, path, {"count", "interval_s"})
        for key in ("count", "interval_s"):
            if key not in many:
                raise ConfigError(f"{path}.{key}", "missing")
        count = field.int_range(1, 100_000)(many["count"], f"{path}.count")
        pings = [field.number_at_least_0(many["interval_s"], f"{path}.interval_s")] * count
    if not isinstance(pings, list) or not pings:
        raise ConfigError(
            path, f"must be a non-empty list of intervals in seconds, or {{count, interval_s}}, got {pings!r}"
        )
    return tuple(field.number_at_least_0(value, f"{path}[{index}]") for index, value in enumerate(pings))


def _check_id_pattern(fleet: Fleet, path: str) -> None:
    try:
        ids = {fleet.id_pattern.format(n=1), fleet.id_pattern.format(n=2)}
        for generated in ids:
            field.switch_id(generated, path)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(path, f"must be a str.format pattern of n, e.g. 'fleet-{{n:04d}}': {exc}") from exc
    if len(ids) < 2:
        raise ConfigError(path, "must contain {n}, so that every switch gets its own id")
