"""Where dialout bends Quart: each request runs in the task the server gave it, not in two more of Quart's own.

Quart 0.22 (``quart.asgi.ASGIHTTPConnection.__call__``) starts two tasks per request, one for the handler and one
that reads the body and waits for the client to go, then waits on both with ``asyncio.wait`` and gathers the one
left over: three tasks and two waits a ping, in a controller whose loop answers thousands of pings a second and whose
answers are late by every turn they wait. ``OneTaskHTTPConnection`` runs the handler in the server's task and keeps
only the reader: when the client goes (``http.disconnect``), it cancels the handler, as Quart's wait did, and the
request ends quietly; a cancellation from anyone else (the server's shutdown) goes on up.

Set as the app's ``asgi_http_class`` (``controller/http/app.py``). ``tests/test_seams.py`` pins the Quart internals
it calls (``_create_request_from_scope``, ``handle_messages``, ``handle_request``).

And a request's body waits on two ``asyncio.Event``s that a ping's handler never waits on (it reads no body):
``LightRequest`` (the app's ``request_class``) gives its body ``dialout.lazy_event.LazyEvent``s, whose deques of waiters
are made at the first wait, not at every request (~1.5 KiB a request in flight).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request
from quart.wrappers.request import Body

from dialout.lazy_event import LazyEvent


class OneTaskHTTPConnection(ASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        handler = asyncio.current_task()
        assert handler is not None  # an ASGI app is always called in a task
        reader = asyncio.ensure_future(self._read_until_gone(request, receive, handler))
        try:
            await self.handle_request(request, send)
        except asyncio.CancelledError:
            # Ours, because the client went: the request is over, as Quart's own wait would have ended it.
            if not (reader.done() and not reader.cancelled() and handler.uncancel() == 0):
                raise
        finally:
            reader.cancel()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]  # receive() failed: as Quart raises it

    async def _read_until_gone(
        self, request: Request, receive: ASGIReceiveCallable, handler: asyncio.Task[Any]
    ) -> None:
        await self.handle_messages(request, receive)  # returns at http.disconnect
        handler.cancel()


class LightBody(Body):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._complete = LazyEvent()
        self._has_data = LazyEvent()


class LightRequest(Request):
    body_class = LightBody
