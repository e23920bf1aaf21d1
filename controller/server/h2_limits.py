"""Hypercorn's HTTP/2 protocol, held to the abuse limits that nginx 1.25.3 and Go's net/http (the fixes for
CVE-2023-44487, rapid reset, and CVE-2023-45288, the CONTINUATION flood) hold their peers to (issue 20).

What one peer could do to every other switch on this controller before, measured on loopback:

- **Rapid reset**: HEADERS then RST_STREAM, over and over. Each request cost a stream, an app task and Quart's
  request context before its reset cancelled it (Quart does cancel the handler), and the streams of one read
  were all in Hypercorn's priority tree before its send task could take the reset ones out: at the 1001st the
  connection died with a ``TooManyStreamsError`` traceback. 20 connections of it put the victim's pings 1.2 s
  late at the median. Now a request reset in the same read as its HEADERS is never started, and more than
  ``controller.max_resets_per_s`` resets from one connection (a bucket that holds a second's worth) get GOAWAY
  ENHANCE_YOUR_CALM; so does a read that opens and resets more than a twentieth of that at once, before
  h2 decodes any of it (a client cancels what it opened earlier, never a burst of what it opens now: the bucket's
  first second of such reads cost 20 connections' worth of HPACK decoding, and a victim's pings up to 0.44 s on a
  loaded machine).
- **PING and SETTINGS floods**: each asks for an ACK; 2.98 M PINGs in 20 s kept the controller at 91% CPU. More
  than ``controller.max_control_frames_per_s`` of them from one connection get GOAWAY ENHANCE_YOUR_CALM, and the
  ACKs already queued are dropped rather than sent to a peer that asked for them in bulk.
- **CONTINUATION flood**: a header block that never ends. h2 stops it at 64 frames (up to 1 MiB held per
  connection); here a block larger than ``controller.max_header_bytes`` ends the connection with GOAWAY
  ENHANCE_YOUR_CALM as soon as it is, the size every request is held to anyway.

Each connection so closed is logged once, counted in ``/metrics`` (``dialout_connections_calmed_total``) and named
in its ``/connections`` record (``closed_for``). The class stands on ``h2_actions.ActionableH2Protocol`` (what
a trial does to a connection), and ``hypercorn_seam.install`` puts it in Hypercorn's place; ``tests/test_seams.py``
pins the internals used here.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

import h2.events
import h2.frame_buffer
from h2.errors import ErrorCodes
from h2.exceptions import DenialOfServiceError
from hypercorn.events import Closed, RawData
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame, PushPromiseFrame

from controller.accounts.connections import ControllerConnection
from controller.server.asgi_tls import current_connection
from controller.server.h2_actions import ActionableH2Protocol
from controller.server.hypercorn_seam import dialout_config
from dialout.text import printable

HEADER_SIZE = 9
HEADERS, RST_STREAM, SETTINGS, PING = 0x1, 0x3, 0x4, 0x6  # frame types (RFC 9113 section 6)
# Of max_resets_per_s, the streams one read may open and reset (HEADERS and RST_STREAM for the same stream id)
# before the connection is calmed with none of the read decoded (10 at the default 200): rapid reset's own shape;
# a switch that cancels a ping does so in a later read than the one that opened it.
RESET_ON_ARRIVAL_SHARE = 20
CLIENT_PREFACE_SIZE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

logger = logging.getLogger(__name__)


class Calmed(enum.StrEnum):
    """Why a connection got GOAWAY ENHANCE_YOUR_CALM: the label of ``dialout_connections_calmed_total``."""

    RESETS = "resets"
    CONTROL_FRAMES = "control_frames"
    HEADER_BLOCK = "header_block"


@dataclass(frozen=True)
class PeerLimits:
    """What one HTTP/2 connection may send (config.yaml's ``controller`` keys of the same names)."""

    max_resets_per_s: int
    max_control_frames_per_s: int
    max_header_bytes: int


class _Bucket:
    """A token bucket that holds one second's worth: a burst up to the rate, then the rate."""

    def __init__(self, per_s: int) -> None:
        self._per_s = per_s
        self._tokens = float(per_s)
        self._at = time.monotonic()

    def spend(self, count: int) -> bool:
        """Take ``count`` tokens; False once the bucket is overdrawn."""
        if not count:
            return True
        now = time.monotonic()
        self._tokens = min(self._per_s, self._tokens + (now - self._at) * self._per_s) - count
        self._at = now
        return self._tokens >= 0


class _FrameCounter:
    """Counts the frames of some types in bytes as they arrive, by their 9-byte headers alone (RFC 9113 section
    4.1: length, type, ...): a read of 4,000 PINGs is judged before h2 decodes one of them."""

    def __init__(self, types: frozenset[int], preface: int) -> None:
        self._types = types
        self._skip = preface  # bytes to pass over: the client's preface, then the rest of a frame's body
        self._partial = b""  # a frame header cut off by the end of a read
        self.reset_on_arrival = 0  # streams the last read both opened (HEADERS) and reset (RST_STREAM)

    def count(self, data: bytes) -> dict[int, int]:
        """How many frames of each type begin in ``data``."""
        found = dict.fromkeys(self._types, 0)
        self.reset_on_arrival = 0
        if self._partial:
            data, self._partial = self._partial + data, b""
        if self._skip >= len(data):
            self._skip -= len(data)
            return found
        offset, end, types = self._skip, len(data), self._types
        opened: set[int] = set()
        reset: set[int] = set()
        while offset + HEADER_SIZE <= end:
            kind = data[offset + 3]
            if kind in types:
                found[kind] += 1
            if kind in (HEADERS, RST_STREAM):
                stream_id = int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFF_FFFF
                (opened if kind == HEADERS else reset).add(stream_id)
            offset += HEADER_SIZE + int.from_bytes(data[offset : offset + 3], "big")
        self.reset_on_arrival = len(opened & reset)
        self._skip = max(0, offset - end)
        if offset < end:
            self._partial = data[offset:]
        return found


class _BoundedHeaderBlocks(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, refusing a header block (HEADERS and its CONTINUATIONs) larger than ``max_bytes``: h2
    queues GOAWAY with the error's code (ENHANCE_YOUR_CALM) and raises it on."""

    def __init__(self, max_bytes: int, max_frame_size: int) -> None:
        super().__init__(server=True)
        self.max_frame_size = max_frame_size
        self._max_bytes = max_bytes
        self._block_bytes = 0

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        in_block = isinstance(f, ContinuationFrame) and self._headers_buffer
        opens = isinstance(f, HeadersFrame | PushPromiseFrame) and "END_HEADERS" not in f.flags
        if isinstance(f, HeadersFrame | PushPromiseFrame | ContinuationFrame) and (in_block or opens):
            self._block_bytes = self._block_bytes + len(f.data) if in_block else len(f.data)
            if self._block_bytes > self._max_bytes:
                raise DenialOfServiceError(f"a header block over {self._max_bytes} bytes")
        return super()._update_header_buffer(f)


class GuardedH2Protocol(ActionableH2Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - Hypercorn's own signature, passed on
        super().__init__(*args, **kwargs)
        limits = dialout_config(self.config).limits
        self._limits = limits
        self._record: ControllerConnection | None = current_connection()
        self._lingering = False
        if limits is None:  # a listener served without limits (the admin app's)
            return
        self._frames = _FrameCounter(frozenset({RST_STREAM, SETTINGS, PING}), CLIENT_PREFACE_SIZE)
        self._resets = _Bucket(limits.max_resets_per_s)
        self._control_frames = _Bucket(limits.max_control_frames_per_s)
        buffer = self.connection.incoming_buffer
        self.connection.incoming_buffer = _BoundedHeaderBlocks(limits.max_header_bytes, buffer.max_frame_size)

    async def handle(self, event: Any) -> None:  # noqa: ANN401 - Hypercorn's Event
        if not isinstance(event, RawData) or self._limits is None:
            await super().handle(event)
            return
        if self._lingering or self.silent:
            return  # after our GOAWAY, or gone silent for a trial: read, and dropped
        if not await self._within_limits(event.data):
            return
        # Hypercorn's own RawData branch, but for a header block over the limit, which lingers as a flood does
        try:
            events = self.connection.receive_data(event.data)
        except DenialOfServiceError:  # h2 has queued GOAWAY with its code, ENHANCE_YOUR_CALM
            why = f"a header block over max_header_bytes ({self._limits.max_header_bytes})"
            await self._calmed_by_h2(Calmed.HEADER_BLOCK, why)
        except h2.exceptions.ProtocolError as exc:
            self.broke_with = type(exc).__name__  # (a trial tells this from the client closing it itself)
            await self._flush()
            await self.send(Closed())
        else:
            await self._handle_events(events)

    async def _within_limits(self, data: bytes) -> bool:
        """Spend the buckets on the frames in ``data``; calm the connection (False) once one is overdrawn."""
        assert self._limits is not None
        counts = self._frames.count(data)
        if self._frames.reset_on_arrival > self._limits.max_resets_per_s // RESET_ON_ARRIVAL_SHARE:
            arrived = self._frames.reset_on_arrival
            await self._calm(Calmed.RESETS, f"{arrived} streams opened and reset in one read (rapid reset)")
            return False
        if not self._resets.spend(counts[RST_STREAM]):
            limit = self._limits.max_resets_per_s
            await self._calm(Calmed.RESETS, f"over max_resets_per_s ({limit}) streams reset in a second")
            return False
        if not self._control_frames.spend(counts[PING] + counts[SETTINGS]):
            limit = self._limits.max_control_frames_per_s
            await self._calm(Calmed.CONTROL_FRAMES, f"over max_control_frames_per_s ({limit}) PINGs and SETTINGS")
            return False
        return True

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        reset = {e.stream_id for e in events if isinstance(e, h2.events.StreamReset) and e.remote_reset}
        never_started = reset & {e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)}
        if never_started:  # cancelled before we looked: no stream, no task, no request for them
            for event in events:  # what their DATA took of the connection's window is given back all the same
                if isinstance(event, h2.events.DataReceived) and event.stream_id in never_started:
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            events = [e for e in events if not _about(e, never_started)]
        await super()._handle_events(events)

    async def _calm(self, reason: Calmed, why: str) -> None:
        """GOAWAY ENHANCE_YOUR_CALM (RFC 9113 section 7), without the ACKs the flood asked for."""
        self.connection.clear_outbound_data_buffer()
        self.connection.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM, additional_data=why.encode())
        await self._calmed_by_h2(reason, why)

    async def _calmed_by_h2(self, reason: Calmed, why: str) -> None:
        """Send the GOAWAY h2 has queued, then close after a linger in which what the peer still sends is read and
        dropped (``_close_after_linger``)."""
        await self._flush()
        self._lingering = True
        self.task_group.spawn(self._close_after_linger)
        if self._record_calm(reason):
            self._log_calm(why)

    def _record_calm(self, reason: Calmed) -> bool:
        """Count the connection as calmed, once: True the first time."""
        if self._record is not None and self._record.closed_for is not None:
            return False
        if self._record is not None:
            self._record.closed_for = reason.value
        registry = dialout_config(self.config).registry
        if registry is not None:
            registry.calmed[reason.value] += 1
        return True

    def _log_calm(self, why: str) -> None:
        record = self._record
        name = f"conn #{record.id} ({printable(str(record.switch))})" if record else "a connection"
        logger.warning("%s: GOAWAY ENHANCE_YOUR_CALM, closed: %s", name, why)


def _about(event: h2.events.Event, stream_ids: set[int]) -> bool:
    """An event of one of ``stream_ids`` other than its reset (which Hypercorn is still told of)."""
    if isinstance(event, h2.events.StreamReset):
        return False
    return getattr(event, "stream_id", None) in stream_ids
