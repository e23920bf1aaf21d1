"""The run's HTTP client, and where a ping's stream goes when a connection is full.

HTTP/2 runs on the switch's own transport (``sim_switch.wire.transport``): ``queue`` waits there for the
controller's limit on one connection, ``spill`` opens another connection in the same pool, and no limit but the
controller's SETTINGS_MAX_CONCURRENT_STREAMS applies. HTTP/1.1 stays on httpx's own transport (httpcore), which
keeps one request per connection and opens connections up to its limit; there the waiting happens here, not in
httpcore, whose pool rescans every request it holds each time one arrives or leaves
(``AsyncConnectionPool._assign_requests_to_connections``): 5,000 pings handed over at once cost 25 million scans.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx

from sim_switch.dial.deadlines import Deadlines
from sim_switch.dial.ping_requests import PingRequests
from sim_switch.wire.transport import SwitchTransport

_ANY_TIME = contextlib.nullcontext()  # HTTP/2: the transport holds the pings that wait, at no cost here


class StreamPool:
    """The run's transport for its pings, and a client over it for everything else (the questions to the
    controller); ``limit``: at most that many pings handed to the transport at once (HTTP/1.1); ``deadlines``:
    each ping's try bounded by the request timeout."""

    def __init__(
        self,
        new_transport: Callable[[], httpx.AsyncBaseTransport],
        new_client: Callable[[httpx.AsyncBaseTransport], httpx.AsyncClient],
        requests: PingRequests,
        request_timeout_s: float,
        limit: int | None = None,
    ) -> None:
        self._new_transport = new_transport
        self._new_client = new_client
        self.requests = requests
        self.deadlines = Deadlines(request_timeout_s)
        self.pings = new_transport()
        self.primary = new_client(self.pings)
        self._free = asyncio.Semaphore(limit) if limit is not None else None
        self._extra: list[httpx.AsyncClient] = []

    @property
    def transport(self) -> SwitchTransport | None:
        """The switch's own HTTP/2 transport under the pings, for its PINGs (None: HTTP/1.1 on httpx's)."""
        return self.pings if isinstance(self.pings, SwitchTransport) else None

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Entered once the transport may take one more ping."""
        return self._free or _ANY_TIME

    def extra_client(self) -> httpx.AsyncClient:
        """A client like the primary one on a connection of its own (HTTP/1.1 keepalive probes), closed with the
        pool: on the same transport for HTTP/2 (a stream of the shared connection), a new one for HTTP/1.1."""
        client = self._new_client(self.pings if self.transport is not None else self._new_transport())
        self._extra.append(client)
        return client

    async def aclose(self) -> None:
        self.deadlines.close()
        for client in [self.primary, *self._extra]:
            await client.aclose()
