"""The framework ceiling: /ping as a bare ASGI app (no Quart, no connection adapter) on the controller's own
Hypercorn settings and TLS, client certificates optional, loopback only. bench/run.py divides the controller's
h2load rate by this one's.

    python bench/bare_app.py --certs DIR [--port 0]      (prints "listening on https://127.0.0.1:PORT" on stderr)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import parse_qs

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Sockets
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from hypercorn.utils import wrap_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.accounts.connections import ConnectionRegistry
from controller.http.interval import IntervalError, parse_interval
from controller.server.serve import hypercorn_config, server_ssl_context
from dialout.config import ControllerConfig

MAX_INTERVAL_S = 60.0


async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    status, body = 404, dict[str, object](error="not found")
    if scope["path"] == "/ping":
        values = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True).get("interval", [])
        try:
            interval_s = parse_interval(values, MAX_INTERVAL_S)
            await asyncio.sleep(interval_s)
            status, body = 200, {"interval_s": interval_s, "http_version": f"HTTP/{scope['http_version']}"}
        except IntervalError as exc:
            status, body = 400, {"error": str(exc)}
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def serve(certs: Path, port: int) -> None:
    sock = socket.create_server(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the controller does (controller/server/serve.py)
    print(f"listening on https://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    cfg = ControllerConfig(certs_dir=certs, client_certs_optional=True)
    config = hypercorn_config(cfg, server_ssl_context(cfg), ConnectionRegistry())
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    sockets = Sockets(secure_sockets=[sock], insecure_sockets=[], quic_sockets=[])
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"), config, sockets=sockets, shutdown_trigger=stop.wait
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.certs, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
