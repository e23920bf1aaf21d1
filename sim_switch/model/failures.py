"""Why a ping failed, as data: its kind (scripts see it in ``--json``), what the kind leaves open, and whether it
is safe to send again. ``sim_switch/dial/failures.py`` classifies an exception into one, once, where it is caught;
``sim_switch/render/failures.py`` says it in words."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    """What went wrong, as scripts see it (``--json``: ``failure.kind``, ``failure_kinds``). Add, never rename."""

    REFUSED_STREAM = "refused_stream"  # RST_STREAM REFUSED_STREAM: not processed (RFC 9113 section 8.7)
    STREAM_RESET = "stream_reset"  # any other RST_STREAM
    GOAWAY = "goaway"  # the connection ended with this ping in flight
    CONTROLLER_UNTRUSTED = "controller_untrusted"  # its certificate failed our verification
    CERTIFICATE_REFUSED = "certificate_refused"  # it refused ours (a TLS alert)
    DOWN = "down"  # connection refused: nothing listens
    TLS_FAILED = "tls_failed"  # any other TLS error
    CONNECT_TIMEOUT = "connect_timeout"
    NO_ANSWER = "no_answer"  # switch.request_timeout_s passed
    PROTOCOL_ERROR = "protocol_error"
    CONNECT_FAILED = "connect_failed"  # any other connect error (a name that does not resolve, ...)
    CONNECTION_BROKE = "connection_broke"  # a read or write failed mid-request
    HTTP_STATUS = "http_status"  # answered, with a status the scenario does not count as an answer
    OTHER = "other"
    PLAIN_HTTP = "plain_http"  # an https:// URL, and the server answered in plain HTTP (an admin port?)
    EXPECTS_TLS = "expects_tls"  # an http:// URL, and the server speaks TLS


@dataclass(frozen=True, kw_only=True)
class WentSilent:
    """Why a link went down when no ping failed: the switch gave up on a controller that stopped answering."""

    url: str
    quiet_s: float  # nothing heard from it for this long, and no answer to a keepalive ping
    bound_s: float  # switch.keepalive's: noticed within this


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    detail: str  # what the kind leaves open: the error code, the alert, the OS's message, the refusal's text
    retry_safe: bool  # known not to have been processed by the controller: sending it again cannot count twice
    status: int | None = None  # HTTP_STATUS: the status it got


# Why a session's link went down: a ping's failure, or the controller's silence.
LinkLoss = Failure | WentSilent
