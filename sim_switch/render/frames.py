"""A frame in one line, the way Go's ``GODEBUG=http2debug=2`` writes them (``wrote HEADERS flags=END_HEADERS
stream=1 len=45``), with what each type carries after it, as ``nghttp -v`` shows it."""

from __future__ import annotations

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

_NAMES: dict[type[FrameEvent], str] = {
    DataFrame: "DATA",
    HeadersFrame: "HEADERS",
    ContinuationFrame: "CONTINUATION",
    SettingsFrame: "SETTINGS",
    WindowUpdateFrame: "WINDOW_UPDATE",
    PingFrame: "PING",
    GoawayFrame: "GOAWAY",
    RstStreamFrame: "RST_STREAM",
    PriorityFrame: "PRIORITY",
    PushPromiseFrame: "PUSH_PROMISE",
}


def frame_name(frame: FrameEvent) -> str:
    if isinstance(frame, OtherFrame):
        return f"UNKNOWN_0x{frame.frame_type:x}"
    return _NAMES[type(frame)]


def describe_frame(frame: FrameEvent) -> str:
    verb = "wrote" if frame.direction is Direction.SENT else "read"
    flags = f" flags={'|'.join(frame.flags)}" if frame.flags else ""
    carried = _carried(frame)
    return f"{verb} {frame_name(frame)}{flags} stream={frame.stream_id} len={frame.length}" + (
        f" {carried}" if carried else ""
    )


def _carried(frame: FrameEvent) -> str:
    match frame:
        case SettingsFrame(settings=settings):
            return " ".join(f"{name}={value}" for name, value in settings)
        case WindowUpdateFrame(increment=increment):
            return f"incr={increment}"
        case PingFrame(opaque=opaque, rtt_s=rtt_s):
            return f"data={opaque}" + (f" rtt={rtt_s * 1000:.2f}ms" if rtt_s is not None else "")
        case GoawayFrame(last_stream_id=last, error_code=code, debug=debug):
            return f"LastStreamID={last} ErrCode={code}" + (f" Debug={debug!r}" if debug else "")
        case RstStreamFrame(error_code=code):
            return f"ErrCode={code}"
        case PriorityFrame(depends_on=parent, weight=weight, exclusive=exclusive):
            return f"StreamDep={parent} weight={weight} exclusive={exclusive}"
        case PushPromiseFrame(promised_stream_id=promised):
            return f"promised_stream={promised}"
    return ""
