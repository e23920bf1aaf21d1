"""Frames as they crossed the wire: the byte stream cut at frame boundaries, and each frame as trace data.

The reader hands h2 one whole frame at a time (``FrameSplitter``) rather than whatever a read returned: after a
GOAWAY, h2 closes its state machine and would refuse the DATA that follows in the same read for a stream the
GOAWAY let finish (``connection.py`` says more). The same boundaries give ``--trace frames`` the frames exactly as
they were read, parsed by hyperframe (the frame layer h2 itself stands on).
"""

from __future__ import annotations

from typing import TypedDict

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe import frame as hf

from sim_switch.model.frames import (
    ContinuationFrame,
    DataFrame,
    Direction,
    FrameEvent,
    GoawayFrame,
    HeadersFrame,
    OtherFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

HEADER_SIZE = 9
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class FrameSplitter:
    """Bytes in, whole frames out (each with its 9-byte header), the rest kept for the next read. ``preface``:
    bytes that open the stream before the first frame (the client's connection preface) and are not a frame."""

    def __init__(self, preface: bytes = b"") -> None:
        self._buffer = bytearray()
        self._preface_left = len(preface)

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        offset = 0
        if self._preface_left:
            offset = min(self._preface_left, len(buffer))
            self._preface_left -= offset
        frames = []
        while len(buffer) - offset >= HEADER_SIZE:
            end = offset + HEADER_SIZE + int.from_bytes(buffer[offset : offset + 3], "big")
            if end > len(buffer):
                break
            frames.append(bytes(buffer[offset:end]))
            offset = end
        del buffer[:offset]
        return frames


GOAWAY_TYPE = 0x7


def runs(frames: list[bytes]) -> list[bytes]:
    """Whole frames joined into runs for h2 to read at once, each GOAWAY ending its run: h2 closes its state on
    reading one, and the frames after it must wait until the connection has reopened it (``H2Connection``)."""
    joined: list[bytes] = []
    start = 0
    for index, raw in enumerate(frames):
        if raw[3] == GOAWAY_TYPE:
            joined.append(b"".join(frames[start : index + 1]))
            start = index + 1
    if start < len(frames):
        joined.append(b"".join(frames[start:]))
    return joined


def parse(raw: bytes) -> hf.Frame | None:
    """One whole frame as hyperframe reads it; None if it cannot (h2 will say why, as a protocol error)."""
    try:
        frame, length = hf.Frame.parse_frame_header(memoryview(raw)[:HEADER_SIZE])
        frame.parse_body(memoryview(raw)[HEADER_SIZE : HEADER_SIZE + length])
    except Exception:
        return None
    return frame


class _Common(TypedDict):
    at_s: float
    connection: int | None
    direction: Direction
    stream_id: int
    length: int
    flags: tuple[str, ...]


def frame_event(
    frame: hf.Frame, direction: Direction, at_s: float, connection: int | None, rtt_s: float | None = None
) -> FrameEvent:
    """``frame`` as the trace's data. ``rtt_s``: for the ACK of our own PING, how long it took."""
    common = _Common(
        at_s=at_s,
        connection=connection,
        direction=direction,
        stream_id=frame.stream_id,
        length=getattr(frame, "body_len", 0),
        flags=tuple(sorted(frame.flags)),
    )
    return _stream_frame(frame, common) or _connection_frame(frame, common, rtt_s)


def _stream_frame(frame: hf.Frame, common: _Common) -> FrameEvent | None:
    flags = common["flags"]
    match frame:
        case hf.DataFrame():
            return DataFrame(**common, end_stream="END_STREAM" in flags)
        case hf.HeadersFrame():
            return HeadersFrame(**common, end_stream="END_STREAM" in flags, end_headers="END_HEADERS" in flags)
        case hf.ContinuationFrame():
            return ContinuationFrame(**common, end_headers="END_HEADERS" in flags)
        case hf.RstStreamFrame():
            return RstStreamFrame(**common, error_code=error_name(frame.error_code))
        case hf.PriorityFrame():
            return PriorityFrame(
                **common, depends_on=frame.depends_on, weight=frame.stream_weight, exclusive=frame.exclusive
            )
        case hf.PushPromiseFrame():
            return PushPromiseFrame(**common, promised_stream_id=frame.promised_stream_id)
    return None


def _connection_frame(frame: hf.Frame, common: _Common, rtt_s: float | None) -> FrameEvent:
    ack = "ACK" in common["flags"]
    match frame:
        case hf.SettingsFrame():
            values = tuple((setting_name(code), value) for code, value in frame.settings.items())
            return SettingsFrame(**common, ack=ack, settings=values)
        case hf.WindowUpdateFrame():
            return WindowUpdateFrame(**common, increment=frame.window_increment)
        case hf.PingFrame():
            return PingFrame(**common, ack=ack, opaque=frame.opaque_data.hex(), rtt_s=rtt_s)
        case hf.GoAwayFrame():
            debug = frame.additional_data.decode("utf-8", "replace")
            return GoawayFrame(
                **common, last_stream_id=frame.last_stream_id, error_code=error_name(frame.error_code), debug=debug
            )
    return OtherFrame(**common, frame_type=getattr(frame, "type", -1))


def error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


def setting_name(code: int) -> str:
    try:
        return SettingCodes(code).name
    except ValueError:
        return f"0x{code:x}"
