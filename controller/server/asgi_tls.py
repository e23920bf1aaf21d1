"""Fill the ASGI TLS extension, and tell the app which connection each request came on.

Why this exists: Hypercorn 0.18 does not fill ``scope["extensions"]["tls"]`` (pgjones/hypercorn#62, open), so an
app cannot see which certificate the peer presented, and nothing in the scope says which connection a request
came on. Both are facts of the connection, known when Hypercorn accepts it; so:

1. Hypercorn's per-connection ``TCPServer`` is replaced (``hypercorn_seam.install``) by a subclass that, when a
   connection starts, records it in the server's ``ConnectionRegistry`` from its own
   verified TLS session (never from anything the client sends in HTTP) and sets a context variable. Hypercorn
   runs every request of that connection in a task created inside it, so each one inherits the variable.
2. ``ConnectionScopeMiddleware`` reads the variable and adds ``scope["extensions"]["tls"]`` (asgiref
   specs/tls.rst) and ``scope["extensions"]["dialout.connection"]`` (``{"connection": ControllerConnection,
   "stream": n}``), and counts the stream.

3. The same for each HTTP/2 request's stream id on the wire, which Hypercorn keeps on its ``HTTPStream`` and leaves
   out of the scope: its HTTP/2 protocol is made to make streams of a subclass that runs the app with the
   id in a context variable, so the account, the log and the live page number streams as the switch does
   (1, 3, 5), not 1, 2, 3.

Delete 1 and the "tls" half of 2 once Hypercorn fills the extension itself: the middleware already leaves an
extension the server provides untouched. ``tests/test_seams.py`` pins the Hypercorn internals used here and
fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import time
import weakref
from typing import Any, ClassVar, cast

from cryptography import x509
from hypercorn.protocol.events import Body, EndBody, Event, Request, Response
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope, Scope

from controller.accounts.connections import ConnectionRegistry, ControllerConnection, StreamSpan
from controller.accounts.forwarded import Identified, ProxyPolicy, carries_forwarding, read_forwarded
from controller.server.hypercorn_seam import SeamTCPServer, dialout_config
from dialout.asyncio_seam import first_read, loop_turn
from dialout.text import Address, format_address, printable

CONNECTION_EXTENSION = "dialout.connection"
# RFC 8446 section 4.1.2 and RFC 5246 appendix A.1: the wire values of the versions we allow.
_TLS_VERSION_CODES = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

logger = logging.getLogger(__name__)
MAX_LOGGED_TARGET = 200  # bytes of a refused request target that its log line shows

_current_connection: contextvars.ContextVar[ControllerConnection | None] = contextvars.ContextVar(
    "dialout_connection", default=None
)
# Its server task, whose writes a loop turn gathers (hypercorn_seam.SeamTCPServer): an answer is on the wire when
# that turn's write is made, not when the app's last send returns. Weakly: the tasks made in its context (its idle
# timer's) would hold the server in a cycle through their context, left to the garbage collector.
_current_server: contextvars.ContextVar[weakref.ref[SeamTCPServer] | None] = contextvars.ContextVar(
    "dialout_server", default=None
)
# The HTTP/2 stream id of the request being started (None for HTTP/1.1, which has none on the wire).
_wire_stream_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("dialout_stream_id", default=None)
_cipher_codes: dict[str, int] = {}
# When each TLS connection's ClientHello arrived, and when its handshake was done: which asyncio does not tell. Both
# are noted where the bytes are read; the connection's task, which records it, runs some loop turns later (on a busy
# loop, tens of milliseconds: a dial after the handshake looked like one during it).
# Each with the loop's turn it was read in (asyncio_seam.loop_turn): which of two came first, beyond a loop's lag.
_hello_at: weakref.WeakKeyDictionary[ssl.SSLObject, tuple[float, int | None]] = weakref.WeakKeyDictionary()
_done_at: weakref.WeakKeyDictionary[ssl.SSLObject, tuple[float, int | None]] = weakref.WeakKeyDictionary()


def current_connection() -> ControllerConnection | None:
    """The connection whose server task this is (None outside one, or on a listener without a registry)."""
    return _current_connection.get()


def note_client_hello(ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
    """``SSLContext.sni_callback``: OpenSSL calls it for every ClientHello, with or without SNI. Keeps the time,
    so a connection's record says how long its handshake took and which connections were dialled together."""
    _hello_at[ssl_object] = first_read(ssl_object) or (time.monotonic(), loop_turn())  # read, maybe turns ago


def note_handshake_done(ssl_object: ssl.SSLObject) -> None:
    """The server's handshake on ``ssl_object`` succeeded: now (from the TLS object's own do_handshake)."""
    _done_at[ssl_object] = (time.monotonic(), loop_turn())


class ConnectionAwareTCPServer(SeamTCPServer):
    _registry: ConnectionRegistry | None = None
    _connection: ControllerConnection | None = None
    # Every connection being served, so a shutdown can reach them (controller/server/graceful.py).
    live: ClassVar[weakref.WeakSet[ConnectionAwareTCPServer]] = weakref.WeakSet()

    async def run(self) -> None:
        gate = dialout_config(self.config).gate
        if gate is not None:  # asyncio starts this task once the handshake is done
            gate.handshake_done(self.writer.get_extra_info("socket").fileno())
        self.live.add(self)
        try:
            await self._run()
        finally:
            # A finished server may live on until the garbage collector breaks its cycles: not live any more.
            self.live.discard(self)

    async def _run(self) -> None:
        registry = dialout_config(self.config).registry
        ssl_object = self.writer.get_extra_info("ssl_object")  # None on the cleartext listener
        if registry is None:
            await super().run()
            return
        self._registry = registry
        self._connection = _open(registry, ssl_object, self.writer.get_extra_info("peername"))
        token, server_token = _current_connection.set(self._connection), _current_server.set(weakref.ref(self))
        try:
            await super().run()
        except (ssl.SSLError, TimeoutError) as exc:
            # Hypercorn's close waits for the TLS shutdown and lets these escape as an "Unhandled exception"
            # traceback (pgjones/hypercorn#342 for the timeout); typically the switch was still sending after our
            # close_notify. The connection is over either way.
            logger.info("conn #%d: TLS close: %s", self._connection.id, getattr(exc, "reason", None) or exc)
        finally:
            _current_connection.reset(token)
            _current_server.reset(server_token)
            registry.close(self._connection)

    async def _read_data(self) -> None:
        # The connection is over for the peer when reading ends (EOF, reset). Hypercorn's run() would return only
        # once the connection's idle timer ran out, keep_alive_timeout (5 s) later, holding the TLS transport and
        # its 256 KiB read buffer all that time: 2,000 short connections at 50 at once kept ~900 alive and grew the
        # controller to 430 MB (issue 20). Nothing is left to time out: stop the timer.
        try:
            await super()._read_data()
        finally:
            if self._registry is not None and self._connection is not None:
                self._registry.close(self._connection)  # first: stopping the timer takes the loop a turn
            await self.idle_task.stop()


# What a request whose target is not ASCII is told (RFC 3986 section 2.1: other bytes are percent-encoded).
_NOT_ASCII = b'{"error": "the request target must be ASCII; percent-encode other bytes (RFC 3986 section 2.1)"}'


class CheckedPathStream(HTTPStream):
    """Hypercorn's request stream, refusing a target that is not ASCII with 400 and one log line: Hypercorn
    decodes it as ASCII before the app sees it, and a byte above 0x7f was a 40-line traceback per request."""

    async def handle(self, event: Event) -> None:
        if isinstance(event, Request) and not event.raw_path.isascii():
            await self._refuse_target(event.raw_path)
            return
        await super().handle(event)

    async def _refuse_target(self, raw_path: bytes) -> None:
        self.closed = True  # as Hypercorn's own refusals do: nothing more of this stream reaches an app
        length = str(len(_NOT_ASCII)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        await self.send(Response(stream_id=self.stream_id, headers=headers, status_code=400))
        await self.send(Body(stream_id=self.stream_id, data=_NOT_ASCII))
        await self.send(EndBody(stream_id=self.stream_id))
        self.state = ASGIHTTPState.CLOSED
        client = format_address(*self.client) if self.client else "unknown"
        shown = printable(raw_path[:MAX_LOGGED_TARGET].decode("latin-1"))
        logger.info("%s: request target is not ASCII, refused with 400: %s", client, shown)


class StreamIdHTTPStream(CheckedPathStream):
    """Hypercorn's HTTP/2 request stream, starting its app with the stream's id in ``_wire_stream_id``: the app's
    task is created inside ``handle(Request)`` and inherits the variable."""

    async def handle(self, event: Event) -> None:
        if not isinstance(event, Request):
            await super().handle(event)
            return
        token = _wire_stream_id.set(self.stream_id)
        try:
            await super().handle(event)
        finally:
            _wire_stream_id.reset(token)


def live_servers(config: object) -> list[ConnectionAwareTCPServer]:
    """The connections that the server with this Hypercorn ``config`` is serving now."""
    return [server for server in list(ConnectionAwareTCPServer.live) if server.config is config]


class ConnectionScopeMiddleware:
    """Fills the scope's extensions from the connection a request came on, and counts its stream there. Through a
    trusted proxy (``controller.accounts.forwarded``), the request is counted on the switch's connection to that proxy
    too, and that is the connection the app sees."""

    def __init__(
        self, app: ASGIFramework, registry: ConnectionRegistry | None = None, proxies: ProxyPolicy | None = None
    ) -> None:
        self.app = app
        self.registry = registry
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        connection = _current_connection.get()
        if connection is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extensions: dict[str, Any] = dict(scope.get("extensions") or {})
        if not connection.cleartext:  # the extension is for TLS connections only (asgiref specs/tls.rst)
            extensions.setdefault("tls", connection.tls)  # a server that fills it itself knows best
        http_scope = cast(HTTPScope, scope)  # an http or websocket scope: both have these
        span = connection.begin_stream(
            http_scope["path"], http_scope["http_version"], http_scope["query_string"], stream_id=_wire_stream_id.get()
        )
        switch_side = self._through_proxy(connection, http_scope)
        if switch_side is None:
            extensions[CONNECTION_EXTENSION] = {
                "connection": connection,
                "stream": span.number,
                "stream_id": span.stream_id,
                "refusal": None,
                "span": span,
            }
        else:
            seen_as, identified, number = switch_side
            # the switch's stream id on its connection to the proxy: the proxy does not tell it
            extensions[CONNECTION_EXTENSION] = {
                "connection": seen_as.connection,
                "stream": number,
                "stream_id": None,
                "refusal": identified.refusal,
                "span": seen_as,
            }

        server_ref = _current_server.get()

        async def send_and_time(message: ASGISendEvent) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                span.answered = time.monotonic()  # its last byte is the server's to write: the answer's end,
                server = None if server_ref is None else server_ref()
                if server is not None:  # or, more exactly, the moment the server writes it (often later this turn)
                    server.when_written(span.answered_at)

        try:
            await self.app(cast(Scope, {**scope, "extensions": extensions}), receive, send_and_time)
        finally:
            connection.end_stream(span)
            if switch_side is not None:
                switch_side[0].connection.end_stream(switch_side[0])

    def _through_proxy(
        self, connection: ControllerConnection, scope: HTTPScope
    ) -> tuple[StreamSpan, Identified, int] | None:
        """The request's stream on the switch's connection to a trusted proxy that it came through, or None: not
        through a proxy, or through a peer that is not trusted (whose forwarded headers are then ignored, and
        said so)."""
        headers = scope["headers"]
        if connection.from_trusted_proxy is None:  # decided on the connection's first request
            trusted = self.proxies is not None and self.proxies.trusts(connection.switch, connection.peer.host)
            connection.from_trusted_proxy = trusted and self.registry is not None
        if not connection.from_trusted_proxy:
            if not connection.forwarding_noted and carries_forwarding(headers):
                connection.forwarding_noted = True
                logger.warning(
                    "conn #%d: %s from %s sent X-Dialout-* headers but is not in controller.trusted_proxies: "
                    "ignored; its requests are its own",
                    connection.id,
                    connection.switch,
                    connection.peer,
                )
            return None
        forwarded = read_forwarded(headers)
        if forwarded is None:  # the proxy's own request
            return None
        # from_trusted_proxy says both are there
        assert self.proxies is not None
        assert self.registry is not None
        identified = self.proxies.identify(forwarded)
        via = connection.switch or connection.peer.host
        seen_as = self.registry.proxied(
            via,
            forwarded.connection,
            forwarded.peer,
            identified.switch,
            forwarded.alpn,
            forwarded.tls_version,
            upstream=connection,
        )
        span = seen_as.begin_stream(scope["path"], scope["http_version"], scope["query_string"])
        return span, identified, forwarded.request or span.number


def _open(registry: ConnectionRegistry, ssl_object: ssl.SSLObject | None, peername: Any) -> ControllerConnection:  # noqa: ANN401
    if ssl_object is None:  # the cleartext listener: no certificate, so an anonymous switch
        return registry.open(
            peer=_format_peer(peername), switch=None, alpn=None, tls_version=None, tls={}, cleartext=True
        )
    der = ssl_object.getpeercert(binary_form=True)
    certificate = x509.load_der_x509_certificate(der) if der else None
    common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME) if certificate else []
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    tls = {
        "server_cert": registry.server_cert_pem,
        # Python before 3.13 exposes only the peer's leaf certificate, not the chain it sent.
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": certificate.subject.rfc4514_string() if certificate else None,
        "client_cert_error": None,  # CERT_REQUIRED: a certificate that fails verification never gets here
        "tls_version": _TLS_VERSION_CODES.get(version or ""),
        "cipher_suite": _cipher_code(ssl_object, cipher[0]) if cipher else None,
    }
    hello, done = _hello_at.pop(ssl_object, None), _done_at.pop(ssl_object, None)
    record = registry.open(
        peer=_format_peer(peername),
        switch=str(common_names[0].value) if common_names else None,
        alpn=ssl_object.selected_alpn_protocol(),
        tls_version=version,
        tls=tls,
        hello_at=hello[0] if hello else None,
        done_at=done[0] if done else None,
    )
    record.hello_turn = hello[1] if hello else None
    record.done_turn = done[1] if done else None
    return record


def _cipher_code(ssl_object: ssl.SSLObject, name: str) -> int | None:
    """The IANA number of a cipher suite: OpenSSL's cipher id is 0x0300XXXX, XXXX being that number."""
    if name not in _cipher_codes:
        _cipher_codes.update({c["name"]: c["id"] & 0xFFFF for c in ssl_object.context.get_ciphers()})
    return _cipher_codes.get(name)


def _format_peer(peername: Any) -> Address:  # noqa: ANN401 - a socket address, whose shape depends on the family
    if isinstance(peername, tuple) and len(peername) >= 2:
        return Address(str(peername[0]), int(peername[1]))
    return Address(str(peername), 0)
