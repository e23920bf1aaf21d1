"""Where dialout reaches inside Hypercorn: the one place, checked at start against the versions it was written for.

Hypercorn 0.18 gives no hooks for what the controller must know and do per connection, so we put classes of our
own in its place, by the module-level names its worker looks them up by:

- ``hypercorn.asyncio.run.TCPServer``: our connection task (``asgi_tls``: the account of each connection, the ASGI
  TLS extension, pgjones/hypercorn#62), on ``SeamTCPServer`` below;
- ``hypercorn.protocol.H2Protocol``: our HTTP/2 protocol (``h2_actions``: a trial's levers; ``h2_limits``: the
  abuse limits), on ``SeamH2Protocol`` below;
- ``hypercorn.protocol.h2.HTTPStream`` and ``hypercorn.protocol.h11.HTTPStream``: streams that know their wire id
  and refuse a target that is not ASCII (``asgi_tls``);
- ``hypercorn.asyncio.run.WorkerContext``: its events (a stream's buffer has two) are ``dialout.lazy_event``'s,
  which make their deque of waiters only when someone waits (``SeamWorkerContext``);
- ``hypercorn.asyncio.tcp_server.TaskGroup``: a request's app receives from an ``AppInbox``, not from an
  ``asyncio.Queue`` of its own (``SeamTaskGroup``);
- an HTTP/2 connection's ``priority`` tree: its streams take turns instead (``StreamTurns``);
- how an answer ends: with its body, in one DATA frame sent from the handler's task when it fits, rather than
  through Hypercorn's send task and an empty DATA frame after it (``SeamH2Protocol._ended_at_once``).

And three Hypercorn bugs are mended here, since a shutdown hung on them (issue 28):

- a connection's idle timer is restarted on a task group that is already shutting down (pgjones/hypercorn#338):
  Python 3.11's ``TaskGroup.create_task`` raises, the coroutine is never awaited, and the shutdown ended in a
  ``RuntimeError`` traceback and exit 70. ``_IdleTimer`` does not start a timer there;
- an HTTP/2 connection that closes leaves its streams' send buffers open, so a response blocked on flow control
  (a peer that stopped reading, a window of 0) waits for ever, also once cancelled: its ``finally`` sends again.
  ``SeamH2Protocol`` closes them with the connection.

- a write that finds the TLS close failed raises ``ssl.SSLError``, which Hypercorn does not take for the
  connection's end (it does a ``ConnectionError``): it reached the request's handler as a traceback.

And one thing Hypercorn cannot do: end a connection now. ``SeamTCPServer.cut()`` aborts its transport (no TLS
close_notify to wait for, asyncio's ``ssl_shutdown_timeout`` is 30 s) and closes its protocol: what a shutdown does
to whatever is left when its grace is over (``serve``).

Our own objects travel to each connection as typed fields of ``DialoutConfig``, Hypercorn's ``Config`` subclass.
``tests/test_seams.py`` pins what is replaced here and the mended bugs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib.metadata
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import h2.events
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError
from hypercorn import protocol as hypercorn_protocol
from hypercorn.asyncio import run as hypercorn_run
from hypercorn.asyncio import tcp_server as hypercorn_tcp_server
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.task_group import _handle as run_app
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import AsyncioSingleTask, EventWrapper, WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import h2 as hypercorn_h2
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import EndBody
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope
from priority.priority import DeadlockError, DuplicateStreamError, MissingStreamError

from controller.http.quart_seam import MESSAGES_EXTENSION
from dialout import h2_seam
from dialout.asyncio_seam import release_transport, socket_transport
from dialout.errors import DialoutError
from dialout.lazy_event import LazyEvent

if TYPE_CHECKING:
    from controller.accounts.connections import ConnectionRegistry
    from controller.server.accepting import HandshakeGate
    from controller.server.h2_actions import HeldSettings
    from controller.server.h2_limits import PeerLimits

# The releases this module was written against and checked with: the names replaced above, their signatures and
# the private state they read are those of these series.
WRITTEN_FOR = {"hypercorn": "0.18.", "h2": h2_seam.WRITTEN_FOR}


class SeamError(DialoutError):
    """An installed Hypercorn or h2 that this controller was not written for (exit 2: fix the install)."""


def check_versions(installed_version: Callable[[str], str] = importlib.metadata.version) -> None:
    """One line naming both versions when an installed library is not of the series written for."""
    for package, series in WRITTEN_FOR.items():
        installed = installed_version(package)
        if not installed.startswith(series):
            raise SeamError(
                f"{package} {installed} is installed; dialout's controller was written for {package} {series}x "
                f"(controller/server/hypercorn_seam.py): `pip install -e .` installs the series it pins"
            )


class DialoutConfig(HypercornConfig):
    """Hypercorn's config, serving a TLS context we built and checked ourselves (Hypercorn would build its own from
    file names, late, and without our cipher and verification policy), and carrying our objects to each
    connection: the account (``registry``), the abuse limits, the handshake gate, a trial's held first flights.
    None where a listener goes without (the admin listener)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self.registry: ConnectionRegistry | None = None
        self.limits: PeerLimits | None = None
        self.gate: HandshakeGate | None = None
        self.held: HeldSettings | None = None
        # The debug data of the GOAWAY every HTTP/2 connection gets at shutdown (empty: only the idle ones get one,
        # busy ones reset new streams as refused and get Hypercorn's when they go idle): dialout.signals.
        self.goodbye = b""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context

    @property
    def ssl_enabled(self) -> bool:
        return self._ssl_context is not None


def dialout_config(config: HypercornConfig) -> DialoutConfig:
    """The config a connection of ours is served with (always ours: ``serve`` builds no other)."""
    assert isinstance(config, DialoutConfig), "served without dialout's config"
    return config


class LazyEventWrapper(EventWrapper):
    """Hypercorn's event, on a ``LazyEvent``."""

    def __init__(self) -> None:  # not EventWrapper's: its asyncio.Event is what this replaces
        self._event = LazyEvent()


class SeamWorkerContext(WorkerContext):
    """Hypercorn's worker context, whose events (``event_class``: a connection's and each stream's) are lazy."""

    event_class = LazyEventWrapper


class AppInbox:
    """What a request's app receives (ASGI's ``http.request`` with its body, ``http.disconnect``), in place of the
    ``asyncio.Queue`` Hypercorn makes for each request: three deques and an event, ~3 KiB a request in flight, for
    the two or three events a ping gets. Bounded as Hypercorn's: ``put`` waits while ``maxsize`` wait unread (and
    with it h2's acknowledgement of a body's DATA, so a request body is held to its flow-control window)."""

    __slots__ = ("_events", "_getters", "_listener", "_maxsize", "_putters")

    def __init__(self, maxsize: int) -> None:
        self._events: list[ASGIReceiveEvent] = []
        self._maxsize = maxsize  # 0: unbounded, as asyncio.Queue's
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []
        self._listener: Callable[[ASGIReceiveEvent], None] | None = None

    def listen(self, listener: Callable[[ASGIReceiveEvent], None] | None) -> None:
        """Every event, those waiting and those to come, handed to ``listener`` as it is put, rather than kept for
        ``get``: an app that takes its messages so needs no task waiting on them (``MESSAGES_EXTENSION``). Nothing
        waits for room then: the listener takes each at once. None: kept again (the app is done)."""
        self._listener = listener
        if listener is None:
            return
        waiting, self._events = self._events, []
        for event in waiting:
            listener(event)
        for putter in self._putters:
            if not putter.done():
                putter.set_result(None)

    async def get(self) -> ASGIReceiveEvent:
        while not self._events:
            await self._wait(self._getters)
        event = self._events.pop(0)
        self._wake(self._putters)
        return event

    async def put(self, event: ASGIReceiveEvent) -> None:
        while self._listener is None and 0 < self._maxsize <= len(self._events):
            await self._wait(self._putters)
        if self._listener is not None:  # (from the first, or since this put waited for room)
            self._listener(event)
            return
        self._events.append(event)
        self._wake(self._getters)

    @staticmethod
    async def _wait(waiters: list[asyncio.Future[None]]) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                AppInbox._wake(waiters)  # woken, then cancelled before it ran: the next in line has the turn
            raise
        finally:
            waiters.remove(waiter)

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
                return


class SeamTaskGroup(TaskGroup):
    """Hypercorn's task group of a connection, whose requests' apps receive from an ``AppInbox``. The two callables
    Hypercorn makes for every request, for apps that run code in threads (ASGI 2 and WSGI wrappers; Quart is
    neither), are made once a connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._in_executor = functools.partial(loop.run_in_executor, None)

    async def spawn_app(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        inbox = AppInbox(config.max_app_queue_size)
        if scope["type"] == "http":  # (this request's own scope, made for it by Hypercorn's HTTPStream)
            cast(dict[str, Any], scope["extensions"])[MESSAGES_EXTENSION] = inbox.listen
        self.spawn(run_app, app, config, scope, inbox.get, send, self._in_executor, self._call_soon)
        return inbox.put

    def _call_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:  # noqa: ANN401 - any app's
        return asyncio.run_coroutine_threadsafe(func(*args), self._loop).result()


class _IdleTimer(AsyncioSingleTask):
    """Hypercorn's idle timer, which does not start on a task group that is shutting down (pgjones/hypercorn#338),
    and is stopped, or started again, without waiting for the old timer's task to end. Cancelled, that task cannot
    act (it is cancelled at its wait, before the close it would make); waiting for it held the connection's reader
    for loop turns at every request that came on an idle connection and at every answer that left it idle, the
    requests read with it waiting meanwhile (``tests/test_identity.py``: five turns between two requests read
    together)."""

    async def restart(self, task_group: Any, action: Callable[[], Coroutine[Any, Any, None]]) -> None:  # noqa: ANN401 - Hypercorn's TaskGroup
        self._cancel()
        timer = action()
        try:
            self._handle = task_group._task_group.create_task(timer)
        except RuntimeError:  # the connection is ending: nothing is left to time out
            timer.close()

    async def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class SeamTCPServer(TCPServer):
    """Hypercorn's connection task, with the idle timer mended, its writes gathered a loop turn at a time, and a
    way to end the connection now."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - Hypercorn's own signature, passed on
        super().__init__(*args, **kwargs)
        self.idle_task = _IdleTimer()
        self._unwritten: list[bytes] = []  # this loop turn's writes, written together at its end
        self._on_written: list[Callable[[float], None]] = []  # told when they are, with the time
        self._written_at: float | None = None  # the last write's time

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            # Hypercorn writes each of its flushes at once: an answer's HEADERS, its DATA, its end, each a TLS
            # record and a send() of its own. Gathered, a turn's answers on this connection are one of each.
            if not self._unwritten:
                asyncio.get_running_loop().call_soon(self.write_now)
            self._unwritten.append(event.data)
            try:
                async with self.send_lock:
                    await self.writer.drain()  # as Hypercorn: a writer waits while the peer is not reading
            except (ConnectionError, RuntimeError, ssl.SSLError):
                await self.protocol.handle(Closed())
            return
        if isinstance(event, Closed):
            self.write_now()
        try:
            await super().protocol_send(event)
        except ssl.SSLError:
            # Hypercorn takes a ConnectionError from a write as the connection's end, not an SSLError, which a
            # write raises once asyncio's TLS close has failed (a peer that sent after our close_notify); it reached
            # the handler writing (and Quart's "Task exception was never retrieved"). The connection is over.
            await self.protocol.handle(Closed())

    def when_written(self, callback: Callable[[float], None]) -> None:
        """Call ``callback`` with the time (monotonic) at which what was sent up to now is written: the moment an
        answer just sent reaches the wire, which may be a loop turn and a busy loop's lag later; at once, with the last
        write's time, if it has been written already (a send that waited, for its drain say). Never called if the
        write does not happen (the connection is closing)."""
        if self._unwritten:
            self._on_written.append(callback)
        elif self._written_at is not None:
            callback(self._written_at)

    def write_now(self) -> None:
        """Write what this turn gathered. A write that fails is the connection's end, which its reader sees."""
        if not self._unwritten:
            return
        data = b"".join(self._unwritten)
        self._unwritten.clear()
        on_written, self._on_written = self._on_written, []
        if self.writer.transport.is_closing():
            return
        with contextlib.suppress(ConnectionError, RuntimeError, ssl.SSLError):
            self.writer.write(data)
            self._written_at = time.monotonic()
            for callback in on_written:
                callback(self._written_at)

    async def _close(self) -> None:
        self.write_now()  # what was gathered goes out before the TLS close
        await super()._close()

    async def _initiate_server_close(self) -> None:
        # Hypercorn's, with what the protocol's close gathered written before the transport closes.
        await self.protocol.handle(Closed())
        self.write_now()
        self.writer.close()

    async def run(self) -> None:
        beneath = socket_transport(self.writer.transport)
        try:
            await super().run()
        finally:
            self._release(beneath)

    def _release(self, transport: asyncio.BaseTransport) -> None:
        """The connection is over: break the cycles that would leave it (~115 objects, its TLS and HPACK state
        among them) to the garbage collector. The server and its protocol refer to each other (the protocol sends
        through the server's ``protocol_send``); h2's connection and asyncio's transport each to itself."""
        wrapper = self.__dict__.pop("protocol", None)
        connection = getattr(getattr(wrapper, "protocol", None), "connection", None)
        if isinstance(connection, H2Connection):
            h2_seam.release(connection)
        release_transport(transport)

    def in_flight(self) -> int:
        """Streams this connection is serving now (HTTP/1.1: its one request, if any)."""
        protocol = getattr(getattr(self, "protocol", None), "protocol", None)
        if protocol is None:
            return 0
        if isinstance(protocol, H2Protocol):
            return len(protocol.streams)
        stream = getattr(protocol, "stream", None)
        return 0 if stream is None or getattr(stream, "closed", True) else 1

    async def cut(self) -> None:
        """End the connection now: its transport aborted (no TLS close to wait for), its protocol told, so every
        stream's handler sees the disconnect and nothing waits to write."""
        self._unwritten.clear()
        self.writer.transport.abort()
        protocol = getattr(self, "protocol", None)
        if protocol is not None:
            await protocol.handle(Closed())


class StreamTurns:
    """Which stream's answer Hypercorn's send task writes next: the streams with something to send take turns, in
    the order they became ready. In place of ``priority.PriorityTree``, which weighs streams by RFC 7540's
    dependency tree: each stream's end rebuilt its parent's heap of children and compared them one by one (7% of
    the controller's CPU with 100 pings in flight, py-spy under ``h2load -c 1 -m 100``), for a scheme RFC 9113
    deprecated (section 5.3.2) and answers of a few hundred bytes. PRIORITY frames are therefore ignored, as RFC
    9113 lets a server do: no state is kept for a stream a peer prioritises before (or without) opening it.

    The tree's interface, as Hypercorn 0.18's ``H2Protocol`` calls it, and its errors."""

    def __init__(self, removed: Callable[[int], None] = lambda stream_id: None) -> None:
        self._removed = removed  # told of each stream removed: its answer has gone (or it was cut short)
        self._ready: dict[int, bool] = {}  # every stream inserted and not removed: ready to send or blocked
        self._turns: collections.deque[int] = collections.deque()  # next first; may hold ids since blocked or gone
        self._queued: set[int] = set()  # the ids in _turns

    def insert_stream(
        self, stream_id: int, depends_on: int | None = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        if stream_id in self._ready:
            raise DuplicateStreamError(f"stream {stream_id} inserted twice")
        self._ready[stream_id] = True
        self._queue(stream_id)

    def reprioritize(
        self, stream_id: int, depends_on: int | None = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        """A PRIORITY frame (its dependency, weight, exclusive): ignored (above)."""

    def block(self, stream_id: int) -> None:
        self._known(stream_id)
        self._ready[stream_id] = False

    def unblock(self, stream_id: int) -> None:
        self._known(stream_id)
        self._ready[stream_id] = True
        self._queue(stream_id)

    def remove_stream(self, stream_id: int) -> None:
        self._known(stream_id)
        del self._ready[stream_id]
        self._removed(stream_id)

    def __iter__(self) -> StreamTurns:
        return self

    def __next__(self) -> int:
        while self._turns:
            stream_id = self._turns.popleft()
            if self._ready.get(stream_id):
                self._turns.append(stream_id)  # its next turn comes after every other ready stream's
                return stream_id
            self._queued.discard(stream_id)
        raise DeadlockError("no stream is ready to send")

    def _queue(self, stream_id: int) -> None:
        if stream_id not in self._queued:
            self._queued.add(stream_id)
            self._turns.append(stream_id)

    def _known(self, stream_id: int) -> None:
        if stream_id not in self._ready:
            raise MissingStreamError(f"stream {stream_id} is not in the turns")


class ServedH2Connection(h2_seam.PromptH2Connection):
    """The controller's h2 connection. Hypercorn resets a stream in one case: a new one during a shutdown, with h2's
    default code, NO_ERROR, which tells the client nothing of whether its request was processed; REFUSED_STREAM
    says it was not, and that it may be sent again (RFC 9113 section 8.7). From the start, not once the shutdown
    has begun: a request that crosses the shutdown's GOAWAY to an idle connection is refused so too (1,000
    persistent switches restarted lost 385 pings to NO_ERROR, bench/restart.py)."""

    def reset_stream(self, stream_id: int, error_code: ErrorCodes | int = ErrorCodes.REFUSED_STREAM) -> None:
        super().reset_stream(stream_id, error_code)


class SeamH2Protocol(H2Protocol):
    """Hypercorn's HTTP/2 protocol, closing its streams' send buffers when the connection closes, its streams
    taking turns to send (``StreamTurns``), and what a shutdown needs of it that Hypercorn does not do
    (``graceful``)."""

    connection: ServedH2Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - Hypercorn's own signature, passed on
        super().__init__(*args, **kwargs)
        # h2 checks each header block we send for what RFC 9113 forbids (uppercase, connection-specific fields):
        # our answers' headers are the app's own, the same for every ping, checked by the tests rather than by h2
        # once per answer. What a peer sends is still checked (``validate_inbound_headers``).
        self.connection.config.validate_outbound_headers = False
        # A stream whose answer has gone is forgotten at once, so that h2 counts the open ones by ``len`` and not
        # by walking all of them at every new request (``dialout.h2_seam``).
        self.connection = h2_seam.made_prompt(self.connection, ServedH2Connection)
        # A switch's requests come as the same header block again and again: decoded once while HPACK's table holds;
        # and our answers' headers differ only as the second or the body's length does: encoded once while they hold.
        self.connection.decoder = h2_seam.RepeatingDecoder.replacing(self.connection.decoder)
        self.connection.encoder = h2_seam.RepeatingEncoder()
        self.priority = StreamTurns(self.connection.forget)  # type: ignore[assignment]  # the tree's interface
        self._sending: int | None = None  # the stream Hypercorn's send task is sending from now, if any

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, EndBody) and await self._ended_at_once(event.stream_id):
            return
        await super().stream_send(event)

    async def _send_data(self, stream_id: int) -> None:
        self._sending = stream_id
        try:
            await super()._send_data(stream_id)
        finally:
            self._sending = None

    async def _ended_at_once(self, stream_id: int) -> bool:
        """An answer's end, with what is left of its body buffered and within its windows and one frame: sent now as
        one DATA frame with END_STREAM. Hypercorn hands both to its send task, which sends the body, then an empty
        DATA frame to end the stream, while the handler waits for the buffer to drain: two turns of that task, a
        wait and a frame more an answer (a ping's answer is one small body). False, for Hypercorn's way, where the
        body does not fit, the send task is in the middle of this stream, or h2 refuses (a reset stream)."""
        buffer = self.stream_buffers.get(stream_id)
        if buffer is None or stream_id == self._sending:
            return False
        body = bytes(buffer.buffer)
        try:
            room = min(self.connection.local_flow_control_window(stream_id), self.connection.max_outbound_frame_size)
            if len(body) > room:
                return False
            self.connection.send_data(stream_id, body, end_stream=True)
        except (StreamClosedError, ProtocolError):
            return False
        # Nothing waits on the buffer (its one writer is the caller), and the send task skips a stream removed.
        del self.stream_buffers[stream_id]
        self.priority.remove_stream(stream_id)
        await self._flush()
        return True

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        await super()._handle_events(events)
        # Past keep_alive_max_requests Hypercorn sends GOAWAY naming the highest request read as the last it will
        # process, and h2 then closes its state machine: that request's answer, and those of the requests before
        # it still in flight, could no longer be sent, and each was lost to its client's timeout. Open it again
        # for them, as after our own GOAWAYs (not after the client's: it said it is done).
        retired = self.keep_alive_requests > self.config.keep_alive_max_requests
        told = any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
        if retired and not told and h2_seam.gone_away(self.connection) and not self.closed:
            h2_seam.reopen_after_sending_goaway(self.connection)

    async def goaway_now(self, debug: bytes = b"") -> None:
        """GOAWAY naming the highest stream seen, written now (Hypercorn sends one only when a busy connection goes
        idle, and closes an idle one without any), with ``debug`` as its debug data. The streams up to it are still
        answered (h2's state machine is opened again: ``dialout.h2_seam``)."""
        self.connection.close_connection(additional_data=debug or None)
        h2_seam.reopen_after_sending_goaway(self.connection)
        await self._flush()

    async def handle(self, event: Event) -> None:
        await super().handle(event)
        if isinstance(event, Closed):
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()  # a writer blocked on flow control (or its drain) goes on, and finds it closed


_installed: list[tuple[object, str, type]] = []


def install(
    tcp_server: type[SeamTCPServer],
    h2_protocol: type[SeamH2Protocol],
    h2_stream: type[HTTPStream],
    h11_stream: type[HTTPStream],
) -> None:
    """Put our classes in Hypercorn's place, once per process (later calls check they are the same)."""
    wanted = [
        (hypercorn_run, "WorkerContext", SeamWorkerContext),
        (hypercorn_tcp_server, "TaskGroup", SeamTaskGroup),
        (hypercorn_run, "TCPServer", tcp_server),
        (hypercorn_protocol, "H2Protocol", h2_protocol),
        (hypercorn_h2, "HTTPStream", h2_stream),
        (hypercorn_h11, "HTTPStream", h11_stream),
    ]
    if _installed:
        assert _installed == wanted, "Hypercorn's seam installed twice with different classes"
        return
    check_versions()
    for module, name, ours in wanted:
        assert isinstance(getattr(module, name), type), f"Hypercorn has no {module.__name__}.{name} to replace"
        setattr(module, name, ours)
    _installed.extend(wanted)
