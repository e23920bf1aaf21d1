"""Every HTTP/2 frame either way, as ``--trace frames`` shows it: one frozen class per frame type, with the fields
``nghttp -v`` and Go's ``GODEBUG=http2debug=2`` print. ``sim_switch/wire/frames.py`` makes them from the bytes as
they were written or read (not from what h2 makes of them), and ``sim_switch/render/trace.py`` says them in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from sim_switch.model.events import EventKind, TraceEvent


class Direction(StrEnum):
    SENT = "sent"
    RECEIVED = "received"


@dataclass(frozen=True, kw_only=True)
class FrameEvent(TraceEvent):
    """One frame: which way, on which stream (0: the connection), its payload's length and its flags by name."""

    kind: ClassVar[EventKind] = EventKind.FRAME
    direction: Direction
    stream_id: int
    length: int
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DataFrame(FrameEvent):
    end_stream: bool


@dataclass(frozen=True, kw_only=True)
class HeadersFrame(FrameEvent):
    end_stream: bool
    end_headers: bool


@dataclass(frozen=True, kw_only=True)
class ContinuationFrame(FrameEvent):
    end_headers: bool


@dataclass(frozen=True, kw_only=True)
class SettingsFrame(FrameEvent):
    ack: bool
    settings: tuple[tuple[str, int], ...]  # each as (name, value), in the order sent


@dataclass(frozen=True, kw_only=True)
class WindowUpdateFrame(FrameEvent):
    increment: int


@dataclass(frozen=True, kw_only=True)
class PingFrame(FrameEvent):
    ack: bool
    opaque: str  # the 8 bytes, in hex
    rtt_s: float | None = None  # an ACK of our own PING: since we sent it


@dataclass(frozen=True, kw_only=True)
class GoawayFrame(FrameEvent):
    last_stream_id: int
    error_code: str
    debug: str  # its additional debug data, as text


@dataclass(frozen=True, kw_only=True)
class RstStreamFrame(FrameEvent):
    error_code: str


@dataclass(frozen=True, kw_only=True)
class PriorityFrame(FrameEvent):
    depends_on: int
    weight: int
    exclusive: bool


@dataclass(frozen=True, kw_only=True)
class PushPromiseFrame(FrameEvent):
    promised_stream_id: int


@dataclass(frozen=True, kw_only=True)
class OtherFrame(FrameEvent):
    """A frame type this switch does not know (RFC 9113 section 5.5 says: ignore it)."""

    frame_type: int
