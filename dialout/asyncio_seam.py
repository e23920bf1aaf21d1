"""Where dialout reaches inside asyncio, for both halves: its TLS is made to send the fatal alert when a handshake
fails, so a refused switch learns why, and to tell the controller who it refused; what a balancer sends before a
connection's TLS is read first (``read_before_tls``: its PROXY header); a server's handshakes are paced, so that a
storm of them cannot hold up the answers on the connections already up; its loop's turns are counted; a finished
connection's socket transport lets go of itself (``release_transport``); and every TLS connection reads into a
buffer of ``TLS_READ_BUFFER``, not 256 KiB (``smaller_tls_read_buffers``).

asyncio's ``SSLProtocol`` makes each connection a zero-filled read buffer of ``max_size`` (256 KiB) as it is
made, and reads into it whatever it is sent: 333 KiB of a controller's RSS an idle connection of a switch, of
which that buffer is the most; a thousand switches, on either end, 256 MB of buffers that hold a ping's few hundred
bytes. A TLS record is at most 16 KiB: ``TLS_READ_BUFFER`` holds two. Measured on a controller of one worker
holding 400 idle connections (each past its SETTINGS): 333 -> 109 KiB a connection; its CPU a request under h2load
no worse (bench/RESULTS.md). ``SSLProtocol.max_size`` is a class attribute that asyncio reads at each
connection's making and at each read; ``tests/test_seams.py`` checks the buffer a real connection gets, and that
what is sent in many times its size arrives whole.

asyncio's ``SSLProtocol`` force-closes the transport on a failed handshake without flushing what OpenSSL queued
for the peer: the fatal alert (``certificate required``, ``unknown ca``, ``bad certificate``). A switch that dials
without a certificate, or with one from another CA, then sees only "EOF occurred in violation of protocol" or a
broken pipe, and cannot tell a refused certificate from a crashed controller. Blocking ``ssl`` sockets, nginx and
Go all send the alert. CPython gh-98078 (fixed by PR #153620, July 2026) does what this module does; Python 3.11,
which we run on, does not have it.

The backport wraps ``SSLProtocol._do_handshake``: when the handshake raises ``ssl.SSLError``, flush the outgoing
buffer, then let asyncio fail the connection as before. Flushing twice is harmless, so it stays correct on a Python
that has the fix. Delete this module once the oldest supported Python has gh-98078;
``tests/test_tls.py::test_controller_sends_the_alert_for_a_refused_certificate`` fails loudly if the backport stops
taking effect.

The same wrapper tells whoever asked (``report_failed_handshakes``, per server ``SSLContext``) of each failed
handshake with the peer's address: OpenSSL knows why, only the protocol knows from where, and asyncio logs neither
outside debug mode.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from asyncio import sslproto
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

_PATCHED_MARK = "_dialout_sends_handshake_alerts"
TLS_READ_BUFFER = 32 * 1024  # bytes a TLS connection reads at once: two full records (asyncio: 256 KiB)
# Who hears of a failed handshake, by the SSLContext it was made with (a server's; clients' are not listed).
FailedHandshake = Callable[[Any, ssl.SSLError], None]  # (the peer's socket address, OpenSSL's error)
_reporters: weakref.WeakKeyDictionary[ssl.SSLContext, FailedHandshake] = weakref.WeakKeyDictionary()


def report_failed_handshakes(context: ssl.SSLContext, reporter: FailedHandshake) -> None:
    """Call ``reporter`` for every handshake that fails on a connection made with ``context``."""
    _reporters[context] = reporter


def smaller_tls_read_buffers() -> None:
    """Every TLS connection made from now on in this process reads into ``TLS_READ_BUFFER`` bytes."""
    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def send_handshake_alerts() -> None:
    """Install the backport (once per process; later calls do nothing)."""
    original: Callable[[Any], None] = sslproto.SSLProtocol._do_handshake  # type: ignore[attr-defined]
    if getattr(original, _PATCHED_MARK, False):
        return

    def _do_handshake(self: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol has no type stubs
        if self._incoming.pending and self._sslcontext in _before_tls and not _read_before_tls(self):
            return  # more of what comes before the ClientHello is to come, or the connection is closed
        if self._incoming.pending and self._sslobj not in _first_read:
            _first_read[self._sslobj] = (time.monotonic(), loop_turn())
        # The call at connection_made has nothing to read yet, and costs nothing: only a step with bytes is paced.
        pacer = _pacers.get(self._sslcontext) if self._incoming.pending else None
        if pacer is None:
            _handshake_step(self)
        else:
            pacer.step(self)

    setattr(_do_handshake, _PATCHED_MARK, True)
    sslproto.SSLProtocol._do_handshake = _do_handshake  # type: ignore[attr-defined]


# When each server connection's first TLS bytes (its ClientHello) were read, and in which loop turn: a paced step
# may run turns later, and a handshake begun goes before a new one, so OpenSSL's own moment for the ClientHello
# (``SSLContext.sni_callback``) is not when it came. Three dials at once read together were stamped one after
# another's handshake had ended, and a dial race looked like dials in turn.
_first_read: weakref.WeakKeyDictionary[ssl.SSLObject, tuple[float, int | None]] = weakref.WeakKeyDictionary()


def first_read(ssl_object: ssl.SSLObject) -> tuple[float, int | None] | None:
    """When (monotonic) and in which loop turn the first bytes of ``ssl_object``'s connection were read, if known."""
    return _first_read.get(ssl_object)


def _handshake_step(protocol: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol
    """asyncio's ``SSLProtocol._do_handshake``, with the alert sent and the failure reported."""
    try:
        protocol._sslobj.do_handshake()
    except sslproto.SSLAgainErrors:
        protocol._process_outgoing()
    except ssl.SSLError as exc:
        protocol._process_outgoing()  # the fix: send the alert OpenSSL has queued before the transport is dropped
        reporter = _reporters.get(protocol._sslobj.context)
        if reporter is not None:
            reporter(protocol._transport.get_extra_info("peername"), exc)
        protocol._on_handshake_complete(exc)
    else:
        protocol._on_handshake_complete(None)


# --- what some peers send before their TLS ------------------------------------------------------------------------
class BeforeTls(Protocol):
    """What a server reads before a connection's TLS (``proxy_protocol.ProxyHeaders``: a balancer's PROXY header)."""

    def applies(self, peername: Any) -> bool:  # noqa: ANN401 - a socket address, whose shape depends on the family
        """Whether a connection from ``peername`` starts with something to read before its TLS."""

    def read(self, peername: Any, data: bytes) -> tuple[int, Any] | None:  # noqa: ANN401 - as in applies
        """The bytes it takes of ``data`` (what came so far), and the peer's own address (None: the socket's);
        None while it is incomplete. ``ConnectionError``: the connection is closed."""


_before_tls: weakref.WeakKeyDictionary[ssl.SSLContext, BeforeTls] = weakref.WeakKeyDictionary()
_read_already: weakref.WeakSet[Any] = weakref.WeakSet()  # asyncio's SSLProtocols that have had theirs read


def read_before_tls(context: ssl.SSLContext, reader: BeforeTls) -> None:
    """On connections made with ``context`` from now on, ``reader`` reads what comes before the TLS ClientHello;
    the peer's address it gives is the connection's ``peername`` from then on."""
    _before_tls[context] = reader


def _read_before_tls(protocol: Any) -> bool:  # noqa: ANN401 - asyncio's private SSLProtocol
    """Whether the handshake may go on: what came before TLS is read and taken out of the incoming bytes."""
    transport = protocol._transport
    if protocol in _read_already or transport is None:
        return True
    reader = _before_tls[protocol._sslcontext]
    peername = transport.get_extra_info("peername")
    if not reader.applies(peername):
        _read_already.add(protocol)
        return True
    data = protocol._incoming.read()
    try:
        read = reader.read(peername, data)
    except ConnectionError as exc:
        protocol._on_handshake_complete(exc)  # asyncio closes the connection, as on a failed handshake
        return False
    if read is None:
        protocol._incoming.write(data)  # kept for when the rest comes
        return False
    taken, source = read
    if source is not None:
        transport._extra["peername"] = source  # what the transport (TLS above it too) says of its peer
    _read_already.add(protocol)
    protocol._incoming.write(data[taken:])
    return bool(protocol._incoming.pending)


# --- pacing a server's handshakes ---------------------------------------------------------------------------------
# A TLS handshake's steps are the costliest callbacks a controller's loop runs (the server's flight: a key exchange
# and a signature; the client's: verifying its certificate chain), and asyncio runs every ready one in the same
# turn: 50 ClientHellos read at once held a victim's answers back 200 ms, and 1,000 switches dialling together all
# finished their handshakes at once, 3 s in, the first as late as the last. Paced, a turn spends at most
# ``slice_s`` on handshakes and puts the rest off to the next turns, steps of handshakes already begun before new
# ones: what else was ready waits at most a slice, and handshakes finish one after another from the start.
_pacers: weakref.WeakKeyDictionary[ssl.SSLContext, HandshakePacer] = weakref.WeakKeyDictionary()


class HandshakePacer:
    """At most ``slice_s`` of TLS handshake steps in one turn of the loop (at least one step a turn, so every
    handshake goes on); the steps put off run in the turns after, in order, those of begun handshakes first."""

    def __init__(self, slice_s: float) -> None:
        self.slice_s = slice_s
        self.put_off = 0  # steps that waited for a later turn, since the start
        self._turn: int | None = None
        self._spent_s = 0.0  # in self._turn
        self._begun: weakref.WeakSet[Any] = weakref.WeakSet()  # protocols whose ClientHello has been read
        self._waiting: tuple[deque[Any], deque[Any]] = (deque(), deque())  # begun, new
        self._queued: set[Any] = set()
        self._drain: asyncio.Handle | None = None

    def pace(self, context: ssl.SSLContext) -> None:
        """Pace the handshakes of connections made with ``context`` from now on."""
        _pacers[context] = self

    def step(self, protocol: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol
        if protocol in self._queued:
            return  # the bytes wait in its buffer: the step put off reads them all
        if self._queued or not self._room():
            self._put_off(protocol)
        else:
            self._run(protocol)

    def _room(self) -> bool:
        turn = loop_turn()
        if turn != self._turn or turn is None:  # a new turn (uncounted: each call a turn of its own)
            self._turn, self._spent_s = turn, 0.0
        return self._spent_s < self.slice_s

    def _run(self, protocol: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol
        started = time.perf_counter()
        try:
            _handshake_step(protocol)
        finally:
            self._spent_s += time.perf_counter() - started
            self._begun.add(protocol)

    def _put_off(self, protocol: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol
        self.put_off += 1
        self._queued.add(protocol)
        self._waiting[0 if protocol in self._begun else 1].append(protocol)
        if self._drain is None:
            self._drain = asyncio.get_running_loop().call_soon(self._run_waiting)

    def _run_waiting(self) -> None:
        """Scheduled for the next turn, ahead of that turn's reads: its slice of the steps put off."""
        self._drain = None
        self._room()  # a new turn: the slice is whole
        ran = False
        try:
            for waiting in self._waiting:
                while waiting and (not ran or self._room()):
                    protocol = waiting.popleft()
                    self._queued.discard(protocol)
                    # Closed, timed out or failed while it waited: nothing left to do.
                    if protocol._state == sslproto.SSLProtocolState.DO_HANDSHAKE and protocol._transport is not None:
                        self._run_put_off(protocol)
                        ran = True
        finally:  # the steps still waiting get their turn whatever one step did
            if self._queued and self._drain is None:
                self._drain = asyncio.get_running_loop().call_soon(self._run_waiting)

    def _run_put_off(self, protocol: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol
        """A step run from our own callback: what it raises ends its connection, as it would have had the step
        run where asyncio reads (``_SelectorSocketTransport._read_ready`` makes it a fatal error), not the other
        handshakes waiting behind it."""
        try:
            self._run(protocol)
        except Exception as exc:
            protocol._fatal_error(exc, "Fatal error in a paced TLS handshake step")


# --- the loop's turns ---------------------------------------------------------------------------------------------
# Two events read in different turns of the loop (selector.select() calls) arrived in that order, however late the
# loop ran; two read in one turn could have arrived either way round. The diagnosis tells a dial race from a dial
# just after a handshake by this, where times alone, on a lagging loop, cannot (issue 28). asyncio counts no turns:
# the running loop's selector (its private ``_selector``) is given a select() that counts them.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[int]] = weakref.WeakKeyDictionary()


def count_loop_turns() -> None:
    """Count the running loop's turns from now on (once per loop; a loop without a selector is not counted)."""
    loop = asyncio.get_running_loop()
    selector = getattr(loop, "_selector", None)
    if selector is None or loop in _turns:
        return
    counted = _turns[loop] = [0]
    original: Callable[[float | None], Any] = selector.select

    def select(timeout: float | None = None) -> Any:  # noqa: ANN401 - the selector's own list of events
        counted[0] += 1
        return original(timeout)

    selector.select = select


def loop_turn() -> int | None:
    """The running loop's turn now (None: not counted, or no loop running)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    counted = _turns.get(loop)
    return None if counted is None else counted[0]


# --- a finished connection, freed at once -------------------------------------------------------------------------
def socket_transport(transport: asyncio.BaseTransport) -> asyncio.BaseTransport:
    """The socket transport beneath a TLS transport (or ``transport`` itself): to be taken while the connection is
    up, since asyncio's TLS protocol lets go of it when the connection is lost."""
    beneath = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    return beneath if isinstance(beneath, asyncio.BaseTransport) else transport


def release_transport(transport: asyncio.BaseTransport) -> None:
    """Python 3.11's socket transport keeps its read callback, a bound method of its own, once its connection is
    lost: a cycle, which only the garbage collector frees, with what it reaches. A storm of short connections
    (tests/attacks.py ``short``) left ~440 connections to each young collection, and the collection that freed
    them held the loop 64-159 ms. Dropped once the connection is lost (asyncio has closed the socket), reference
    counting frees the transport as its last user lets go. ``transport``: a socket transport
    (``socket_transport``)."""
    if getattr(transport, "_sock", True) is None and hasattr(transport, "_read_ready_cb"):
        transport._read_ready_cb = None
