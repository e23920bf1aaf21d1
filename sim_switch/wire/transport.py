"""The switch's HTTP/2 transport: an ``httpx.AsyncBaseTransport`` over its own connections
(``sim_switch.wire.connection``), so httpx stays the client API and the switch owns what happens on the wire.

A pool per controller (scheme, host, port) gives each request a stream on a connection with room, as the
controller's SETTINGS_MAX_CONCURRENT_STREAMS allows:

- ``queue``: one connection; a request waits, first come first served, for one of its streams to finish.
- ``spill``: when every connection is full, as many more are dialled at once as the requests waiting need, at the
  controller's limit a connection (at most ``MAX_SPILL_DIALS`` at once), each taking one stream until its own
  SETTINGS are heard; no cap of our own on how many. The first connection dials alone: its SETTINGS say the limit.

A connection whose ALPN said ``http/1.1`` (a controller or proxy without HTTP/2) carries one request at a time on
httpcore's HTTP/1.1 connection, as before; the pool then opens more of them as needed, up to ``MAX_HTTP1``.

Requests are traced through the ``trace`` extension with httpcore's step names (``connection.connect_tcp``,
``http2.send_request_headers``, ...), each with ``at``: the ``time.perf_counter()`` when its bytes crossed the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpcore
import httpx

from dialout.config import StreamPolicy
from sim_switch.wire.connection import H2Connection, H2Stream, WireObserver
from sim_switch.wire.errors import NotSent
from sim_switch.wire.network import AsyncioStream, connect_tcp

MAX_HTTP1 = 100  # httpx's default max_connections: as many HTTP/1.1 pings in flight at once
# Spill's dials under way at once: enough for 1,600 waiting requests at the usual limit of 100 in one round of
# handshakes, few enough that the controller sees a burst it handles in milliseconds, not a flood.
MAX_SPILL_DIALS = 16
_DIAL = object()  # a waiter's turn to dial (counted in ``_dialling`` when given), rather than a stream
SocketOption = tuple[int, int, int]
TraceCallback = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> Origin:
        return cls(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


@dataclass(frozen=True)
class DialOptions:
    """How a connection is dialled: TLS with this context (None: h2c, HTTP/2 with prior knowledge), the connect
    timeout, the socket options (TCP keepalive), the address it comes from."""

    ssl_context: ssl.SSLContext | None
    connect_timeout_s: float
    socket_options: tuple[SocketOption, ...] = ()
    source_address: str | None = None  # the local address to dial from (None: the kernel's choice)


class _HTTP1:
    """A connection whose ALPN chose HTTP/1.1: httpcore's, one request at a time."""

    def __init__(self, network: httpcore.AsyncNetworkStream, origin: Origin) -> None:
        self.connection = httpcore.AsyncHTTP11Connection(
            httpcore.Origin(origin.scheme.encode(), origin.host.encode(), origin.port), network
        )
        self.busy = False

    @property
    def usable(self) -> bool:
        return self.connection.is_available() or self.busy

    def room(self) -> bool:
        return not self.busy and self.connection.is_available()

    def reserve(self) -> None:
        self.busy = True

    def release(self) -> None:
        self.busy = False


Connection = H2Connection | _HTTP1
# How a waiting request opens its stream on the connection given to it, at once, by whoever freed the room: its
# HEADERS go in that loop turn's write, and its task wakes once, for its answer (``ready``), not once for the stream
# and again for the answer. The controller meanwhile has the request a loop turn sooner.
Opener = Callable[[H2Connection, asyncio.Future[None]], H2Stream]


@dataclass(eq=False)
class _Waiter:
    """A request waiting for room: given a connection, or its turn to dial (``_DIAL``), and ``ready`` then; or, when
    it has an ``opener`` and is given an HTTP/2 connection, its stream opened, and ``ready`` once that stream has
    something (its answer's HEADERS, or its failure)."""

    ready: asyncio.Future[None]
    opener: Opener | None
    given: object = None  # a Connection, or _DIAL
    stream: H2Stream | None = None


class _OriginPool:
    def __init__(
        self, origin: Origin, options: DialOptions, policy: StreamPolicy, observer: WireObserver | None
    ) -> None:
        self.origin = origin
        self._options = options
        self._spill = policy == StreamPolicy.SPILL
        self._observer = observer
        self.h2: list[H2Connection] = []
        self.h1: list[_HTTP1] = []
        self._speaks_http1 = False  # its last dial's ALPN chose http/1.1: dial for HTTP/1.1 until one chooses h2
        self._dialling = 0  # dials under way, each counted from when it was given (a waiter's turn, ``_DIAL``)
        self._waiters: deque[_Waiter] = deque()

    async def acquire(
        self, trace: TraceCallback | None, opener: Opener | None = None
    ) -> tuple[Connection, H2Stream | None]:
        """A connection with a stream reserved for one request: one with room, a new one, or the first to have
        room after waiting in line; and the request's stream, if ``opener`` opened it as the room came."""
        connection = self._with_room()
        if connection is not None:
            connection.reserve()
            return connection, None
        if self._may_dial(waiting=len(self._waiters) + 1):
            self._dialling += 1
            self._note_spill(len(self._waiters) + 1, 1)
            return await self._dial_counted(trace), None
        waiter = _Waiter(asyncio.get_running_loop().create_future(), opener)
        self._waiters.append(waiter)
        try:
            await waiter.ready
        except BaseException:  # cancelled once given a stream or a dial, or its opening failed: give it back
            if waiter.given is _DIAL:
                self._dialling -= 1
                self.wake()
            elif isinstance(waiter.given, H2Connection):
                if waiter.stream is not None:
                    await waiter.given.close_stream(waiter.stream)
                waiter.given.release(waiter.stream)
            elif isinstance(waiter.given, _HTTP1):
                waiter.given.release()
            raise
        if waiter.given is _DIAL:
            return await self._dial_counted(trace), None
        assert isinstance(waiter.given, H2Connection | _HTTP1)
        return waiter.given, waiter.stream

    async def _dial_counted(self, trace: TraceCallback | None) -> Connection:
        try:
            return await self._dial(trace)
        finally:
            self._dialling -= 1
            self.wake()

    def wake(self) -> None:
        """Room may have appeared (a stream ended, SETTINGS came, a connection went): hand it to the waiters in
        order, and let as many dial as dials are due."""
        self.h2 = [c for c in self.h2 if c.closed_by is None]
        self.h1 = [c for c in self.h1 if c.usable]
        waiting, dials = len(self._waiters), 0
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.ready.done():  # (cancelled)
                self._waiters.popleft()
                continue
            connection = self._with_room()
            if connection is not None:
                self._waiters.popleft()
                connection.reserve()
                waiter.given = connection
                if waiter.opener is not None and isinstance(connection, H2Connection):
                    self._open(waiter, connection)
                else:
                    waiter.ready.set_result(None)
                continue
            if self._may_dial(waiting=len(self._waiters)):
                self._waiters.popleft()
                self._dialling += 1
                dials += 1
                waiter.given = _DIAL
                waiter.ready.set_result(None)
                continue
            break
        self._note_spill(waiting, dials)

    @staticmethod
    def _open(waiter: _Waiter, connection: H2Connection) -> None:
        assert waiter.opener is not None
        try:
            waiter.stream = waiter.opener(connection, waiter.ready)
        except Exception as exc:  # its task hears of it, and gives the stream's room back (``_handle``)
            waiter.ready.set_exception(exc)

    def _note_spill(self, waiting: int, dials: int) -> None:
        """Tell the observer of dials that spill (not a first connection, nor HTTP/1.1's) set off."""
        if not dials or self._speaks_http1 or self._observer is None:  # (every stream's end wakes the pool)
            return
        usable = [c for c in self.h2 if c.usable]
        if usable:
            self._observer.spilled(waiting, max(c.limit for c in usable), dials)

    def _with_room(self) -> Connection | None:
        for connection in self.h2:
            if connection.room():
                return connection
        for old in self.h1:
            if old.room():
                return old
        return None

    def _may_dial(self, waiting: int) -> bool:
        """Whether one more dial is due, ``waiting`` requests having no stream: HTTP/1.1, a connection each; the
        first HTTP/2 connection (or the first again, all gone), alone; spill, when every connection is full and
        the dials under way cannot carry what waits at the controller's limit."""
        if self._speaks_http1:
            return len(self.h1) + self._dialling < MAX_HTTP1
        usable = [c for c in self.h2 if c.usable]
        if not usable:
            return not self._dialling
        if not self._spill or not all(c.settings_received and not c.room() for c in usable):
            return False
        limit = max(c.limit for c in usable)  # the controller's SETTINGS_MAX_CONCURRENT_STREAMS
        needed = -(-waiting // limit)
        return self._dialling < min(needed, MAX_SPILL_DIALS)

    async def _dial(self, trace: TraceCallback | None) -> Connection:
        network = await _connect(self.origin, self._options, trace)
        alpn = None
        ssl_object = network.get_extra_info("ssl_object")
        if ssl_object is not None:
            alpn = ssl_object.selected_alpn_protocol()
        if self._options.ssl_context is not None and alpn != "h2":
            self._speaks_http1 = True
            old = _HTTP1(network, self.origin)
            old.reserve()
            self.h1.append(old)
            return old
        self._speaks_http1 = False  # (again: a controller that offered only http/1.1 for a while offers h2 now)
        connection = H2Connection(network, self.wake, self._observer)
        connection.reserve()
        self.h2.append(connection)
        try:
            await connection.start()
        except BaseException:
            connection.release()
            raise
        await _trace(trace, "http2.send_connection_init.complete", {})
        return connection

    async def aclose(self) -> None:
        for connection in self.h2:
            await connection.aclose()
        for old in self.h1:
            await old.connection.aclose()
        for waiter in self._waiters:
            waiter.ready.cancel()


class SwitchTransport(httpx.AsyncBaseTransport):
    """The switch's HTTP/2 (over TLS with ALPN h2, or h2c), on its own connections."""

    def __init__(self, options: DialOptions, policy: StreamPolicy, observer: WireObserver | None = None) -> None:
        if options.ssl_context is not None:
            options.ssl_context.set_alpn_protocols(["h2", "http/1.1"])
        self._options = options
        self._policy = policy
        self._observer = observer
        self._pools: dict[Origin, _OriginPool] = {}

    def _pool(self, url: httpx.URL) -> _OriginPool:
        origin = Origin.of(url)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _OriginPool(origin, self._options, self._policy, self._observer)
        return pool

    def connections(self, url: httpx.URL | str) -> list[H2Connection]:
        """The HTTP/2 connections open to ``url``'s controller."""
        pool = self._pools.get(Origin.of(httpx.URL(url)))
        return [c for c in pool.h2 if c.closed_by is None] if pool is not None else []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:  # (not ``httpx_errors()``: a context manager a request is a cost a ping need not pay)
            return await self._handle(request)
        except Exception as exc:
            mapped = as_httpx(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool(request.url)
        trace: TraceCallback | None = request.extensions.get("trace")
        opening = _Opening(request, trace)
        while True:
            try:  # (a request with a body sends it itself, as flow control allows: its task opens its stream)
                connection, stream = await pool.acquire(trace, None if request.content else opening.open)
            except NotSent:  # given a connection that went away before its HEADERS, and given back: another will do
                continue
            if isinstance(connection, _HTTP1):
                return await _over_http1(connection, request, pool.wake)
            if stream is None:
                try:
                    await _trace(trace, "http2.send_request_headers.started", {})
                    stream = connection.open_stream(request, opening.written)
                    if request.content:
                        await connection.send_body(stream, request.content)
                except NotSent:  # it went away before our first frame: another connection will do
                    connection.release()
                    continue
                except BaseException:
                    connection.release(stream)  # (None: not opened)
                    raise
            timeouts = request.extensions.get("timeout") or {}
            return await _response(connection, stream, trace, timeouts.get("read"))

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


async def _response(
    connection: H2Connection, stream: H2Stream, trace: TraceCallback | None, read_timeout_s: float | None
) -> httpx.Response:
    """The response once its HEADERS are read, its body to come (``read_timeout_s``: httpx's read timeout, for
    the headers and for each DATA after them)."""
    try:
        await connection.response_headers(stream, read_timeout_s)
        await _trace(trace, "http2.receive_response_headers.complete", {"at": stream.first_byte_at})
    except BaseException:
        await connection.close_stream(stream)
        connection.release(stream)
        raise
    return httpx.Response(
        status_code=stream.status or 0,
        headers=stream.headers,
        stream=_H2Body(connection, stream, trace, read_timeout_s),
        extensions={"http_version": b"HTTP/2", "network_stream": connection.network, "stream_id": stream.stream_id},
    )


class _H2Body(httpx.AsyncByteStream):
    def __init__(
        self, connection: H2Connection, stream: H2Stream, trace: TraceCallback | None, timeout_s: float | None
    ) -> None:
        self._connection, self._stream, self._trace = connection, stream, trace
        self._timeout_s = timeout_s
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection, stream = self._connection, self._stream
        try:
            while True:
                data = connection.take_body(stream)
                if data:
                    yield data
                if stream.ended:
                    break
                if stream.error is not None:
                    raise stream.error
                await stream.changed(self._timeout_s)
        except Exception as exc:
            mapped = as_httpx(exc)
            if mapped is None:
                raise
            raise mapped from exc
        await _trace(self._trace, "http2.receive_response_body.complete", {"at": stream.ended_at})

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._connection.close_stream(self._stream)
        finally:
            self._connection.release(self._stream)
            await _trace(self._trace, "http2.response_closed.complete", {})


async def _over_http1(connection: _HTTP1, request: httpx.Request, released: Callable[[], None]) -> httpx.Response:
    url = request.url
    core_request = httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )

    def release() -> None:
        connection.release()
        released()

    try:
        response = await connection.connection.handle_async_request(core_request)
    except BaseException:
        release()
        raise
    return httpx.Response(
        status_code=response.status,
        headers=response.headers,
        stream=_HTTP1Body(cast(AsyncIterable[bytes], response.stream), release),
        extensions=response.extensions,
    )


class _HTTP1Body(httpx.AsyncByteStream):
    def __init__(self, body: AsyncIterable[bytes], release: Callable[[], None]) -> None:
        self._body, self._release = body, release
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self._body:
                yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                closing = getattr(self._body, "aclose", None)
                if closing is not None:
                    await closing()
            finally:
                self._release()


# httpcore's exceptions (our network layer's, and HTTP/1.1's) as httpx's, as httpx's own transport maps them: a
# caller of httpx's API catches httpx.HTTPError and nothing else. The original stays the cause, for the failure's
# classification (sim_switch/dial/failures.py walks the chain).
_AS_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def as_httpx(exc: Exception) -> httpx.HTTPError | None:
    """httpcore's ``exc`` as httpx's (its cause to be ``exc``); None when it is httpx's already, or not httpcore's."""
    if isinstance(exc, httpx.HTTPError):
        return None
    for core, ours in _AS_HTTPX:
        if isinstance(exc, core):
            return ours(str(exc) or type(exc).__name__)
    return None


@contextlib.contextmanager
def httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = as_httpx(exc)
        if mapped is None:
            raise
        raise mapped from exc


async def _connect(origin: Origin, options: DialOptions, trace: TraceCallback | None) -> AsyncioStream:
    host, port, timeout_s = origin.host, origin.port, options.connect_timeout_s
    tcp = {"host": host, "port": port, "local_address": options.source_address, "timeout": timeout_s}
    async with _step(trace, "connection.connect_tcp", tcp) as done:
        network = await connect_tcp(host, port, timeout_s, options.socket_options, options.source_address)
        done.append(network)
    if options.ssl_context is None:
        return network
    tls = {"ssl_context": options.ssl_context, "server_hostname": host, "timeout": timeout_s}
    async with _step(trace, "connection.start_tls", tls) as done:
        network = await network.start_tls(options.ssl_context, server_hostname=host, timeout=timeout_s)
        done.append(network)
    return network


@contextlib.asynccontextmanager
async def _step(trace: TraceCallback | None, name: str, info: dict[str, Any]) -> AsyncIterator[list[Any]]:
    """``name.started``, then ``.complete`` with what the step returned (appended to the list), or ``.failed``."""
    await _trace(trace, f"{name}.started", info)
    returned: list[Any] = []
    try:
        yield returned
    except BaseException as exc:
        await _trace(trace, f"{name}.failed", {"exception": exc})
        raise
    await _trace(trace, f"{name}.complete", {"return_value": returned[0] if returned else None})


_TRACES_RUNNING: set[asyncio.Future[None]] = set()


class _Opening:
    """A request's stream opened where nothing can be awaited (by the pool, as room comes: ``open``), and its
    HEADERS told as written (by the write: ``written``). Its steps go to the switch's own trace at once
    (``step_now``: its steps never wait), or to any other trace callback in a task, kept here while it runs."""

    def __init__(self, request: httpx.Request, trace: TraceCallback | None) -> None:
        self._request = request
        self._trace = trace

    def open(self, connection: H2Connection, ready: asyncio.Future[None]) -> H2Stream:
        self._tell("http2.send_request_headers.started", {})
        return connection.open_stream(self._request, self.written, waiting=ready)

    def written(self, stream: H2Stream) -> None:
        self._tell("http2.send_request_headers.complete", {"stream_id": stream.stream_id, "at": stream.headers_sent_at})

    def _tell(self, name: str, info: dict[str, Any]) -> None:
        if self._trace is None:
            return
        step_now = getattr(self._trace, "step_now", None)
        if step_now is not None:
            step_now(name, info)
            return
        task = asyncio.ensure_future(self._trace(name, info))
        _TRACES_RUNNING.add(task)
        task.add_done_callback(_TRACES_RUNNING.discard)


async def _trace(trace: TraceCallback | None, name: str, info: dict[str, Any]) -> None:
    if trace is None:
        return
    step_now = getattr(trace, "step_now", None)  # the switch's own trace: taken at once, no coroutine of its own
    if step_now is not None:
        step_now(name, info)
    else:
        await trace(name, info)
