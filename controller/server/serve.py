"""Serving the controller app with Hypercorn over HTTP/2 with mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import resource
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from controller.accounts.connections import ConnectionRegistry
from controller.accounts.ledger import Ledger
from controller.accounts.refusals import Refusals
from controller.accounts.store import Store
from controller.http.admin import create_admin_app
from controller.http.app import Unavailable, create_app
from controller.http.metrics import Metrics
from controller.server import hypercorn_seam
from controller.server.accepting import HandshakeGate, quiet_accept_errors
from controller.server.asgi_tls import (
    CheckedPathStream,
    ConnectionAwareTCPServer,
    StreamIdHTTPStream,
    live_servers,
    note_client_hello,
    note_handshake_done,
)
from controller.server.balance import Share
from controller.server.graceful import refuse_new_streams
from controller.server.h2_limits import GuardedH2Protocol, PeerLimits
from controller.server.hypercorn_seam import DialoutConfig
from controller.server.proxy_protocol import ProxyHeaders
from dialout.asyncio_seam import (
    FailedHandshake,
    HandshakePacer,
    count_loop_turns,
    read_before_tls,
    report_failed_handshakes,
    send_handshake_alerts,
    smaller_tls_read_buffers,
)
from dialout.config import ControllerConfig
from dialout.errors import DialoutError, PKIError
from dialout.loop_lag import LoopLag
from dialout.pages import Page
from dialout.refusals import of_handshake_error, openssl_words
from dialout.text import plural
from dialout.tls_files import ca_private_key_path, controller_files

logger = logging.getLogger(__name__)

# RFC 9113 section 9.2: HTTP/2 over TLS needs TLS >= 1.2 and, for 1.2, an AEAD cipher with ephemeral key exchange.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# h2 first: a client that offers both gets HTTP/2; one that offers only http/1.1 (or no ALPN) gets HTTP/1.1.
ALPN_PROTOCOLS = ("h2", "http/1.1")
# Connections the kernel queues for accept() (capped by net.core.somaxconn). Hypercorn's 100 overflowed when a fleet
# redialled at once: each dial beyond it waited for a SYN retransmit (1 s, then 3 s), or, its ACK dropped, believed
# itself connected to a controller that never saw it.
LISTEN_BACKLOG = 4096
# A bearer token shorter than this is refused: a secret, not a password someone could guess.
MIN_TOKEN_CHARS = 16
# With no hard limit, the soft one goes this far: more sockets than one controller process can serve anyway.
OPEN_FILES_CAP = 1 << 20
# Once graceful_timeout_s is over, what is left is cut (aborted, not closed: no TLS close_notify to wait for), and
# the serving must be over within this. Hypercorn's own wait (its graceful_timeout) is set this much later still,
# as a backstop that should never act.
CUT_BOUND_S = 2.0


class ServerError(DialoutError):
    """The controller cannot start: unusable certificates, or an address it cannot listen on. ``usage``: the
    command line asked for something not allowed (exit 2), rather than the machine refusing it (exit 1)."""

    page = Page.TROUBLESHOOTING

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage

    @property
    def code(self) -> int:
        return 2 if self.usage else 1


def server_ssl_context(cfg: ControllerConfig) -> ssl.SSLContext:
    """TLS for the controller: its certificate (dialout's, or ``controller.tls``), and a client certificate
    REQUIRED and verified against the client CA (OPTIONAL, but verified when sent, in bench mode). Raises PKIError,
    one line naming the file, for anything unusable."""
    files = controller_files(cfg)
    files.identity.check()
    guarded = [files.identity.key] if files.own else [files.identity.key, ca_private_key_path(cfg.certs_dir)]
    for key in guarded:
        _check_private(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_TLS_VERSION
    context.options |= ssl.OP_NO_COMPRESSION  # RFC 9113 section 9.2.1
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    # No TLS 1.3 session tickets: OpenSSL sends two after every handshake by default, each the session with the
    # switch's certificate in it, sealed (0.3 of the server's 1.1 ms a handshake, bench/handshake_cost.py), and
    # a switch on asyncio cannot offer one back (its connections take no session). A switch that would resume
    # makes a full handshake, which the trace shows as any other.
    context.num_tickets = 0
    context.verify_mode = ssl.CERT_OPTIONAL if cfg.client_certs_optional else ssl.CERT_REQUIRED
    context.sni_callback = note_client_hello
    files.identity.configure_cert(context)
    files.trust.configure_trust(context)
    return context


def _check_private(key: Path, what: str = "private key") -> None:
    """Refuse a private key (or a token) that others can read: a secret anyone can copy identifies no one."""
    try:
        mode = stat.S_IMODE(key.stat().st_mode)
    except FileNotFoundError:
        if what != "private key":
            raise PKIError(f"{key}: {what} missing") from None
        return  # the CA key may live elsewhere; the controller does not need it to serve
    if mode & 0o077:
        raise PKIError(f"{key}: {what} is readable by others (mode {mode:04o}): run `chmod 600 {key}`")


def check_loopback_only(sockets: list[socket.socket]) -> None:
    """Bench mode serves clients without certificates: allowed only where nothing but this machine can dial."""
    for sock in sockets:
        host = sock.getsockname()[0]
        if not ipaddress.ip_address(host).is_loopback:
            raise ServerError(
                f"--client-certs-optional is for benches on loopback only; {host} is not loopback", usage=True
            )


def bind_sockets(host: str, port: int, scheme: str = "https", announce: bool = True) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (``localhost`` is both 127.0.0.1 and ::1), all
    on one port. An address family the machine has switched off is skipped as long as one address binds."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerError(f"cannot resolve controller host {host!r}: {exc.strerror}") from exc
    sockets: list[socket.socket] = []
    skipped: list[str] = []
    addresses = dict.fromkeys((family, str(address[0])) for family, _, _, _, address in infos)
    for family, ip in addresses:
        bind_port = sockets[0].getsockname()[1] if sockets else port
        try:
            sockets.append(socket.create_server((ip, bind_port), family=family))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                skipped.append(f"{ip} ({exc.strerror})")
                continue
            for sock in sockets:
                sock.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ServerError(f"cannot listen on {ip} port {bind_port}: {reason}") from exc
    if not sockets:
        raise ServerError(f"cannot listen on any address of {host!r}: {', '.join(skipped)}")
    for sock in sockets if announce else ():  # listening from here on: connections wait in the backlog
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        logger.info("listening on %s://%s:%d", scheme, shown, bound_port)
    return sockets


def admin_token(cfg: ControllerConfig) -> str | None:
    """The admin listener's bearer token, from ``controller.admin.token_file`` (None: none set). Refused when
    others can read the file, or when it is too short to be a secret."""
    path = cfg.admin.token_file
    if path is None:
        return None
    _check_private(path, "token file")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerError(f"controller.admin.token_file: cannot read {path}: {exc}", usage=True) from exc
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise ServerError(
            f"controller.admin.token_file: {path} must hold one token of at least {MIN_TOKEN_CHARS} printable "
            "characters without spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)",
            usage=True,
        )
    return token


def raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one: every switch holds a socket, and at a soft limit of 1024
    a flood of silent connections left no descriptor for a real switch's accept (issue 20). The hard limit is the
    administrator's; the soft one is only a default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard == resource.RLIM_INFINITY and soft >= OPEN_FILES_CAP):
        return
    wanted = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:  # a container may refuse: say so, and serve with what there is
        logger.warning("open files: soft limit stays %d (raising it to %d failed: %s)", soft, wanted, exc)
        return
    logger.info("open files: soft limit raised from %d to %d", soft, wanted)


def install_seams() -> None:
    """Where serving bends Hypercorn and asyncio, once per process (``hypercorn_seam``; asyncio's and h2's,
    shared with the switch, are ``dialout.asyncio_seam`` and ``dialout.h2_seam``)."""
    send_handshake_alerts()
    smaller_tls_read_buffers()
    hypercorn_seam.install(ConnectionAwareTCPServer, GuardedH2Protocol, StreamIdHTTPStream, CheckedPathStream)


def hypercorn_config(cfg: ControllerConfig, ssl_context: ssl.SSLContext, registry: ConnectionRegistry) -> DialoutConfig:
    config = DialoutConfig(ssl_context)
    config.registry = registry  # where our TCPServer records this server's connections
    config.limits = PeerLimits(cfg.max_resets_per_s, cfg.max_control_frames_per_s, cfg.max_header_bytes)
    config.h2_max_concurrent_streams = cfg.max_concurrent_streams
    config.keep_alive_max_requests = cfg.keep_alive_max_requests
    config.graceful_timeout = cfg.graceful_timeout_s + 2 * CUT_BOUND_S  # a backstop: ours cuts first (Stopped)
    config.ssl_handshake_timeout = cfg.handshake_timeout_s
    config.keep_alive_timeout = cfg.idle_timeout_s
    config.h11_max_incomplete_size = cfg.max_header_bytes
    config.h2_max_header_list_size = cfg.max_header_bytes
    config.alpn_protocols = list(ALPN_PROTOCOLS)
    config.backlog = LISTEN_BACKLOG
    # Route Hypercorn's own messages through logging, so __main__ decides where they go.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None  # the app logs one line per request itself
    return config


def new_registry(cfg: ControllerConfig, keep_account: bool = True) -> ConnectionRegistry:
    """A connection registry that knows the certificate this controller presents (the TLS extension's
    ``server_cert``), and keeps its account in ``controller.account``'s store, if any (opened here: a store that
    cannot be used stops the controller before it serves). ``keep_account``: False for trials, whose record is
    their scorecard, and whose timings a writer thread beside them would only disturb."""
    leaf = controller_files(cfg).identity.chain()[0]
    ledger = None if cfg.account is None or not keep_account else Ledger(cfg.account, cfg.retention)
    return ConnectionRegistry(
        server_cert_pem=leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"), ledger=ledger
    )


def check_store(cfg: ControllerConfig) -> None:
    """The account's store can be used (made, or of a schema this dialout reads): else a ``StoreError``."""
    if cfg.account is not None:
        Store(cfg.account, create=True).close()


@dataclass(frozen=True)
class Listeners:
    """The controller's listening sockets, bound by the caller: the TLS port's, ``cleartext``'s (the same app
    without TLS: h2c with prior knowledge, or HTTP/1.1) and the admin listener's (plain HTTP)."""

    tls: Sequence[socket.socket]
    cleartext: Sequence[socket.socket] = ()
    admin: Sequence[socket.socket] = ()
    shared: Share | None = None  # TLS and cleartext listeners shared with other workers: this one's part of their load


@dataclass(frozen=True)
class Stopped:
    """How serving ended: the streams still open when ``graceful_timeout_s`` ran out, and their connections, cut
    (none: every stream finished in its grace)."""

    grace_s: float
    cut_streams: int = 0
    cut_connections: int = 0

    @property
    def clean(self) -> bool:
        return self.cut_streams == 0


def log_stopped(stopped: Stopped) -> None:
    """The last line of every command that served: whether its shutdown cut anything."""
    if stopped.clean:
        logger.info("stopped: no stream was cut")
        return
    logger.warning(
        "stopped: %s on %s cut when graceful_timeout_s (%g s) ran out",
        plural(stopped.cut_streams, "stream"),
        plural(stopped.cut_connections, "connection"),
        stopped.grace_s,
    )


async def serve(  # noqa: PLR0913 - what is served, where, until when, and what runs beside it, each by name
    cfg: ControllerConfig,
    ssl_context: ssl.SSLContext,
    listeners: Listeners,
    shutdown_trigger: Callable[[], Awaitable[object]],
    registry: ConnectionRegistry,
    stopping: asyncio.Event | None = None,
    alongside: Callable[[DialoutConfig, Unavailable], Awaitable[object]] | None = None,
) -> Stopped:
    """Serve the controller on already-listening sockets until ``shutdown_trigger`` returns, then let in-flight
    requests finish for up to ``graceful_timeout_s``, and cut what is left: it returns within that plus
    ``CUT_BOUND_S``, whatever the peers do (a stream blocked on flow control, a peer that stopped reading, a
    handler still sleeping). Every connection is recorded in ``registry``. ``stopping`` is set once the shutdown
    has begun and new streams are refused. The admin app (``controller/http/admin.py``) is stopped with the rest.
    ``alongside``: run while serving, with the server's Hypercorn config (its live connections) and the app's 503
    switch (``python -m controller trials``).

    The sockets are bound by the caller, so a test can use port 0 and know the port before the first request,
    and connections that arrive before Hypercorn starts accepting wait in the listen backlog instead of failing.
    ``worker_serve`` is Hypercorn's internal entry point that takes sockets (the public ``serve`` does not):
    hence the pin to the 0.18 series.
    """
    install_seams()
    count_loop_turns()
    raise_open_files_limit()
    sockets, cleartext_sockets, admin_sockets = list(listeners.tls), list(listeners.cleartext), list(listeners.admin)
    for sock in (*sockets, *cleartext_sockets):
        # Accepted sockets inherit this (Linux). asyncio sets TCP_NODELAY itself only on sockets whose proto is
        # IPPROTO_TCP, and socket.create_server's are proto 0: without it, an HTTP/1.1 response (headers and body
        # written separately) waited ~40 ms for the client's delayed ACK (Nagle).
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    gate = _gate(cfg, listeners)
    quiet_accept_errors()
    metrics = Metrics(registry)
    _take_charge_of_handshakes(ssl_context, cfg, metrics, registry)
    unavailable = Unavailable()
    app = create_app(cfg, registry, metrics, unavailable)
    config = hypercorn_config(cfg, ssl_context, registry)
    config.gate = gate  # where each connection's TCP task says its handshake is done
    shutting_down = asyncio.Event()

    async def begin_shutdown() -> None:
        await shutdown_trigger()
        shutting_down.set()
        gate.stop_sharing()  # the other workers take what comes now
        await refuse_new_streams(config)
        if stopping is not None:
            stopping.set()

    main = worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),
        config,
        sockets=Sockets(secure_sockets=sockets, insecure_sockets=cleartext_sockets, quic_sockets=[]),
        shutdown_trigger=begin_shutdown,
    )
    if alongside is not None:
        main = _with(main, alongside(config, unavailable))
    servings, configs = [main], [config]
    if admin_sockets:
        token = admin_token(cfg)
        if token is not None:
            logger.info("admin listener: every request needs the bearer token in %s", cfg.admin.token_file)
        admin_config = DialoutConfig()
        admin_config.graceful_timeout = config.graceful_timeout
        admin_config.errorlog = logging.getLogger("hypercorn.error")
        admin_config.accesslog = None
        closing = asyncio.Event()  # the live page's streams end at once: they would hold the grace for nothing

        async def admin_shutdown() -> None:
            await shutting_down.wait()
            closing.set()

        admin_app = create_admin_app(cfg, registry, metrics, closing, token)
        servings.append(
            worker_serve(
                wrap_app(admin_app, admin_config.wsgi_max_body_size, "asgi"),
                admin_config,
                sockets=Sockets(secure_sockets=[], insecure_sockets=admin_sockets, quic_sockets=[]),
                shutdown_trigger=admin_shutdown,
            )
        )
        configs.append(admin_config)
    # loop lag: dialout/loop_lag; the metrics kept fresh for a scrape of another worker (controller/http/metrics),
    # the last time once the account's last rows are written
    async with LoopLag.of_running_loop().running(), metrics.kept_fresh(), _account_kept(registry.ledger):
        return await _bounded(servings, configs, shutting_down, cfg.graceful_timeout_s)


def _gate(cfg: ControllerConfig, listeners: Listeners) -> HandshakeGate:
    """What every connection to the TLS and cleartext listeners goes through between accept() and its handshake's
    end, the load shared with other workers on the same listeners counted in it."""
    # Addresses that carry many switches, held to the cap in all only: trusted proxies', and TCP balancers'.
    shared = [entry for entry in cfg.trusted_proxies if entry not in cfg.proxy_names] + list(cfg.balancers)
    gate = HandshakeGate(
        cfg.max_pending_handshakes,
        cfg.max_pending_handshakes_per_address,
        [ipaddress.ip_network(entry) for entry in shared],
    )
    for sock in (*listeners.tls, *listeners.cleartext):
        gate.guard(sock)
    if listeners.shared is not None:
        gate.share_with_workers(listeners.shared)
    return gate


@contextlib.asynccontextmanager
async def _account_kept(ledger: Ledger | None) -> AsyncIterator[None]:
    """The account written to its store while serving, and what is left of it once every connection has closed."""
    if ledger is None:
        yield
        return
    writing = asyncio.create_task(ledger.run())
    try:
        yield
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
        await ledger.close()


async def _bounded(
    servings: Sequence[Awaitable[None]], configs: list[DialoutConfig], shutting_down: asyncio.Event, grace_s: float
) -> Stopped:
    """Run the servers until they end; once the shutdown has begun and ``grace_s`` is over, cut what is left."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_awaited(serving)) for serving in servings]
        cutter = group.create_task(_cut_after_grace(shutting_down, grace_s, configs))
        await asyncio.wait(tasks)
        if not cutter.done():
            cutter.cancel()
    return cutter.result() if not cutter.cancelled() else Stopped(grace_s)


async def _cut_after_grace(shutting_down: asyncio.Event, grace_s: float, configs: list[DialoutConfig]) -> Stopped:
    await shutting_down.wait()
    await asyncio.sleep(grace_s)
    left = [server for config in configs for server in live_servers(config)]
    stopped = Stopped(grace_s, sum(server.in_flight() for server in left), len(left))
    if left:
        logger.warning(
            "graceful_timeout_s (%g s) is over: cutting %s on %s",
            grace_s,
            plural(stopped.cut_streams, "stream"),
            plural(stopped.cut_connections, "connection"),
        )
    for server in left:
        await server.cut()
    return stopped


async def _with(serving: Awaitable[None], alongside: Awaitable[object]) -> None:
    """Serve, with ``alongside`` running beside it (it ends the serving through the shutdown trigger, if at all)."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_awaited(alongside))
        group.create_task(_awaited(serving))


async def _awaited(awaitable: Awaitable[object]) -> None:
    await awaitable


def _take_charge_of_handshakes(
    ssl_context: ssl.SSLContext, cfg: ControllerConfig, metrics: Metrics, registry: ConnectionRegistry
) -> None:
    """Each handshake timed (when done), each failed one counted and recorded, and all of them paced; a balancer's
    PROXY header read before its connection's TLS."""
    ssl_context.sslobject_class = StampedSSLObject
    report_failed_handshakes(ssl_context, _refused_handshake(metrics, registry.refusals))
    if cfg.balancers:
        read_before_tls(ssl_context, ProxyHeaders([ipaddress.ip_network(entry) for entry in cfg.balancers]))
    if cfg.handshake_slice_ms > 0:
        HandshakePacer(cfg.handshake_slice_ms / 1000).pace(ssl_context)


def _refused_handshake(metrics: Metrics, refusals: Refusals) -> FailedHandshake:
    """Count a failed handshake by OpenSSL's reason (``/metrics``) and record it, by address and kind, in the
    account (logged once a second at most, with its fix)."""

    def refused(peername: object, exc: ssl.SSLError) -> None:
        metrics.handshake_failed(exc.reason)
        host = str(peername[0]) if isinstance(peername, tuple) else str(peername)
        refusals.handshake(host, of_handshake_error(exc), openssl_words(exc))

    return refused


class StampedSSLObject(ssl.SSLObject):
    """An SSLObject (asyncio's TLS uses ``context.sslobject_class``) that notes when each server handshake is done,
    as the ClientHello's time is noted (``asgi_tls``)."""

    def do_handshake(self) -> None:
        super().do_handshake()
        note_handshake_done(self)
