"""Where a ping's stream goes when a connection is full: wait for a free stream (queue) or open another
connection (spill).

httpcore hard-codes its own SETTINGS_MAX_CONCURRENT_STREAMS at 100 and, when a connection has that many streams
open, queues further requests on it rather than open a second connection (encode/httpcore#598). The effective
limit is the smaller of that and the controller's setting. ``queue`` keeps to one client and one HTTP/2
connection: pings wait their turn, and the report says how long. ``spill`` gives each further block of
``per_connection`` concurrent pings a client of its own, so a connection is never asked for more streams than it
takes: the way past the cap without touching httpcore's internals.

Under ``queue`` the waiting happens here, not in httpcore: its pool rescans every request it holds each time one
arrives or leaves (``AsyncConnectionPool._assign_requests_to_connections``), so 5,000 pings handed over at once
cost 25 million scans (4.5 s of a 19 s profile); at most ``per_connection`` at a time keeps the scan short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx

HTTPCORE_MAX_STREAMS = 100  # httpcore/_async/http2.py: local SETTINGS_MAX_CONCURRENT_STREAMS
QUEUE = "queue"
SPILL = "spill"


class StreamPool:
    """The switch's HTTP clients for one run: one, or (spill) as many as the pings in flight need."""

    def __init__(self, new_client: Callable[[], httpx.AsyncClient], policy: str, per_connection: int) -> None:
        self._new_client = new_client
        self._spill = policy == SPILL
        self._per_connection = max(1, min(per_connection, HTTPCORE_MAX_STREAMS))
        self._in_flight: dict[httpx.AsyncClient, int] = {}
        # Spill never needs to wait: a full client means a new one.
        self._free_streams = None if self._spill else asyncio.Semaphore(self._per_connection)
        self._extra: list[httpx.AsyncClient] = []

    @property
    def primary(self) -> httpx.AsyncClient:
        """The first client: the one that asks the controller what it saw."""
        return self._client_with_room() if not self._in_flight else next(iter(self._in_flight))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client with a free stream for one request, waiting for one to finish first if need be."""
        async with self._free_streams or contextlib.nullcontext():
            client = self._client_with_room()
            self._in_flight[client] += 1
            try:
                yield client
            finally:
                self._in_flight[client] -= 1

    def _client_with_room(self) -> httpx.AsyncClient:
        for client, in_flight in self._in_flight.items():
            if not self._spill or in_flight < self._per_connection:
                return client
        client = self._new_client()
        self._in_flight[client] = 0
        return client

    def extra_client(self) -> httpx.AsyncClient:
        """A client like the others on a connection of its own, outside the stream accounting (keepalive
        probes), closed with the pool."""
        client = self._new_client()
        self._extra.append(client)
        return client

    async def aclose(self) -> None:
        for client in [*self._in_flight, *self._extra]:
            await client.aclose()
