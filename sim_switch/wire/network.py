"""The switch's sockets on asyncio's own streams, shaped as httpcore's ``AsyncNetworkStream`` (so that httpcore's
HTTP/1.1 connection can run on one whose ALPN chose it, and the trace reads every one alike).

httpcore's own backend wraps every read and write in anyio's ``fail_after`` and exception mapping: a cancel scope
per call, a sixth of the switch's CPU per ping when measured (bench/RESULTS.md, issue 19). A write here hands the
bytes to the kernel in its first, synchronous step; a read returns what the kernel had.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

READ_BUFFER = 1 << 20  # the StreamReader's limit: a read never waits on it
# A TLS close waits for the peer's close_notify; asyncio's own bound is 30 s (ssl_shutdown_timeout).
CLOSE_WAIT_S = 1.0


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection, TCP or TLS over it (``start_tls`` returns a new object on the same socket, so that the
    TCP stream and the TLS one are two names for it, as httpcore's are)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._transport = writer.transport  # TCP's, or (after start_tls) TLS's over it
        self._tls = writer.get_extra_info("ssl_object") is not None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(f"no bytes for {timeout:g} s") from exc
        except (OSError, ssl.SSLError, RuntimeError) as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    def write_now(self, buffer: bytes) -> None:
        """Hand ``buffer`` to the transport at once (the kernel takes it in this call unless its buffer is full,
        when asyncio keeps the rest): the HTTP/2 connection's one write a loop turn."""
        try:
            self._writer.write(buffer)
        except (OSError, ssl.SSLError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def drain(self) -> None:
        """Until the transport's buffer is below its high-water mark (at once, unless the peer reads nothing)."""
        try:
            await self._writer.drain()
        except (OSError, ssl.SSLError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()  # returns at once unless the kernel's buffer is full
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"the peer took no bytes for {timeout:g} s") from exc
        except (OSError, ssl.SSLError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        """TLS: close_notify, then close, waiting at most ``CLOSE_WAIT_S`` for a peer that may be gone. TCP (the
        stream under a TLS one): close the socket at once, without a word to the peer, and every read above it
        fails, as closing httpcore's TCP stream did (the switch's way to give up on a silent controller)."""
        if not self._tls:
            self._transport.abort()
            return
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):  # broken, or silent: closed all the same
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self._writer.wait_closed()
        self._transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncioStream:
        try:
            await self._writer.start_tls(ssl_context, server_hostname=server_hostname, ssl_handshake_timeout=timeout)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake not done in {timeout:g} s") from exc
        except (OSError, ssl.SSLError, EOFError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return AsyncioStream(self._reader, self._writer)

    def get_extra_info(self, info: str) -> Any:  # noqa: ANN401 - httpcore's signature
        match info:
            case "ssl_object":
                return self._writer.get_extra_info("ssl_object")
            case "client_addr":
                return self._writer.get_extra_info("sockname")
            case "server_addr":
                return self._writer.get_extra_info("peername")
            case "socket":
                return self._writer.get_extra_info("socket")
            case "is_readable":  # httpcore asks of an idle HTTP/1.1 connection: readable there means closed
                sock = self._writer.get_extra_info("socket")
                return sock is not None and bool(select.select([sock], [], [], 0)[0])
        return None


async def connect_tcp(
    host: str,
    port: int,
    timeout: float | None,
    socket_options: Iterable[tuple[int, int, int]] = (),
    source_address: str | None = None,
) -> AsyncioStream:
    """``source_address``: the local address to dial from (None: the kernel's choice)."""
    local = (source_address, 0) if source_address else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_BUFFER, local_addr=local)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"TCP connect to {host}:{port} not done in {timeout:g} s") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for level, option, value in socket_options:
        sock.setsockopt(level, option, value)
    return AsyncioStream(reader, writer)
