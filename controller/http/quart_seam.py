"""Where dialout bends Quart: each request runs in the task the server gave it, not in two more of Quart's own.

Quart 0.22 (``quart.asgi.ASGIHTTPConnection.__call__``) starts two tasks per request, one for the handler and one
that reads the body and waits for the client to go, then waits on both with ``asyncio.wait`` and gathers the one
left over: three tasks and two waits a ping, in a controller whose loop answers thousands of pings a second and whose
answers are late by every turn they wait. ``OneTaskHTTPConnection`` runs the handler in the server's task and keeps
only the reader: when the client goes (``http.disconnect``), it cancels the handler, as Quart's wait did, and the
request ends quietly; a cancellation from anyone else (the server's shutdown) goes on up.

Where the server can hand a request's messages to a callback as they come (``MESSAGES_EXTENSION`` in the scope:
the controller's own Hypercorn, ``controller/server/hypercorn_seam.py``), not even the reader is a task: the
callback does with each message what Quart's ``handle_messages`` does, and cancels the handler at
``http.disconnect``. One task a request rather than two: the app's CPU a ping 0.85x -> 0.79x the smallest Quart
app's in the same runs (bench/app_cost.py, three each: 150 -> 143 us), and 93 objects a ping in flight, not 99.

``tests/test_seams.py`` pins the Quart internals it calls (``_create_request_from_scope``, ``handle_messages``,
``handle_request``), and that the callback takes a body as ``handle_messages`` does.

And a request's body waits on two ``asyncio.Event``s that a ping's handler never waits on (it reads no body):
``LightRequest`` (the app's ``request_class``) gives its body ``dialout.lazy_event.LazyEvent``s, whose deques of
waiters are made at the first wait, not at every request (~1.5 KiB a request in flight).

And werkzeug's headers raise (and catch) an exception for each header asked for that is absent, and Quart asks
for two at every request: ``LightRequest.content_length`` reads them without.

And werkzeug, Quart's router, matches a request's path with a recursive closure: a reference cycle of eight objects
every request, which only the garbage collector frees. ``RememberingMatcher`` answers a path it has matched before
from memory. ``SeamQuart`` is Quart with all three: the app that answers pings (``controller/http/app.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, cast

from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, HTTPRequestEvent
from quart import Quart
from quart.asgi import ASGIHTTPConnection
from quart.routing import QuartMap
from quart.wrappers import Request
from quart.wrappers.request import Body
from werkzeug.routing import Rule
from werkzeug.routing.matcher import StateMachineMatcher
from werkzeug.sansio.utils import get_content_length
from werkzeug.utils import cached_property

from dialout.lazy_event import LazyEvent

# A server that hands a request's messages to a callback says so in the scope's extensions: a callable that takes
# the callback, and calls it with each message waiting and each to come, in the order they come; given None, it
# lets go of the callback (which holds the request: a cycle through the scope until then).
MESSAGES_EXTENSION = "dialout.messages"
Listen = Callable[[Callable[[ASGIReceiveEvent], None] | None], None]


class OneTaskHTTPConnection(ASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        handler = asyncio.current_task()
        assert handler is not None  # an ASGI app is always called in a task
        extensions: Mapping[str, Any] = self.scope.get("extensions") or {}
        listen = cast(Listen | None, extensions.get(MESSAGES_EXTENSION))
        if listen is not None:
            await self._handle_listening(request, send, listen, handler)
            return
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

    async def _handle_listening(
        self, request: Request, send: ASGISendCallable, listen: Listen, handler: asyncio.Task[Any]
    ) -> None:
        """The request, its messages taken by a callback the server calls as they come (``_Messages``)."""
        messages = _Messages(request, handler)
        listen(messages.take)
        try:
            await self.handle_request(request, send)
        except asyncio.CancelledError:
            # Ours, because the client went: the request is over, as Quart's own wait would have ended it.
            if not (messages.gone and handler.uncancel() == 0):
                raise
        finally:
            messages.handling = False
            listen(None)


class _Messages:
    """A request's messages as the server hands them over: its body into the request, and ``http.disconnect``
    (the client went) a cancellation of its handler, if that is still at work. One object a request in flight,
    not a task waiting on ``receive``."""

    __slots__ = ("gone", "handler", "handling", "request")

    def __init__(self, request: Request, handler: asyncio.Task[Any]) -> None:
        self.request, self.handler = request, handler
        self.handling = True
        self.gone = False  # the client went while the request was being handled: its handler was cancelled

    def take(self, message: ASGIReceiveEvent) -> None:
        if message["type"] == "http.request":
            take_body(self.request, message)
        elif message["type"] == "http.disconnect":
            # Told from within a send, the answer's own last one among them (Hypercorn closes the stream as it
            # sends the end of the body): the handler is cancelled in the next turn if it is at work still, as
            # Quart's reader task would have done, not in the middle of its own send.
            asyncio.get_running_loop().call_soon(self._went)

    def _went(self) -> None:
        if self.handling and not self.gone:
            self.gone = True
            self.handler.cancel()


def take_body(request: Request, message: HTTPRequestEvent) -> None:
    """An ``http.request`` message into the request's body, as Quart's ``handle_messages`` takes each one."""
    request.body.append(message.get("body", b""))
    if not message.get("more_body", False):
        request.body.set_complete()


class LightBody(Body):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._complete = LazyEvent()
        self._has_data = LazyEvent()


class LightRequest(Request):
    body_class = LightBody

    @cached_property
    def content_length(self) -> int | None:
        """werkzeug's (``sansio.request.Request.content_length``), from the same two headers, read with ``getlist``:
        werkzeug's ``Headers.get`` raises and catches a ``BadRequestKeyError`` (an ``HTTPException``, costly to
        make) for a header that is absent, and a ping (a GET) has neither: 2% of the controller's serving CPU in a
        profile of 1,000 pings of 1 s, spilt over 10 connections."""
        lengths = self.headers.getlist("Content-Length")
        encodings = self.headers.getlist("Transfer-Encoding")
        return get_content_length(lengths[0] if lengths else None, encodings[0] if encodings else None)


# The paths a controller's router remembers: its routes are a dozen, a few of them with an argument; a peer asking
# for ever new ones costs a forgetting now and then, as it did before (each match as werkzeug makes it).
REMEMBERED_PATHS = 1_024
Matched = tuple[Rule, MutableMapping[str, Any]]


class RememberingMatcher(StateMachineMatcher):
    """werkzeug's matcher, which answers a (host, path, method) it has matched before from memory: werkzeug's
    ``match`` is a recursive closure, made anew at every call, and that references itself. A failed match (404,
    405, a redirect) is not remembered; a rule added or a remap forgets everything."""

    def __init__(self, merge_slashes: bool) -> None:
        super().__init__(merge_slashes)
        self._remembered: dict[tuple[str, str, str, bool], Matched] = {}

    def add(self, rule: Rule) -> None:
        self._remembered.clear()
        super().add(rule)

    def update(self) -> None:
        self._remembered.clear()
        super().update()

    def match(self, domain: str, path: str, method: str, websocket: bool) -> Matched:
        key = (domain, path, method, websocket)
        found = self._remembered.get(key)
        if found is None:
            found = super().match(domain, path, method, websocket)
            if len(self._remembered) >= REMEMBERED_PATHS:
                self._remembered.clear()
            self._remembered[key] = found
        rule, values = found
        return rule, dict(values)  # the caller's own: Quart's view_args may be changed by a hook


class RememberingMap(QuartMap):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - werkzeug's Map's own signature
        super().__init__(*args, **kwargs)
        assert not self._rules, "the matcher is replaced before any rule is added"
        self._matcher = RememberingMatcher(self._matcher.merge_slashes)


class SeamQuart(Quart):
    """Quart, each request in one task (``OneTaskHTTPConnection``), its body's events lazy (``LightRequest``), its
    routes matched from memory (``RememberingMap``)."""

    asgi_http_class = OneTaskHTTPConnection
    request_class = LightRequest
    url_map_class = RememberingMap
