"""Between accept() and the end of a connection's TLS handshake: a pace for accepting, caps on the handshakes
pending, and a quiet log when accepting fails (issues 20 and 32).

asyncio accepts up to the listen backlog's size at each turn of its loop that finds the listener ready (4,096
here, ``serve.LISTEN_BACKLOG``), and starts every connection it accepted in the next turn: 1,100 peers that
connect at once cost one turn ~1,100 TLS objects, and a switch's ping that arrives beside them waited 90-205 ms
under load (``tests/test_hostile.py``). The gate accepts ``ACCEPTS_A_TURN`` a turn; the rest wait in the kernel's
backlog, and the listener is ready again at the next turn, after the pings that came meanwhile.

A TCP peer that connects and never speaks holds a socket and, once asyncio has wrapped it for TLS, about 300 KB,
for up to ``controller.handshake_timeout_s``. 1,100 of them left a controller with 1,024 descriptors none for a
real switch. So a connection is refused at once (closed with a TCP reset, before any TLS is spent on it) when
``controller.max_pending_handshakes`` are already pending, or ``max_pending_handshakes_per_address`` from its
address: a flood from one address cannot crowd out the fleet's, and the whole of it is bounded in memory and
descriptors. Refusals are logged at most once a second, with a count and the addresses that had the most.

How, without a hook in asyncio or Hypercorn for it: asyncio accepts by calling ``accept()`` on the listening
socket object it was given, and closes each connection's socket with ``close()``. ``HandshakeGate.guard()`` turns
a listening socket into a ``_GatedListener`` (the same object: a subclass assigned to ``__class__``, so whoever
holds it sees the change) whose ``accept()`` counts each connection in, and whose accepted sockets count
themselves out when closed; the server's TCP task counts a connection out once its handshake is done
(``handshake_done``), since asyncio calls it only then.

asyncio logs a failed ``accept()`` (out of descriptors: EMFILE) with a traceback each time it retries, once a
second per listener; ``quiet_accept_errors()`` lets one such line through a second, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import struct
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from controller.server.balance import DECLINE_MAX_S, Share, Turn

logger = logging.getLogger(__name__)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REPORT_EVERY_S = 1.0
# Connections accepted (or refused) a turn of the event loop: ~1-2 ms of starting them, refused ones cost less. The
# silent flood's victim under load: 4-16 ms at 16 a turn, 22-112 at 32, 11-193 at 64. A fleet of 1,000 dialling at
# once may pay for it: 10.3-13.7 s against 10.5-11.7 at 4,096 a turn (bench/RESULTS.md, within this machine's noise).
ACCEPTS_A_TURN = 16
ACCEPT_ERROR = "socket.accept() out of system resource"  # what asyncio logs when accept() fails (EMFILE, ENFILE)
SHOWN_ADDRESSES = 3
# SO_LINGER on, 0 s: close() sends a reset and frees the socket at once, with no TIME_WAIT.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class HandshakeGate:
    def __init__(self, max_pending: int, max_pending_per_address: int, shared: Sequence[IPNetwork] = ()) -> None:
        """``shared``: networks whose addresses carry many switches (trusted proxies): not held to the cap per
        address, only to the one in all."""
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self._shared = tuple(shared)
        self._shut_out_until: dict[str, float] = {}
        self.shut_out_at: dict[str, list[float]] = {}  # by address: when each connection shut out came
        self._pending: dict[int, str] = {}  # by the accepted socket's descriptor: its peer's address
        self._per_address: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()  # since the last report
        self._reported_at = -REPORT_EVERY_S
        self._report_due: asyncio.TimerHandle | None = None
        self.refused_total = 0
        self._accepted_this_turn = 0
        self._load_share: Share | None = None  # with other workers on the same listeners: this one's part of their load

    @property
    def pending(self) -> int:
        return len(self._pending)

    def guard(self, listener: socket.socket) -> None:
        """Count every connection ``listener`` accepts from now on."""
        listener.__class__ = _GatedListener
        _gates[listener] = self

    def share_with_workers(self, share: Share) -> None:
        """Accept only what this worker's part of the workers' load says it takes, from now on."""
        self._load_share = share
        share.join()
        logger.debug("accepting connections: each new one goes to a worker with the fewest open")

    def stop_sharing(self) -> None:
        """This worker accepts no more: the others no longer leave connections to it."""
        if self._load_share is not None:
            self._load_share.leave()

    def accept_now(self) -> Turn:
        """Whether another connection is accepted in this turn of the loop (LEAVE: at the next, or by another
        worker with fewer open)."""
        if self._accepted_this_turn >= ACCEPTS_A_TURN:
            return Turn.LEAVE
        turn = Turn.TAKE if self._load_share is None else self._load_share.turn()
        if not turn.takes:
            return turn
        if not self._accepted_this_turn:
            asyncio.get_running_loop().call_soon(self._next_turn)  # runs after what this turn runs
        self._accepted_this_turn += 1
        return turn

    def _next_turn(self) -> None:
        self._accepted_this_turn = 0

    def admit(self, sock: socket.socket, address: str) -> bool:
        if self._shut_out(address):
            return False
        crowded = self._per_address[address] >= self.max_pending_per_address and not self._is_shared(address)
        if len(self._pending) >= self.max_pending or crowded:
            self._refuse(address)
            return False
        self._pending[sock.fileno()] = address
        self._per_address[address] += 1
        if self._load_share is not None:
            self._load_share.opened()
        return True

    def shut_out(self, address: str, seconds: float) -> None:
        """Reset every connection from ``address`` at accept for ``seconds`` (a trial: the controller refusing
        connections, as one does that is down or overloaded); each refused is kept in ``shut_out_at``."""
        self._shut_out_until[address] = time.monotonic() + seconds
        self.shut_out_at.setdefault(address, [])

    def _shut_out(self, address: str) -> bool:
        until = self._shut_out_until.get(address)
        if until is None:
            return False
        now = time.monotonic()
        if now >= until:
            del self._shut_out_until[address]
            return False
        self.shut_out_at[address].append(now)
        return True

    def _is_shared(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._shared)

    def closed(self, fileno: int) -> None:
        """The connection admitted on descriptor ``fileno`` is closed."""
        if fileno >= 0:
            self.handshake_done(fileno)  # a handshake that failed or timed out ends here
        if self._load_share is not None:
            self._load_share.closed()

    def handshake_done(self, fileno: int) -> None:
        """The connection on descriptor ``fileno`` is through its handshake (or has none): no longer pending."""
        address = self._pending.pop(fileno, None)
        if address is not None:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def _refuse(self, address: str) -> None:
        """Count a refusal; say so now if nothing was said in the last second, else once that second is over."""
        self.refused_total += 1
        self._refused[address] += 1
        if self._report_due is not None:
            return
        wait_s = self._reported_at + REPORT_EVERY_S - time.monotonic()
        if wait_s <= 0:
            self._report()
        else:
            self._report_due = asyncio.get_running_loop().call_later(wait_s, self._report)

    def _report(self) -> None:
        self._report_due = None
        count = sum(self._refused.values())
        most = ", ".join(f"{address} ({n})" for address, n in self._refused.most_common(SHOWN_ADDRESSES))
        logger.warning(
            "refused %d connection%s over the pending-handshake caps (%d in all, %d per address; %d pending "
            "now), by address: %s",
            count,
            "" if count == 1 else "s",
            self.max_pending,
            self.max_pending_per_address,
            len(self._pending),
            most,
        )
        self._refused.clear()
        self._reported_at = time.monotonic()


# The gate of each guarded listener and of each socket it accepted (a socket object has no room for one: its
# class has __slots__, which a class assigned to __class__ must keep).
_gates: weakref.WeakKeyDictionary[socket.socket, HandshakeGate] = weakref.WeakKeyDictionary()


class _GatedListener(socket.socket):
    __slots__ = ()

    def accept(self) -> tuple[socket.socket, Any]:
        """The next connection the gate admits; those it does not are reset as they come. Raises what accept()
        raises (BlockingIOError once the backlog is empty), and BlockingIOError when this turn's accepts are spent
        or another worker is to take it: asyncio then stops accepting until the listener is ready again, at its
        next turn."""
        gate = _gates[self]
        while True:
            turn = gate.accept_now()
            if not turn.takes:
                raise BlockingIOError("this turn's accepts are spent: the rest wait in the backlog")
            sock, address = super().accept()
            if turn is Turn.TAKE_OVERDUE:  # said, so that an imbalance a stalled worker caused is told from a fault
                logger.debug(
                    "a connection taken out of balance: a worker with fewer open left it for %g s", DECLINE_MAX_S
                )
            host = str(address[0]) if isinstance(address, tuple) else str(address)
            if gate.admit(sock, host):
                sock.__class__ = _CountedSocket
                _gates[sock] = gate
                return sock, address
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            sock.close()


class _CountedSocket(socket.socket):
    __slots__ = ()

    def close(self) -> None:
        gate = _gates.pop(self, None)
        if gate is not None:
            gate.closed(self.fileno())
        super().close()


class EverySecond(logging.Filter):
    """Lets one of asyncio's accept-error records through a second, saying how many it held back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._passed_at = -math.inf
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if ACCEPT_ERROR not in record.getMessage():
            return True
        now = self._clock()
        if now - self._passed_at < REPORT_EVERY_S:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.msg} ({self._held} more since the last such line)"
        self._passed_at, self._held = now, 0
        record.exc_info = None  # the errno is in the message; the traceback is asyncio's, the same each time
        return True


_quieting = EverySecond()


def quiet_accept_errors() -> None:
    """Install the filter on asyncio's logger (once per process)."""
    asyncio_logger = logging.getLogger("asyncio")
    if _quieting not in asyncio_logger.filters:
        asyncio_logger.addFilter(_quieting)
