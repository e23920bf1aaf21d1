"""What a run's trace is made of: one frozen class per kind of event, as h2's ``events.py`` and h11's
``_events.py`` have them. Each holds the facts (times, addresses, numbers, a ``Failure``), never a sentence;
``sim_switch/render/report.py`` says them in words, and the HTML report draws the session's from their types.

Every event has ``at_s`` (seconds since the run started), ``ping`` (1, 2, ... or None for the run's own) and
``connection`` (our number for it, if any); ``kind`` says what it is about, so a long session can show its
connections and not every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from sim_switch.model.failures import Failure, LinkLoss, WentSilent

if TYPE_CHECKING:  # model/ stands on dial/; the view only travels through here
    from sim_switch.model.results import ControllerView


class EventKind(StrEnum):
    CONNECTION = "connection"  # TCP, TLS, the controller's SETTINGS
    REQUEST = "request"  # one ping's steps: connection reused, headers written, first byte, closed
    SESSION = "session"  # the run itself: failures, retries, reconnects, the controller's view
    DETAIL = "detail"  # plumbing, shown only when asked for
    FRAME = "frame"  # every HTTP/2 frame either way, shown with --trace frames


@dataclass(frozen=True, kw_only=True)
class TraceEvent:
    kind: ClassVar[EventKind] = EventKind.REQUEST
    at_s: float
    ping: int | None = None
    connection: int | None = None


# --- a ping's steps, from httpcore's trace ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GetConnection(TraceEvent):
    method: str
    url: str


@dataclass(frozen=True, kw_only=True)
class TcpConnecting(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.CONNECTION
    host: str
    port: int | None


@dataclass(frozen=True, kw_only=True)
class TcpConnected(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.CONNECTION
    local: str  # ip:port
    remote: str


@dataclass(frozen=True, kw_only=True)
class TlsStarted(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.CONNECTION
    server_name: str | None  # SNI


@dataclass(frozen=True, kw_only=True)
class TlsDone(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.CONNECTION
    version: str | None
    alpn: str | None
    cipher: str | None
    controller_subject: str | None


@dataclass(frozen=True, kw_only=True)
class SettingsReceived(TraceEvent):
    """The controller's SETTINGS frame, each setting as its name and value."""

    kind: ClassVar[EventKind] = EventKind.CONNECTION
    settings: tuple[tuple[str, int], ...]


@dataclass(frozen=True, kw_only=True)
class GoawayRead(TraceEvent):
    """The controller's GOAWAY: its error code's name, the last stream it processes, and its debug data."""

    kind: ClassVar[EventKind] = EventKind.CONNECTION
    code: str
    last_stream_id: int
    debug: str  # as text (bytes that are not UTF-8 replaced)


@dataclass(frozen=True, kw_only=True)
class SpillDialled(TraceEvent):
    """``streams: spill``: requests waited with every connection full, so more connections were dialled at once,
    as many as the waiting need at the controller's limit a connection."""

    kind: ClassVar[EventKind] = EventKind.CONNECTION
    waiting: int
    limit: int  # the controller's SETTINGS_MAX_CONCURRENT_STREAMS
    dials: int


@dataclass(frozen=True, kw_only=True)
class PrefaceSent(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.DETAIL


@dataclass(frozen=True, kw_only=True)
class ConnectionReused(TraceEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class HeadersWritten(TraceEvent):
    stream_id: int | None


@dataclass(frozen=True, kw_only=True)
class FirstByte(TraceEvent):
    status: int
    http_version: str
    stream_id: int | None  # connection None: the response did not say which connection it came on


@dataclass(frozen=True, kw_only=True)
class ResponseClosed(TraceEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class ConnectRetry(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.CONNECTION


@dataclass(frozen=True, kw_only=True)
class StepFailed(TraceEvent):
    """An httpcore step (``connect_tcp``, ``start_tls``, ...) failed."""

    step: str
    failure: Failure | None  # None: httpcore gave no exception


@dataclass(frozen=True, kw_only=True)
class OtherStep(TraceEvent):
    """An httpcore step of no interest but to someone reading the plumbing (``-v``)."""

    kind: ClassVar[EventKind] = EventKind.DETAIL
    step: str  # as httpcore names it, e.g. "receive_response_body.started"


# --- the run's own ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PingFailed(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    failure: Failure


class Probe(StrEnum):
    """Why the switch dials once more after every ping failed."""

    SCHEME = "scheme"  # they failed at their first bytes: what does the server speak?
    CLIENT_CERTIFICATE = "client_certificate"  # they lost their connection after the handshake: was ours refused?


@dataclass(frozen=True, kw_only=True)
class Probing(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    probe: Probe


@dataclass(frozen=True, kw_only=True)
class Diagnosed(TraceEvent):
    """What a probe found: the failure every ping had."""

    kind: ClassVar[EventKind] = EventKind.SESSION
    failure: Failure


@dataclass(frozen=True, kw_only=True)
class AskingController(TraceEvent):
    """GET /connections (``about_connections`` empty) or GET /diagnosis about these connections."""

    kind: ClassVar[EventKind] = EventKind.SESSION
    url: str
    about_connections: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ControllerAnswered(TraceEvent):
    """The controller's view of the run, as the switch compared it with its own."""

    kind: ClassVar[EventKind] = EventKind.SESSION
    view: ControllerView


@dataclass(frozen=True, kw_only=True)
class NoDiagnosis(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    answer: str | None = None  # what came back instead: its status and content type
    failure: Failure | None = None  # or why nothing came back


@dataclass(frozen=True, kw_only=True)
class LinkDown(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    loss: LinkLoss


@dataclass(frozen=True, kw_only=True)
class LinkGaveUp(TraceEvent):
    """The link stayed down ``give_up_after_s``: every ping waiting fails, no more are sent, the session ends."""

    kind: ClassVar[EventKind] = EventKind.SESSION
    down_s: float
    give_up_after_s: float
    loss: LinkLoss


@dataclass(frozen=True, kw_only=True)
class EndedByController(TraceEvent):
    """The controller said, in its GOAWAY's debug data, that the session is over (``dialout.signals``)."""

    kind: ClassVar[EventKind] = EventKind.SESSION
    said: str


@dataclass(frozen=True, kw_only=True)
class Reconnecting(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    attempt: int
    delay_s: float
    to_url: str | None  # with several controllers: where the redial goes
    start_again: bool  # to_url is where start_with says (the link was up), else the next controller
    loss: LinkLoss


@dataclass(frozen=True, kw_only=True)
class LinkUp(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    url: str | None  # with several controllers: which
    again: bool  # after a loss
    redials: int
    down_s: float


@dataclass(frozen=True, kw_only=True)
class FailedOver(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    from_url: str
    to_url: str
    loss: LinkLoss


@dataclass(frozen=True, kw_only=True)
class KeepaliveCheck(TraceEvent):
    """Nothing heard from a controller for ``quiet_s`` while pings are out: an HTTP/2 PING on each of the pings'
    connections to it goes to check (``http2``), or, over HTTP/1.1, a ping of 0 s."""

    kind: ClassVar[EventKind] = EventKind.DETAIL
    url: str
    quiet_s: float
    http2: bool = True


@dataclass(frozen=True, kw_only=True)
class KeepaliveAnswered(TraceEvent):
    """The check was answered: PING's ACK after ``rtt_s`` (on ``connection``), or the 0 s ping's ``status``."""

    kind: ClassVar[EventKind] = EventKind.DETAIL
    url: str
    rtt_s: float | None = None
    status: int | None = None


@dataclass(frozen=True, kw_only=True)
class GaveUpOnSilence(TraceEvent):
    kind: ClassVar[EventKind] = EventKind.SESSION
    silence: WentSilent
    closed: int  # connections to it closed
