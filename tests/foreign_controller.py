"""Someone else's controller, for the tests: a long-poll endpoint of its own (``POST /api/v1/poll?wait=SECONDS``,
a tenant header and a JSON body required, 202 when the wait is over) and nothing of dialout's: no ``/ping``, no
``/connections``. Served by Hypercorn's own command line: ``python -m hypercorn tests.foreign_controller:app``."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

TENANT = b"shivaram-1"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    if scope["path"] != "/api/v1/poll" or scope["method"] != "POST":
        status, answer = 404, b"not found"
    elif headers.get(b"x-tenant") != TENANT or json.loads(body or b"null") != {"poll": "config"}:
        status, answer = 401, b"who are you?"
    else:
        await asyncio.sleep(float(parse_qs(scope["query_string"].decode())["wait"][0]))
        status, answer = 202, b"nothing new"
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": answer})
