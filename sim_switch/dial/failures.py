"""Why a ping failed, classified once, where the exception is caught, into data: a ``Failure``.

httpx wraps the real cause (a refused connect, a certificate the controller did not like, an h2 event) two or
three exceptions deep; ``classify`` walks the chain once and names it, as httpx maps httpcore's exceptions at one
boundary. Everything after reads the ``FailureKind``: the session's retry decision, the trace, the summary, the
fleet's errors by kind, ``--json``. The words are ``sim_switch/render/failures.py``'s, at the edge.

The switch's own HTTP/2 connection raises what the controller did as data (``sim_switch.wire.connection``:
``StreamReset``, ``GoneAway``, ``ConnectionLost``); HTTP/1.1, on httpcore, raises httpcore's and h2's.

One case hides its cause: under TLS 1.3 the client's handshake completes before the server has checked the client
certificate, so a server that refuses it sends its alert (``certificate required``, ``unknown ca``) after the
handshake, and httpcore, busy writing its request, sees only a broken pipe. ``probe_client_certificate`` finds out
by opening one more connection and reading from it, where the alert surfaces as an ``ssl.SSLError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from urllib.parse import urlsplit

import httpcore
import httpx
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, StreamReset

from dialout.pages import Page, read_more
from dialout.refusals import explained, of_alert
from sim_switch.model.failures import Failure, FailureKind
from sim_switch.wire import errors as wire
from sim_switch.wire.frames import error_name

PROBE_TIMEOUT_S = 5.0
_NOT_DELIVERED = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpcore.ConnectError,
    httpcore.ConnectTimeout,
    httpcore.PoolTimeout,
)


def classify(exc: BaseException, request_sent: bool = True, timeout_s: float | None = None) -> Failure:
    """``exc`` as a Failure. ``request_sent``: whether the request's headers left the switch (if not, the
    controller cannot have processed it); ``timeout_s``: the request timeout that was in force."""
    chain = _chain(exc)
    # A connect that failed means the last try never reached the controller, and httpcore only retries a request
    # on a new connection internally when the old one had not processed it (ConnectionNotAvailable).
    undelivered = not request_sent or any(isinstance(cause, _NOT_DELIVERED) for cause in chain)
    kind, detail = _kind_of(exc, chain, timeout_s)
    return Failure(kind, detail, retry_safe=undelivered or _unprocessed(chain))


def _unprocessed(chain: list[BaseException]) -> bool:
    """The controller said it did not process the request (RFC 9113): REFUSED_STREAM (section 8.7), or a GOAWAY
    whose last processed stream is below ours (section 6.8). httpcore retries the second case itself, on a new
    connection, except when the GOAWAY names stream 0 (none processed): that one it raises, and it is ours to
    retry."""
    for cause in chain:
        if isinstance(cause, wire.StreamReset | wire.GoneAway) and not cause.processed:
            return True
    for event in _h2_events(chain):
        if isinstance(event, StreamReset) and event.error_code == ErrorCodes.REFUSED_STREAM:
            return True
        if isinstance(event, ConnectionTerminated) and event.last_stream_id == 0:
            return True
    return False


def refused_with(status: int, text: str) -> Failure:
    """An answer with a status the scenario does not count as one: processed, so never safe to repeat."""
    return Failure(FailureKind.HTTP_STATUS, text, retry_safe=False, status=status)


def _kind_of(  # noqa: C901 - one rule per failure kind, in the order they must be tried
    exc: BaseException, chain: list[BaseException], timeout_s: float | None
) -> tuple[FailureKind, str]:
    for cause in chain:  # the switch's own HTTP/2 connection (sim_switch.wire) says what the controller did
        if isinstance(cause, wire.StreamReset) and not cause.processed:
            return FailureKind.REFUSED_STREAM, "REFUSED_STREAM, not processed (it is shutting down or full)"
        if isinstance(cause, wire.StreamReset):
            return FailureKind.STREAM_RESET, _error_name(cause.code)
        if isinstance(cause, wire.GoneAway):
            return FailureKind.GOAWAY, str(cause)
    for event in _h2_events(chain):
        if isinstance(event, StreamReset) and event.error_code == ErrorCodes.REFUSED_STREAM:
            return FailureKind.REFUSED_STREAM, "REFUSED_STREAM, not processed (it is shutting down or full)"
        if isinstance(event, StreamReset):
            return FailureKind.STREAM_RESET, _error_name(event.error_code)
        if isinstance(event, ConnectionTerminated):
            return FailureKind.GOAWAY, f"GOAWAY {_error_name(event.error_code)}, last stream {event.last_stream_id}"
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "verification failed"
            hint = "" if "mismatch" in reason.lower() else " (not issued by the CA in the switch's ca.pem)"
            hint += f" ({read_more(Page.PKI)})"
            return FailureKind.CONTROLLER_UNTRUSTED, f"{reason}{hint}"
        if isinstance(cause, ssl.SSLError) and (refusal := of_alert(cause.reason)) is not None:
            return FailureKind.CERTIFICATE_REFUSED, explained(refusal)  # the words the controller logs for it
        if isinstance(cause, ConnectionRefusedError):
            return FailureKind.DOWN, f"connection refused ({cause.strerror or cause})"
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return FailureKind.TLS_FAILED, str(cause.reason or cause)
        if isinstance(cause, httpx.ConnectTimeout | httpcore.ConnectTimeout):
            return FailureKind.CONNECT_TIMEOUT, "connect timeout"
        if isinstance(cause, httpx.TimeoutException | httpcore.TimeoutException | TimeoutError):
            limit = f"within {timeout_s:g} s (switch.request_timeout_s)" if timeout_s is not None else ""
            return FailureKind.NO_ANSWER, limit
        if isinstance(cause, httpx.RemoteProtocolError | httpcore.RemoteProtocolError):
            return FailureKind.PROTOCOL_ERROR, str(cause)
        if isinstance(cause, httpx.ConnectError | httpcore.ConnectError):
            return FailureKind.CONNECT_FAILED, _innermost(exc)
        if isinstance(cause, httpx.ReadError | httpx.WriteError | httpcore.ReadError | httpcore.WriteError):
            return FailureKind.CONNECTION_BROKE, _innermost(exc)
    return FailureKind.OTHER, f"{type(exc).__name__}: {_innermost(exc)}"


async def probe_client_certificate(host: str, port: int, context: ssl.SSLContext) -> Failure | None:
    """Dial once more and read: a refusal of our certificate comes back as a Failure, anything else (the
    controller speaks first, or stays silent) as None."""
    return await asyncio.to_thread(_probe, host, port, context)


def _probe(host: str, port: int, context: ssl.SSLContext) -> Failure | None:
    # A blocking socket, because it reports a TLS alert that arrives after the handshake as the ssl.SSLError it
    # is; an asyncio stream may report the same close as a plain end of file.
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.recv(1)
    except ssl.SSLError as exc:
        return classify(exc) if of_alert(exc.reason) is not None else None
    except OSError:
        return None
    return None


async def probe_scheme(url: str) -> Failure | None:
    """Whether the server at ``url`` speaks the other scheme: plain HTTP where https:// was dialled, TLS where
    http:// was. Asked only once every ping failed at the first bytes, where the TLS library says only "wrong
    version number" and an h2c client only sees the connection close."""
    return await asyncio.to_thread(_probe_scheme, url)


def _probe_scheme(url: str) -> Failure | None:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if parts.scheme == "https":
        if _answers_plain_http(host, parts.port or 443):
            advice = "dial the controller's TLS port (controller.port), or http:// for a cleartext listener"
            return Failure(FailureKind.PLAIN_HTTP, f"is {parts.netloc} the admin port? {advice}", retry_safe=True)
    elif _speaks_tls(host, parts.port or 80):
        return Failure(FailureKind.EXPECTS_TLS, f"use https://{parts.netloc}", retry_safe=True)
    return None


def _answers_plain_http(host: str, port: int) -> bool:
    request = f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(request)
            start = b""
            while len(start) < len(b"HTTP/") and (more := sock.recv(len(b"HTTP/") - len(start))):
                start += more
    except OSError:
        return False
    return start == b"HTTP/"


def _speaks_tls(host: str, port: int) -> bool:
    # Only whether it speaks TLS at all: no certificate is presented or checked on this one connection.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in (exc.reason or "")  # it answered with a TLS alert (it wanted a certificate): TLS
    except OSError:
        return False


def _h2_events(chain: list[BaseException]) -> list[object]:
    """The h2 events that httpcore raises RemoteProtocolError with (a stream reset, a GOAWAY)."""
    return [cause.args[0] for cause in chain if isinstance(cause, httpcore.RemoteProtocolError) and cause.args]


def _error_name(code: object) -> str:
    return error_name(code) if isinstance(code, int) else str(code)  # ErrorCodes is an int too


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _innermost(exc: BaseException) -> str:
    for cause in reversed(_chain(exc)):
        if str(cause):
            return str(cause)
    return type(exc).__name__
