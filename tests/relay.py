"""A TCP relay on loopback that can go silent: it keeps every connection open and stops forwarding, with no FIN
and no RST, like a proxy that hung or a path that black-holes packets. Its kernel still acknowledges what
arrives, so TCP keepalive cannot see it; only an answer that never comes can."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class SilentRelay:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilentRelay]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            for writer in self._writers:
                writer.transport.abort()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def go_silent(self) -> None:
        """From now on nothing is forwarded, either way, on any connection, old or new."""
        self._forwarding.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.append(client_writer)
        with contextlib.suppress(asyncio.CancelledError):  # the relay stopped while this one waited
            await self._forwarding.wait()
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers.append(target_writer)
        for source, sink in ((client_reader, target_writer), (target_reader, client_writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            await self._forwarding.wait()  # silent: hold it, forever
            sink.write(data)
            await sink.drain()
        await self._forwarding.wait()
        sink.close()
