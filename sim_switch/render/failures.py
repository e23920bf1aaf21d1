"""A failed ping's ``Failure`` in words: its kind, and one line a person can act on."""

from __future__ import annotations

from sim_switch.model.failures import Failure, FailureKind

# The kind in words, and the key of a fleet's errors by kind. HTTP_STATUS's says which status.
HEADLINES = {
    FailureKind.REFUSED_STREAM: "the controller refused the stream",
    FailureKind.STREAM_RESET: "the controller reset the stream",
    FailureKind.GOAWAY: "the controller closed the connection while the ping was in flight",
    FailureKind.CONTROLLER_UNTRUSTED: "the controller's certificate is not trusted",
    FailureKind.CERTIFICATE_REFUSED: "the controller refused our client certificate",
    FailureKind.DOWN: "the controller is down",
    FailureKind.TLS_FAILED: "TLS failed",
    FailureKind.CONNECT_TIMEOUT: "the controller did not accept the TCP connection in time",
    FailureKind.NO_ANSWER: "no complete answer from the controller",
    FailureKind.PROTOCOL_ERROR: "the controller broke the protocol or closed the connection",
    FailureKind.CONNECT_FAILED: "cannot connect to the controller",
    FailureKind.CONNECTION_BROKE: "the connection to the controller broke",
    FailureKind.HTTP_STATUS: "HTTP",
    FailureKind.OTHER: "unexpected error",
    FailureKind.PLAIN_HTTP: "the server answered in plain HTTP",
    FailureKind.EXPECTS_TLS: "the server expects TLS",
}


def headline(failure: Failure) -> str:
    return headline_of(failure.kind, failure.status)


def headline_of(kind: FailureKind, status: int | None = None) -> str:
    """A kind of failure in words; HTTP_STATUS's says which status."""
    if kind is FailureKind.HTTP_STATUS:
        return f"HTTP {status}"
    return HEADLINES[kind]


def sentence(failure: Failure) -> str:
    """One line a person can act on: the kind in words, then its detail."""
    return f"{headline(failure)}: {failure.detail}" if failure.detail else headline(failure)
