"""Connection events, in the spirit of Go's net/http/httptrace, from the ``trace`` request extension.

The switch's HTTP/2 transport (``sim_switch.wire``) and httpcore (HTTP/1.1) report each step of a request as
``<step>.started``/``.complete``/``.failed`` to a per-request callback (``connection.connect_tcp``,
``connection.start_tls``, ``http2.send_request_headers``, ...); the switch's own steps carry ``at``, when their
bytes crossed the wire. The frames and the controller's SETTINGS come to the ``Tracer`` itself. ``Tracer`` gives every
ping its own callback, turns those steps into ``TraceEvent``s with times relative to the start of the run, and
keeps one ``ConnectionRecord`` per TCP connection the pings opened, numbered 1, 2, ... in the order they were
opened.

httpcore does not say which pooled connection a request was given; the response does (its ``network_stream``
extension is the TLS stream we saw at ``start_tls.complete``), so ``connection_of`` maps it back to a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from h2.settings import SettingCodes
from httpcore import AsyncNetworkStream

from sim_switch.dial.failures import classify
from sim_switch.model.events import (
    ConnectionReused,
    ConnectRetry,
    GoawayRead,
    HeadersWritten,
    OtherStep,
    PrefaceSent,
    ResponseClosed,
    SettingsReceived,
    SpillDialled,
    StepFailed,
    TcpConnected,
    TcpConnecting,
    TlsDone,
    TlsStarted,
    TraceEvent,
)
from sim_switch.model.frames import Direction
from sim_switch.model.results import ConnectionRecord
from sim_switch.wire.frames import error_name, frame_event, parse, setting_name


class _Where(TypedDict):
    """What every event of a ping's step says of where it happened."""

    at_s: float
    ping: int | None
    connection: int | None


_CERT_FIELD_ABBREVIATIONS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


class Tracer:
    """The run's clock and its connections; also the switch's HTTP/2 transport's ``WireObserver``, which tells it
    of SETTINGS and (``frames``) of every frame."""

    def __init__(self, emit: Callable[[TraceEvent], None], frames: bool = False) -> None:
        self.emit = emit
        self.frames_wanted = frames
        self._start = time.perf_counter()
        self._start_monotonic = time.monotonic()  # the same moment on the loop-lag sampler's clock
        self._stopped_at_s: float | None = None
        self.connections: list[ConnectionRecord] = []
        # Stream objects are keyed by id() and held in the value, so an id cannot be reused while we look.
        self._by_stream: dict[int, tuple[object, ConnectionRecord]] = {}
        self._sockets: dict[int, AsyncNetworkStream] = {}  # connection number -> its TCP stream

    def now_s(self) -> float:
        return time.perf_counter() - self._start

    def stop_clock(self) -> float:
        """The run's wall time, taken the first time this is asked: when its last ping ended, not after what the
        run does next (the loop-lag sampler's next wake-up, the questions to the controller)."""
        if self._stopped_at_s is None:
            self._stopped_at_s = self.now_s()
        return self._stopped_at_s

    def monotonic_of(self, at_s: float) -> float:
        """A time since the run started as a ``time.monotonic()`` reading (the loop-lag sampler's clock)."""
        return self._start_monotonic + at_s

    def since_start_s(self, at: float) -> float:
        """A ``time.perf_counter()`` reading as seconds since the run started."""
        return at - self._start

    def settings(self, network: object, settings: dict[int, int], at: float) -> None:
        record = self.connection_of(network)
        if record is not None and SettingCodes.MAX_CONCURRENT_STREAMS in settings:
            record.max_streams = settings[SettingCodes.MAX_CONCURRENT_STREAMS]
        named = tuple((setting_name(code), value) for code, value in sorted(settings.items()))
        self.emit(
            SettingsReceived(
                at_s=self.since_start_s(at), ping=None, connection=record.number if record else None, settings=named
            )
        )

    def goaway(self, network: object, code: int, last_stream_id: int, debug: bytes, at: float) -> None:
        record = self.connection_of(network)
        self.emit(
            GoawayRead(
                at_s=self.since_start_s(at),
                ping=None,
                connection=record.number if record else None,
                code=error_name(code),
                last_stream_id=last_stream_id,
                debug=debug.decode("utf-8", errors="replace"),
            )
        )

    def spilled(self, waiting: int, limit: int, dials: int) -> None:
        self.emit(SpillDialled(at_s=self.now_s(), waiting=waiting, limit=limit, dials=dials))

    def round_trip(self, network: object, rtt_s: float) -> None:
        record = self.connection_of(network)
        if record is not None:
            record.rtt_s = rtt_s

    def frame(self, network: object, raw: bytes, direction: Direction, at: float, rtt_s: float | None) -> None:
        parsed = parse(raw)
        if parsed is None:
            return
        record = self.connection_of(network)
        number = record.number if record else None
        self.emit(frame_event(parsed, direction, self.since_start_s(at), number, rtt_s))

    def connection_of(self, network_stream: object) -> ConnectionRecord | None:
        entry = self._by_stream.get(id(network_stream))
        return entry[1] if entry is not None and entry[0] is network_stream else None

    def for_ping(self, ping: int, asked_at_s: float, controller: str | None = None) -> PingTrace:
        return PingTrace(self, ping, asked_at_s, controller)

    async def close_connections(self, controller: str) -> int:
        """Close the sockets of every connection dialled for ``controller`` (one that went silent): httpcore then
        fails what was in flight on them and forgets them. The TCP stream under the TLS one: it closes at once,
        without a word to the peer, and every read above it fails."""
        closed = 0
        for record in self.connections:
            if record.controller == controller and record.number in self._sockets:
                await self._sockets.pop(record.number).aclose()
                closed += 1
        return closed

    def record_connection(self, stream: AsyncNetworkStream, controller: str | None = None) -> ConnectionRecord:
        local = stream.get_extra_info("client_addr") or ("?", None)
        remote = stream.get_extra_info("server_addr") or ("?", None)
        record = ConnectionRecord(
            number=len(self.connections) + 1,
            opened_at_s=self.now_s(),
            local_address=_format_address(local),
            remote_address=_format_address(remote),
            local_port=local[1],
            controller=controller,
        )
        self.connections.append(record)
        self._sockets[record.number] = stream
        self.alias(stream, record)
        return record

    def alias(self, stream: object, record: ConnectionRecord) -> None:
        """Make ``stream`` (e.g. the TLS stream wrapped around a TCP one) another name for ``record``."""
        self._by_stream[id(stream)] = (stream, record)


class PingTrace:
    """The trace callback of one ping (pass it as ``extensions={"trace": ping_trace}``), and what it learnt:
    the connection this ping opened (if any), the HTTP/2 stream id and when the first response byte came."""

    def __init__(self, tracer: Tracer, ping: int, asked_at_s: float, controller: str | None = None) -> None:
        self._tracer = tracer
        self.ping = ping
        self.controller = controller
        self.opened: ConnectionRecord | None = None
        self.connection: int | None = None  # known at once when this ping opened it, else once the response says
        self.stream_id: int | None = None
        self.asked_at_s = asked_at_s
        self.tls_started_at_s: float | None = None
        self.tls_done_at_s: float | None = None
        self.headers_started_at_s: float | None = None
        self.headers_sent_at_s: float | None = None
        self.first_byte_at_s: float | None = None
        self.last_byte_at_s: float | None = None  # its END_STREAM was read (HTTP/2 on the switch's own transport)

    @property
    def stream_wait_s(self) -> float | None:
        """How long the ping waited, with its connection ready, before it could open a stream: near 0 unless the
        connection had all the streams it takes (or, at its very start, had not heard the controller's SETTINGS)."""
        if self.headers_started_at_s is None:
            return None
        ready_at_s = self.tls_done_at_s if self.tls_done_at_s is not None else self.asked_at_s
        return max(0.0, self.headers_started_at_s - ready_at_s)

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.step_now(name, info)

    def step_now(self, name: str, info: dict[str, Any]) -> None:  # noqa: C901 - one case per httpcore event
        """The step, taken at once: nothing here waits (the switch's transport tells some steps from a callback,
        ``sim_switch/wire/transport.py``)."""
        request_step = _REQUEST_STEPS.get(name)
        if request_step is not None:  # every ping's own steps on the switch's transport, told apart by a lookup
            request_step(self, info)
            return
        tracer = self._tracer
        # The switch's own transport says when the step's bytes crossed the wire; httpcore's steps are timed now.
        at = info.get("at")
        at_s = tracer.since_start_s(at) if isinstance(at, float) else tracer.now_s()
        _, _, step = name.partition(".")  # "http2.send_request_headers.started" -> "send_request_headers.started"
        step_name, _, phase = step.rpartition(".")
        event: TraceEvent | None = None
        where = _Where(at_s=at_s, ping=self.ping, connection=self.connection)

        if phase == "failed":
            exc = info.get("exception")
            failure = classify(exc) if isinstance(exc, BaseException) else None
            event = StepFailed(**where, step=step_name, failure=failure)
        elif step == "connect_tcp.started":
            event = TcpConnecting(**where, host=str(info.get("host")), port=info.get("port"))
        elif step == "connect_tcp.complete":
            self.opened = tracer.record_connection(info["return_value"], self.controller)
            self.connection = self.opened.number
            where["connection"] = self.connection
            event = TcpConnected(**where, local=self.opened.local_address, remote=self.opened.remote_address)
        elif step == "start_tls.started":
            self.tls_started_at_s = at_s
            event = TlsStarted(**where, server_name=info.get("server_hostname"))
        elif step == "start_tls.complete" and self.opened is not None:
            self.tls_done_at_s = at_s
            self.opened.handshake_s = at_s - (self.tls_started_at_s or at_s)
            record = self._tls_done(info["return_value"], self.opened)
            event = TlsDone(
                **where,
                version=record.tls_version,
                alpn=record.alpn,
                cipher=record.cipher,
                controller_subject=record.controller_subject,
            )
        elif step == "send_connection_init.complete":
            event = PrefaceSent(**where)
        elif step == "send_request_headers.started":
            self.headers_started_at_s = at_s
            if self.opened is None:
                event = ConnectionReused(**where)
        elif step == "send_request_headers.complete":
            self.stream_id = info.get("stream_id")
            self.headers_sent_at_s = at_s
            event = HeadersWritten(**where, stream_id=self.stream_id)
        elif step == "receive_response_headers.complete":
            # Reported by the ping itself once the response says which connection it came on.
            self.first_byte_at_s = at_s
        elif step == "receive_response_body.complete" and at is not None:
            self.last_byte_at_s = at_s
        elif step == "response_closed.complete":
            event = ResponseClosed(**where)
        elif step == "retry.started":
            event = ConnectRetry(**where)
        else:
            event = OtherStep(**where, step=step)

        if event is not None:
            tracer.emit(event)

    def _at_s(self, info: dict[str, Any]) -> float:
        at = info.get("at")
        return self._tracer.since_start_s(at) if isinstance(at, float) else self._tracer.now_s()

    def _headers_started(self, info: dict[str, Any]) -> None:
        self.headers_started_at_s = self._at_s(info)
        if self.opened is None:
            self._tracer.emit(ConnectionReused(at_s=self.headers_started_at_s, ping=self.ping))

    def _headers_sent(self, info: dict[str, Any]) -> None:
        self.stream_id = info.get("stream_id")
        self.headers_sent_at_s = at_s = self._at_s(info)
        self._tracer.emit(
            HeadersWritten(at_s=at_s, ping=self.ping, connection=self.connection, stream_id=self.stream_id)
        )

    def _first_byte(self, info: dict[str, Any]) -> None:
        # Reported by the ping itself once the response says which connection it came on.
        self.first_byte_at_s = self._at_s(info)

    def _last_byte(self, info: dict[str, Any]) -> None:
        if info.get("at") is not None:
            self.last_byte_at_s = self._at_s(info)

    def _closed(self, info: dict[str, Any]) -> None:
        self._tracer.emit(ResponseClosed(at_s=self._at_s(info), ping=self.ping, connection=self.connection))

    def _tls_done(self, tls_stream: AsyncNetworkStream, record: ConnectionRecord) -> ConnectionRecord:
        self._tracer.alias(tls_stream, record)
        ssl_object = tls_stream.get_extra_info("ssl_object")
        if ssl_object is not None:
            record.tls_version = ssl_object.version()
            record.alpn = ssl_object.selected_alpn_protocol()
            cipher = ssl_object.cipher()
            record.cipher = cipher[0] if cipher else None
            record.controller_subject = format_subject(ssl_object.getpeercert() or {})
        return record


_REQUEST_STEPS: dict[str, Callable[[PingTrace, dict[str, Any]], None]] = {
    "http2.send_request_headers.started": PingTrace._headers_started,
    "http2.send_request_headers.complete": PingTrace._headers_sent,
    "http2.receive_response_headers.complete": PingTrace._first_byte,
    "http2.receive_response_body.complete": PingTrace._last_byte,
    "http2.response_closed.complete": PingTrace._closed,
}


def format_subject(peer_cert: dict[str, Any]) -> str:
    """``ssl.getpeercert()``'s subject as ``CN=...,OU=...,O=...`` (most specific first, as RFC 4514 writes it)."""
    parts = [
        f"{_CERT_FIELD_ABBREVIATIONS.get(key, key)}={value}"
        for rdn in reversed(peer_cert.get("subject", ()))
        for key, value in rdn
    ]
    return ",".join(parts) or "(no subject)"


def _format_address(address: Sequence[object]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
