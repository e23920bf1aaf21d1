"""The trace in words: each event of ``sim_switch/model/events.py`` as the one line the switch prints, in the
spirit of Go's httptrace. The only place that says them; the HTML report's tooltips read the same lines."""

from __future__ import annotations

import dataclasses
from typing import Any

from dialout.text import plural, printable
from sim_switch.model.events import (
    AskingController,
    ConnectionReused,
    ConnectRetry,
    ControllerAnswered,
    Diagnosed,
    EndedByController,
    FailedOver,
    FirstByte,
    GaveUpOnSilence,
    GetConnection,
    GoawayRead,
    HeadersWritten,
    KeepaliveAnswered,
    KeepaliveCheck,
    LinkDown,
    LinkGaveUp,
    LinkUp,
    NoDiagnosis,
    OtherStep,
    PingFailed,
    PrefaceSent,
    Probe,
    Probing,
    Reconnecting,
    ResponseClosed,
    SettingsReceived,
    SpillDialled,
    StepFailed,
    TcpConnected,
    TcpConnecting,
    TlsDone,
    TlsStarted,
    TraceEvent,
)
from sim_switch.model.failures import LinkLoss, WentSilent
from sim_switch.model.frames import FrameEvent
from sim_switch.model.results import (
    LATE_ANSWER_S,
    Concurrency,
    ControllerView,
    Disagreement,
    LateAnswer,
    NoRecord,
    StreamCount,
)
from sim_switch.render.failures import sentence
from sim_switch.render.frames import describe_frame

_PROBES = {
    Probe.SCHEME: "every ping failed at its first bytes: dialing once more to see what the server speaks",
    Probe.CLIENT_CERTIFICATE: "every ping lost its connection after the TLS handshake: dialing once more to read why",
}


def render_event(event: TraceEvent) -> str:
    """``   +0.031s  ping 1   conn #1  TLS handshake done: ...``"""
    return trace_line(event.at_s, describe(event), event.ping, event.connection)


def trace_line(at_s: float, text: str, ping: int | None = None, connection: int | None = None) -> str:
    """One line of the trace, as ``render_event`` lays it out (the switch's own when ``ping`` is None)."""
    who = f"ping {ping}" if ping is not None else "switch"
    on = f"conn #{connection}" if connection is not None else ""
    return f"{at_s:+9.3f}s  {who:<8} {on:<8} {text}"


def event_json(event: TraceEvent) -> dict[str, Any]:
    """One trace event as ``--json`` carries it: its type's name, its kind, and its fields as they are."""
    return {"event": type(event).__name__, "kind": str(event.kind), **dataclasses.asdict(event)}


def describe(event: TraceEvent) -> str:  # noqa: C901 - one case per kind of event
    """What happened, in the words of the trace line."""
    match event:
        case FrameEvent():
            return describe_frame(event)
        case GetConnection(method=method, url=url):
            return f"get connection: {method} {url}"
        case TcpConnecting(host=host, port=port):
            return f"TCP connect start: {host}:{port}"
        case TcpConnected(local=local, remote=remote):
            return f"TCP connect done: {local} -> {remote}"
        case TlsStarted(server_name=name):
            return f"TLS handshake start (SNI {name})"
        case TlsDone(version=version, alpn=alpn, cipher=cipher, controller_subject=subject):
            return f"TLS handshake done: {version}, ALPN {alpn or 'none'}, {cipher}, controller {subject}"
        case SettingsReceived(settings=settings):
            return "controller SETTINGS: " + (" ".join(f"{name}={value}" for name, value in settings) or "none")
        case GoawayRead(code=code, last_stream_id=last, debug=debug):
            said = f": {printable(debug)!r}" if debug else ""
            return f"controller GOAWAY {code}, last stream {last}{said}"
        case SpillDialled(waiting=waiting, limit=limit, dials=dials):
            return (
                f"spill: {plural(waiting, 'ping')} waiting, every connection at the controller's limit of {limit} "
                f"streams: dialling {plural(dials, 'more connection')} at once"
            )
        case PrefaceSent():
            return "HTTP/2 connection preface and SETTINGS sent"
        case ConnectionReused():
            return "connection reused (got an open connection from the pool)"
        case HeadersWritten(stream_id=stream_id):
            return "request headers written" + (f" (stream {stream_id})" if stream_id else "")
        case FirstByte(status=status, http_version=version, stream_id=stream_id):
            on = f"connection #{event.connection}" if event.connection else "an unknown connection"
            return f"first response byte: {status} {version} on {on}" + (f" stream {stream_id}" if stream_id else "")
        case ResponseClosed():
            return "response closed"
        case ConnectRetry():
            return "connect retry"
        case StepFailed(step=step, failure=failure):
            return f"{step.replace('_', ' ')} failed: {sentence(failure) if failure else 'unknown error'}"
        case OtherStep(step=step):
            return step.replace("_", " ").replace(".", " ")
        case PingFailed(failure=failure):
            return f"failed: {sentence(failure)}"
        case Probing(probe=probe):
            return _PROBES[probe]
        case Diagnosed(failure=failure):
            return f"diagnosis: {sentence(failure)}"
        case AskingController(url=url, about_connections=about):
            if about:
                ids = ",".join(map(str, about))
                return f"asking the controller what it makes of them: GET {url}?connections={ids}"
            return f"asking the controller what it saw: GET {url}"
        case ControllerAnswered(view=view):
            return describe_view(view)
        case NoDiagnosis(answer=answer, failure=failure):
            return f"no diagnosis from the controller: {sentence(failure) if failure else answer}"
        case LinkDown(loss=loss):
            return f"link down: {describe_loss(loss)}"
        case EndedByController(said=said):
            return f"the controller said {printable(said)!r}: the session ends (no more pings, none waiting sent)"
        case LinkGaveUp(down_s=down_s, give_up_after_s=bound_s, loss=loss):
            return (
                f"giving up: the link has been down {down_s:.1f} s (switch.reconnect.give_up_after_s: {bound_s:g} s): "
                f"{describe_loss(loss)}; the session ends"
            )
        case Reconnecting(attempt=attempt, delay_s=delay_s, to_url=to_url, start_again=again, loss=loss):
            where = "" if to_url is None else f" to {to_url} ({'start_with' if again else 'the next controller'})"
            return f"reconnect #{attempt} in {delay_s:.1f} s{where}: {describe_loss(loss)}"
        case LinkUp(url=url, again=again, redials=redials, down_s=down_s):
            at = f" at {url}" if url else ""
            if not again:
                return f"link up{at}"
            return f"link up again{at} after {plural(redials, 'redial')}, {down_s:.1f} s down"
        case FailedOver(from_url=from_url, to_url=to_url, loss=loss):
            return f"failover: {from_url} -> {to_url} ({describe_loss(loss)})"
        case KeepaliveCheck(url=url, quiet_s=quiet_s, http2=http2):
            check = "an HTTP/2 PING" if http2 else "a ping of 0 s"
            return f"keepalive: nothing from {url} for {quiet_s:.1f} s: {check} to check"
        case KeepaliveAnswered(url=url, rtt_s=rtt_s, connection=connection) if rtt_s is not None:
            return f"keepalive: {url} ACKed our PING on conn #{connection} in {rtt_s * 1000:.1f} ms"
        case KeepaliveAnswered(url=url, status=status):
            return f"keepalive: {url} answered ({status})"
        case GaveUpOnSilence(silence=silence, closed=closed):
            return f"keepalive: {describe_loss(silence)}; closed {plural(closed, 'connection')}"
    return type(event).__name__


def describe_loss(loss: LinkLoss) -> str:
    """Why a link went down, in words."""
    if isinstance(loss, WentSilent):
        return (
            f"{loss.url} went silent: nothing for {loss.quiet_s:.1f} s, no answer to a keepalive ping "
            f"(switch.keepalive: noticed within {loss.bound_s:g} s)"
        )
    return sentence(loss)


def describe_disagreement(disagreement: Disagreement) -> str:
    """``conn #1 (127.0.0.1:5000): the switch sent 2 streams, the controller saw 1``"""
    match disagreement:
        case NoRecord():
            what = "the switch opened it, the controller has no record of it"
        case StreamCount(sent=sent, seen=seen):
            what = f"the switch sent {sent} streams, the controller saw {seen}"
        case Concurrency(switch_peak=ours, controller_peak=theirs):
            what = f"the switch had {ours} streams in flight at once, the controller {theirs}"
        case LateAnswer(ping=ping, stream_id=stream_id, switch_s=ours, controller_s=theirs, bound_s=bound_s):
            what = (
                f"ping {ping} (stream {stream_id}) was answered in {theirs:.3f} s by the controller but took "
                f"{ours:.3f} s at the switch: its answer arrived {ours - theirs:.3f} s late "
                f"(more than {bound_s * 1000:.0f} ms: the round trip and {LATE_ANSWER_S * 1000:.0f} ms)"
            )
    return f"conn #{disagreement.connection} ({disagreement.local_address}): {what}"


def describe_view(view: ControllerView) -> str:
    """``controller saw switch-1: 1 connection, 3 streams, 3 at once``"""
    if view.error:
        return f"controller view unavailable: GET /connections failed: {sentence(view.error)}"
    if view.no_account:
        return f"the controller keeps no account of its connections ({view.no_account}): the switch's view alone"
    unused = f" ({view.unused} carried no stream)" if view.unused else ""
    forgotten = f"; it restarted and no longer knows {plural(view.forgotten, 'earlier one')}" if view.forgotten else ""
    through = f" through {', '.join(view.via)}" if view.via else ""
    return (
        f"controller saw {view.switch}{through}: {plural(len(view.records), 'connection')}{unused}, "
        f"{plural(view.streams, 'stream')}, {view.peak_in_flight} at once{forgotten}"
    )
