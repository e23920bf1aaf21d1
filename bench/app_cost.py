"""What each request costs in the ASGI app alone, without the network: bench/bare_app.py's app, the smallest Quart
app that answers /ping the same way, and the controller's own app, each driven in this process with the same
requests, taking turns, and timed in CPU time. The difference between the first two is Quart's per-request work;
between the last two, ours.

    .venv/bin/python bench/app_cost.py [--requests 5000] [--rounds 5]

Hypercorn, TLS and h2 are left out on purpose: they cost the same for every app, and h2load's figures against a
real server (bench/run.py) are too noisy on this machine to see a 5% change in the app.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypercorn.typing import ASGIFramework, ASGIReceiveEvent, ASGISendEvent, ConnectionState, HTTPScope
from quart import Quart, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bare_app import MAX_INTERVAL_S
from bare_app import app as bare_app

from controller.accounts.connections import ConnectionRegistry
from controller.http.app import create_app
from controller.http.interval import parse_interval
from controller.http.quart_seam import MESSAGES_EXTENSION
from dialout.config import ControllerConfig

IN_FLIGHT = 100  # as h2load -m 100


def smallest_quart_app() -> Quart:
    app = Quart(__name__)

    @app.get("/ping")
    async def ping() -> tuple[Any, int]:
        interval_s = parse_interval(request.args.getlist("interval"), MAX_INTERVAL_S)
        await asyncio.sleep(interval_s)
        return jsonify({"interval_s": interval_s, "http_version": f"HTTP/{request.http_version}"}), 200

    return app


def ping_scope() -> HTTPScope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "2",
        "method": "GET",
        "scheme": "https",
        "path": "/ping",
        "raw_path": b"/ping",
        "query_string": b"interval=0",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"app_cost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
        "extensions": {},
        "state": ConnectionState({}),
    }


async def one_request(app: ASGIFramework) -> None:
    """One ping, its messages offered as the controller's Hypercorn offers them: to ``receive``, or to a callback
    given through ``MESSAGES_EXTENSION`` (controller/http/quart_seam.py), which only the controller's app takes."""
    status = 0
    request_sent = False
    disconnected = asyncio.Event()
    listening: list[Callable[[ASGIReceiveEvent], None]] = []

    async def receive() -> ASGIReceiveEvent:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    def listen(listener: Callable[[ASGIReceiveEvent], None] | None) -> None:
        nonlocal request_sent
        listening[:] = [listener] if listener is not None else []
        if listener is not None and not request_sent:
            request_sent = True
            listener({"type": "http.request", "body": b"", "more_body": False})

    async def send(message: ASGISendEvent) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            disconnected.set()
            for listener in listening:
                listener({"type": "http.disconnect"})

    scope = ping_scope()
    scope["extensions"] = {MESSAGES_EXTENSION: listen}  # type: ignore[dict-item]  # (Hypercorn types them as dicts)
    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"/ping answered {status}")


async def cpu_us_per_request(app: ASGIFramework, requests: int) -> float:
    started = time.process_time()
    for _ in range(requests // IN_FLIGHT):
        await asyncio.gather(*(one_request(app) for _ in range(IN_FLIGHT)))
    return (time.process_time() - started) / requests * 1e6


async def measure(apps: dict[str, ASGIFramework], requests: int, rounds: int) -> dict[str, float]:
    for app in apps.values():
        await cpu_us_per_request(app, IN_FLIGHT)  # warm up: imports, first-request setup
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():  # taking turns: a noisy moment hits every app alike
            samples[name].append(await cpu_us_per_request(app, requests))
    return {name: statistics.median(values) for name, values in samples.items()}


def apps(certs_dir: Path) -> dict[str, ASGIFramework]:
    """The three apps, most work first. ``certs_dir`` is never read: bench mode, no client certificate in the
    scope, as under h2load."""
    cfg = ControllerConfig(certs_dir=certs_dir, client_certs_optional=True)
    return {
        "controller app": create_app(cfg, ConnectionRegistry()),
        "smallest Quart app": smallest_quart_app(),
        "bare ASGI": bare_app,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        medians = asyncio.run(measure(apps(Path(tmp)), args.requests, args.rounds))
    reference = medians["bare ASGI"]
    print(f"CPU per request, median of {args.rounds} rounds of {args.requests} ({IN_FLIGHT} in flight)")
    for name, us in medians.items():
        print(f"{name:<20} {us:8.1f} us  {us / reference:5.2f}x bare ASGI")
    return 0


if __name__ == "__main__":
    sys.exit(main())
