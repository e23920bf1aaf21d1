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
from collections.abc import AsyncIterator, Callable

import httpx

from sim_switch.wire.transport import SwitchTransport


class StreamPool:
    """One client for the run's pings; ``limit``: at most that many requests handed to it at once (HTTP/1.1)."""

    def __init__(
        self,
        new_client: Callable[[], httpx.AsyncClient],
        transport: SwitchTransport | None = None,
        limit: int | None = None,
    ) -> None:
        self._new_client = new_client
        self.primary = new_client()
        self.transport = transport  # the HTTP/2 transport under ``primary``, for its PINGs
        self._free = asyncio.Semaphore(limit) if limit is not None else None
        self._extra: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[httpx.AsyncClient]:
        """The client, once it may take one more request."""
        async with self._free or contextlib.nullcontext():
            yield self.primary

    def extra_client(self) -> httpx.AsyncClient:
        """A client like the primary one on a connection of its own (HTTP/1.1 keepalive probes), closed with the
        pool."""
        client = self._new_client()
        self._extra.append(client)
        return client

    async def aclose(self) -> None:
        for client in [self.primary, *self._extra]:
            await client.aclose()
