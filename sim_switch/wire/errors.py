"""What can go wrong on one of the switch's HTTP/2 streams, as data: what the controller did (a reset, a GOAWAY)
and whether it can have processed the request, for the switch's classification (``sim_switch/dial/failures.py``).
They are httpx's exceptions, so that a caller of the transport sees httpx's kinds."""

from __future__ import annotations

import httpx
from h2.errors import ErrorCodes

from sim_switch.wire.frames import error_name


class StreamReset(httpx.RemoteProtocolError):
    """The controller reset the stream. REFUSED_STREAM: it never processed it (RFC 9113 section 8.7)."""

    def __init__(self, stream_id: int, code: int) -> None:
        super().__init__(f"RST_STREAM {error_name(code)} on stream {stream_id}")
        self.stream_id, self.code = stream_id, code

    @property
    def processed(self) -> bool:
        return self.code != ErrorCodes.REFUSED_STREAM


class GoneAway(httpx.RemoteProtocolError):
    """The controller sent GOAWAY. A stream above ``last_stream_id`` was never processed (section 6.8); one at or
    below it was cut off only if the connection then closed before its answer (``processed``)."""

    def __init__(self, stream_id: int, code: int, last_stream_id: int, debug: bytes) -> None:
        super().__init__(
            f"GOAWAY {error_name(code)}, last stream {last_stream_id}"
            + (f" ({debug.decode(errors='replace')})" if debug else "")
        )
        self.stream_id, self.code, self.last_stream_id, self.debug = stream_id, code, last_stream_id, debug

    @property
    def processed(self) -> bool:
        return self.stream_id <= self.last_stream_id

    @property
    def code_name(self) -> str:
        return error_name(self.code)


class ConnectionLost(httpx.ReadError):
    """The connection ended (the controller closed it, or the socket failed) with this stream unanswered."""


class NotSent(Exception):
    """The connection became unusable before this request's first frame left: the pool tries another."""
