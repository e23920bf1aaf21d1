"""Why a ping failed, in one line a person can act on.

httpx wraps the real cause (a refused connect, a certificate the controller did not like) two or three exceptions
deep; ``explain`` walks the chain and names it.

One case hides its cause: under TLS 1.3 the client's handshake completes before the server has checked the client
certificate, so a server that refuses it sends its alert (``certificate required``, ``unknown ca``) after the
handshake, and httpcore, busy writing its request, sees only a broken pipe. ``probe_client_certificate`` finds out
by opening one more connection and reading from it, where the alert surfaces as an ``ssl.SSLError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpcore
import httpx
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, StreamReset

# OpenSSL alert reasons a server sends when it refuses the client's certificate.
_CLIENT_CERT_REFUSALS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "we sent no client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "our certificate is from a CA it does not trust",
    "SSLV3_ALERT_BAD_CERTIFICATE": "it found our certificate bad",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "our certificate has expired (or is not yet valid)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "it could not verify our certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "our certificate is not valid for client authentication",
    "TLSV1_ALERT_ACCESS_DENIED": "access denied",
    # TLS 1.2 has no "certificate required" alert; a server that wanted one sends this generic one.
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake failure (under TLS 1.2 this usually means we sent no certificate)",
}
PROBE_TIMEOUT_S = 5.0
_NOT_DELIVERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpcore.ConnectError,
                  httpcore.ConnectTimeout, httpcore.PoolTimeout)  # fmt: skip


def explain(exc: BaseException, timeout_s: float | None = None) -> str:
    chain = _chain(exc)
    for event in _h2_events(chain):
        if isinstance(event, StreamReset) and event.error_code == ErrorCodes.REFUSED_STREAM:
            return "the controller refused the stream (REFUSED_STREAM: not processed; it is shutting down or full)"
        if isinstance(event, StreamReset):
            return f"the controller reset the stream ({_error_name(event.error_code)})"
        if isinstance(event, ConnectionTerminated):
            return (
                f"the controller closed the connection (GOAWAY {_error_name(event.error_code)}, last stream "
                f"{event.last_stream_id}) while the ping was in flight"
            )
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "verification failed"
            hint = "" if "mismatch" in reason.lower() else " (not issued by the CA in the switch's ca.pem)"
            return f"the controller's certificate is not trusted: {reason}{hint}"
        if isinstance(cause, ssl.SSLError) and cause.reason in _CLIENT_CERT_REFUSALS:
            return f"the controller refused our client certificate: {_CLIENT_CERT_REFUSALS[cause.reason]}"
        if isinstance(cause, ConnectionRefusedError):
            return f"the controller is down: connection refused ({cause.strerror or cause})"
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or cause}"
        if isinstance(cause, httpx.ConnectTimeout | httpcore.ConnectTimeout):
            return "the controller did not accept the TCP connection in time (connect timeout)"
        if isinstance(cause, httpx.TimeoutException | httpcore.TimeoutException | TimeoutError):
            limit = f" within {timeout_s:g} s (switch.request_timeout_s)" if timeout_s is not None else ""
            return f"no complete answer from the controller{limit}"
        if isinstance(cause, httpx.RemoteProtocolError | httpcore.RemoteProtocolError):
            return f"the controller broke the protocol or closed the connection: {cause}"
        if isinstance(cause, httpx.ConnectError | httpcore.ConnectError):
            return f"cannot connect to the controller: {_innermost(exc)}"
        if isinstance(cause, httpx.ReadError | httpx.WriteError | httpcore.ReadError | httpcore.WriteError):
            return f"the connection to the controller broke: {_innermost(exc)}"
    return f"{type(exc).__name__}: {_innermost(exc)}"


def is_retry_safe(exc: BaseException, request_sent: bool) -> bool:
    """Whether a failed ping is known not to have been processed by the controller, so that sending it again
    cannot make it count twice: the request never left the switch, or the controller refused its stream
    (RFC 9113 section 8.7: REFUSED_STREAM means not processed). A GOAWAY that excludes the stream is the
    other case; httpcore already retries those itself, on a new connection."""
    if not request_sent:
        return True
    chain = _chain(exc)
    # A connect that failed means the last try never reached the controller, and httpcore only retries a request
    # on a new connection internally when the old one had not processed it (ConnectionNotAvailable).
    if any(isinstance(cause, _NOT_DELIVERED) for cause in chain):
        return True
    return any(
        isinstance(event, StreamReset) and event.error_code == ErrorCodes.REFUSED_STREAM for event in _h2_events(chain)
    )


async def probe_client_certificate(host: str, port: int, context: ssl.SSLContext) -> str | None:
    """Dial once more and read: a refusal of our certificate comes back as an explanation, anything else
    (the controller speaks first, or stays silent) as None."""
    return await asyncio.to_thread(_probe, host, port, context)


def _probe(host: str, port: int, context: ssl.SSLContext) -> str | None:
    # A blocking socket, because it reports a TLS alert that arrives after the handshake as the ssl.SSLError it
    # is; an asyncio stream may report the same close as a plain end of file.
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.recv(1)
    except ssl.SSLError as exc:
        return explain(exc) if exc.reason in _CLIENT_CERT_REFUSALS else None
    except OSError:
        return None
    return None


def _h2_events(chain: list[BaseException]) -> list[object]:
    """The h2 events that httpcore raises RemoteProtocolError with (a stream reset, a GOAWAY)."""
    return [cause.args[0] for cause in chain if isinstance(cause, httpcore.RemoteProtocolError) and cause.args]


def _error_name(code: object) -> str:
    return code.name if isinstance(code, ErrorCodes) else str(code)


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
