"""What a ping is on the wire, built once: an ``httpx.Request`` per target, sent through httpx's transport seam.

The switch is written against httpx's API, and a ping goes through its public transport interface
(``AsyncBaseTransport.handle_async_request``) rather than ``AsyncClient.send``, because it uses nothing the client
adds on the way: no cookies (the client parses every answer for them), no redirects, no auth, no event hooks. Its
headers are the scenario's and a User-Agent, not httpx's defaults: without ``Accept-Encoding`` no answer comes
compressed, so the body is read as it crossed the wire, with no decoder. The request for a target is built once
(its URL parsed, its headers made) and copied for each ping, each copy carrying that ping's trace; a scenario that
gives each ping a target of its own (``{n}`` in the path) builds each one.

The whole try is bounded by the ping's own ``request_timeout_s`` (``asyncio.timeout`` around it), so the transport
is given no read timeout of its own: one timer a ping, not one per wait.
"""

from __future__ import annotations

import httpx

from dialout.config import Request
from sim_switch.dial.tracing import PingTrace
from sim_switch.model.results import format_interval

USER_AGENT = "dialout-sim-switch"


class PingRequests:
    """The run's pings as requests: ``url`` for a ping, and ``request`` to send it with its trace."""

    def __init__(self, ping: Request, connect_timeout_s: float) -> None:
        self._ping = ping
        self._headers = dict(ping.headers)
        if not any(name.lower() == "user-agent" for name in self._headers):
            self._headers["User-Agent"] = USER_AGENT
        self._content = None if ping.body is None else ping.body.encode()
        self._timeouts = {"connect": connect_timeout_s, "read": None, "write": None, "pool": None}
        self._reusable = "{n}" not in ping.path
        self._built: dict[str, httpx.Request] = {}

    def url(self, controller_url: str, interval_s: float, number: int) -> str:
        return controller_url.rstrip("/") + self._ping.target(format_interval(interval_s), number)

    def request(self, url: str, trace: PingTrace) -> httpx.Request:
        """The request for ``url``, carrying ``trace`` (the ``trace`` extension httpcore's steps report to)."""
        template = self._built.get(url)
        if template is None:
            template = httpx.Request(self._ping.method, url, headers=self._headers, content=self._content)
            if self._reusable:
                self._built[url] = template
        # Its URL, headers and body shared: the transports only read them. (Not copy.copy: httpx.Request pickles
        # without its body stream, and a copy made that way has none to send over HTTP/1.1.)
        request = httpx.Request.__new__(httpx.Request)
        request.__dict__.update(template.__dict__)
        request.extensions = {"trace": trace, "timeout": self._timeouts}
        return request
