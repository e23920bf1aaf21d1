"""The floor of a Python HTTP/2 client, as the bench's reference: asyncio and h2, nothing else. One connection, one
reader task that feeds h2 and wakes each stream's waiter, ``in_flight`` loops each sending GET /ping?interval=0
and waiting for its answer's end. No tracing, no accounting, no httpx: what any Python HTTP/2 client must pay
per request (h2's encoder and decoder, TLS, the event loop); the switch's cost per ping is held against it.

    .venv/bin/python bench/floor_client.py https://127.0.0.1:8443 certs 5000 100
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events

READ_SIZE = 65_536


@dataclass(frozen=True)
class FloorRate:
    per_s: float  # requests a second
    cpu_us: float  # this process's CPU per request (microseconds)


async def floor_rate(url: str, context: ssl.SSLContext, requests: int, in_flight: int) -> FloorRate:
    """``requests`` pings of 0 s, ``in_flight`` at a time, on one HTTP/2 connection."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 443
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    connection.initiate_connection()
    writer.write(connection.data_to_send())
    ended: dict[int, asyncio.Future[int]] = {}
    settled = asyncio.get_running_loop().create_future()

    async def read() -> None:
        while data := await reader.read(READ_SIZE):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged) and not settled.done():
                    settled.set_result(None)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.pop(event.stream_id).set_result(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            writer.write(connection.data_to_send())

    headers = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", f"{host}:{port}".encode()),
        (b":path", b"/ping?interval=0"),
    ]
    left = requests

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            stream_id = connection.get_next_available_stream_id()
            done = ended[stream_id] = asyncio.get_running_loop().create_future()
            connection.send_headers(stream_id, headers, end_stream=True)
            writer.write(connection.data_to_send())
            await done

    reading = asyncio.create_task(read())
    await settled
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop() for _ in range(in_flight)))
    rate = FloorRate(requests / (time.perf_counter() - started), (time.process_time() - cpu) / requests * 1e6)
    reading.cancel()
    writer.close()
    return rate


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sim_switch.dial.tls import client_ssl_context

    url, certs, count, depth = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(asyncio.run(floor_rate(url, client_ssl_context(certs, "switch-1"), count, depth)))
