"""Noticing a controller that went silent: no FIN, no RST, just nothing (``switch.keepalive``).

Two layers, because each misses what the other sees:

- TCP keepalive on every socket (``socket_options``): after ``idle_s`` without traffic the kernel probes every
  ``interval_s`` and drops the connection after ``count`` unanswered probes; ``TCP_USER_TIMEOUT`` does the same for
  data that is never acknowledged. This finds a host that is gone or a path that drops packets, but not a peer
  whose TCP stack still answers while nothing is forwarded (a stalled proxy, a stopped process): its kernel
  acknowledges the probes.
- ``SilenceWatch``, in a persistent session: when pings are out to a controller and nothing has been heard from
  it for ``idle_s``, an HTTP/2 PING goes out on each connection the pings use; no ACK within
  ``interval_s * count`` and the controller is silent: its connections are closed, so what was in flight fails
  and the session redials. The ACK's round-trip time is in the trace (``-v``). Over HTTP/1.1, which has no PING,
  the probe is a ping of 0 s on a connection of its own (``StreamPool.extra_client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from dialout.config import Keepalive
from sim_switch.dial.tracing import Tracer
from sim_switch.model.events import KeepaliveCheck
from sim_switch.wire.transport import SocketOption


def socket_options(keepalive: Keepalive) -> list[SocketOption]:
    """TCP keepalive with ``keepalive``'s timing, for ``httpx.AsyncHTTPTransport(socket_options=...)``."""
    seconds = [max(1, math.ceil(value)) for value in (keepalive.idle_s, keepalive.interval_s)]
    options: list[SocketOption] = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS names the first TCP_KEEPALIVE
        options += [
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds[0]),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds[1]),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, keepalive.count),
        ]
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: unacknowledged data for this long kills the connection
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, math.ceil(keepalive.bound_s * 1000)))
    return options


class SilenceWatch:
    """Watches the controllers a session has pings out to, and acts on one that stops answering.

    ``probe(url, timeout_s)`` sends one 0 s ping and says whether any answer came; ``silent(url, quiet_s)`` is
    told when none did."""

    def __init__(
        self,
        keepalive: Keepalive,
        tracer: Tracer,
        probe: Callable[[str, float], Awaitable[bool]],
        silent: Callable[[str, float], Awaitable[None]],
        http2: bool = True,
    ) -> None:
        self._http2 = http2
        self._keepalive = keepalive
        self._tracer = tracer
        self._probe = probe
        self._silent = silent
        self._out: Counter[str] = Counter()  # pings in flight, by controller
        self._heard_at_s: dict[str, float] = {}
        self._changed = asyncio.Event()

    @contextlib.contextmanager
    def ping_out(self, url: str) -> Iterator[None]:
        """Around one try of one ping to ``url``. Silence counts from the first ping out, or the last answer."""
        if not self._out[url]:
            self._heard_at_s[url] = self._tracer.now_s()
            self._changed.set()
        self._out[url] += 1
        try:
            yield
        finally:
            self._out[url] -= 1

    def heard(self, url: str) -> None:
        self._heard_at_s[url] = self._tracer.now_s()

    async def run(self) -> None:
        """Until cancelled: sleep until the earliest controller could have been quiet for ``idle_s``, then probe
        each that has."""
        idle_s = self._keepalive.idle_s
        while True:
            now_s = self._tracer.now_s()
            due = [self._heard_at_s[url] + idle_s for url, out in self._out.items() if out]
            if not due:
                self._changed.clear()
                await self._changed.wait()
                continue
            if min(due) > now_s:
                await asyncio.sleep(min(due) - now_s)
                continue
            for url, out in list(self._out.items()):
                if out and now_s - self._heard_at_s[url] >= idle_s:
                    await self._check(url)

    async def _check(self, url: str) -> None:
        timeout_s = self._keepalive.interval_s * self._keepalive.count
        quiet_s = self._tracer.now_s() - self._heard_at_s[url]
        self._tracer.emit(KeepaliveCheck(at_s=self._tracer.now_s(), url=url, quiet_s=quiet_s, http2=self._http2))
        if await self._probe(url, timeout_s):
            self.heard(url)
            return
        quiet_s = self._tracer.now_s() - self._heard_at_s[url]
        self._heard_at_s[url] = self._tracer.now_s()  # what is still out fails now; do not probe it again
        await self._silent(url, quiet_s)
