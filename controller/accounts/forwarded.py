"""A switch seen through a TLS-terminating proxy (the report's own topology: the switch, nginx, the controller).

The proxy ends the switch's TLS connection and opens its own to us, so what the controller's socket shows is the
proxy. A proxy we trust (``controller.trusted_proxies``: the CN of its client certificate, or its address) forwards
per request what it saw of the switch's connection, in these headers (nginx's variables in brackets; the whole
server block: ``python -m controller nginx-conf``):

=========================  ==========================================================================
``X-Dialout-Client-Cert``  the switch's verified certificate, URL-escaped PEM (``$ssl_client_escaped_cert``)
``X-Dialout-Client-Verify`` the proxy's verification result; only ``SUCCESS`` counts (``$ssl_client_verify``)
``X-Dialout-Connection``   the proxy's number for the switch's connection (``$connection``)
``X-Dialout-Peer``         the switch's address and port (``$remote_addr:$remote_port``)
``X-Dialout-Request``      this request's number on that connection (``$connection_requests``)
``X-Dialout-Protocol``     ``HTTP/2.0`` or ``HTTP/1.1`` (``$server_protocol``)
``X-Dialout-TLS``          the TLS version (``$ssl_protocol``)
``X-Dialout-ALPN``         the protocol ALPN chose (``$ssl_alpn_protocol``)
=========================  ==========================================================================

A request's identity never comes from headers alone: the controller parses the forwarded certificate itself and
verifies it against its own client CA with ``cryptography.x509.verification`` (the RFC 5280 path validation of
the web PKI profile: a CA certificate, one not for client authentication, an expired one are refused), and from
any peer that is not a trusted proxy the headers are ignored. Two relaxations, both for trustme, which issues
dialout's certificates: its leaves mark the subjectAltName and extendedKeyUsage extensions critical (the profile
wants them non-critical); the extendedKeyUsage must still name clientAuth.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, Policy, PolicyBuilder, Store, VerificationError

from dialout.text import Address
from dialout.tls_files import Trust, common_name

logger = logging.getLogger(__name__)

PREFIX = b"x-dialout-"
CLIENT_CERT = "client-cert"
CLIENT_VERIFY = "client-verify"
CONNECTION = "connection"
PEER = "peer"
REQUEST = "request"
PROTOCOL = "protocol"
TLS = "tls"
ALPN = "alpn"
HEADERS = (CLIENT_CERT, CLIENT_VERIFY, CONNECTION, PEER, REQUEST, PROTOCOL, TLS, ALPN)
# What each header carries in nginx's terms: the nginx-conf command writes one proxy_set_header per entry.
NGINX_VARIABLES = {
    CLIENT_CERT: "$ssl_client_escaped_cert",
    CLIENT_VERIFY: "$ssl_client_verify",
    CONNECTION: "$connection",
    PEER: "$remote_addr:$remote_port",
    REQUEST: "$connection_requests",
    PROTOCOL: "$server_protocol",
    TLS: "$ssl_protocol",
    ALPN: "$ssl_alpn_protocol",
}
# The verification caches are keyed by PEM text: bounded, for a fleet of many switches behind one proxy.
MAX_CACHED = 4096
# How long a refusal is remembered before the certificate is verified again (one not valid yet may become so).
REFUSAL_HOLDS = datetime.timedelta(minutes=1)


def header_name(field: str) -> str:
    return "X-Dialout-" + "-".join(
        part.upper() if part in ("tls", "alpn") else part.title() for part in field.split("-")
    )


@dataclass(frozen=True)
class Forwarded:
    """What a proxy says it saw of the switch's connection, as sent; nothing here is believed yet."""

    connection: str  # the proxy's number for the switch's connection
    peer: Address  # the switch's address, as the proxy saw it
    cert_pem: str | None
    verify: str | None
    request: int | None
    protocol: str | None
    tls_version: str | None
    alpn: str | None

    @property
    def http_version(self) -> str | None:
        return {"HTTP/2.0": "HTTP/2", "HTTP/1.1": "HTTP/1.1", "HTTP/1.0": "HTTP/1.0"}.get(self.protocol or "")


def carries_forwarding(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.startswith(PREFIX) for name, _ in headers)


def read_forwarded(headers: Iterable[tuple[bytes, bytes]]) -> Forwarded | None:
    """The forwarded fields of a request, or None when it carries no connection to attribute it to."""
    values = {
        name[len(PREFIX) :].decode("latin-1"): value.decode("latin-1").strip()
        for name, value in headers
        if name.startswith(PREFIX)
    }
    connection, peer = values.get(CONNECTION), values.get(PEER)
    if not connection or not peer:
        return None
    return Forwarded(
        connection=connection,
        peer=Address.parse(peer) or Address(peer, 0),  # a proxy's own spelling, kept whole when it is not ip:port
        cert_pem=unquote(values[CLIENT_CERT]) if values.get(CLIENT_CERT) else None,
        verify=values.get(CLIENT_VERIFY) or None,
        request=int(values[REQUEST]) if values.get(REQUEST, "").isdigit() else None,
        protocol=values.get(PROTOCOL) or None,
        tls_version=values.get(TLS) or None,
        alpn=values.get(ALPN) or None,
    )


@dataclass(frozen=True)
class Identified:
    """Who a forwarded request came from, as the controller itself concludes: a verified CN, or why not."""

    switch: str | None
    refusal: str | None = None


class ProxyPolicy:
    """Whom to believe (``controller.trusted_proxies``) and how: the forwarded certificate is verified here, against
    the controller's own client CA, whatever the proxy said of it."""

    def __init__(self, trusted: Iterable[str], client_trust: Trust) -> None:
        self._names: set[str] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in trusted:
            try:
                self._networks.append(ipaddress.ip_network(entry))
            except ValueError:
                self._names.add(entry)
        self._trust = client_trust
        self._anchors: Store | None = None  # read from client_trust on the first forwarded certificate
        # Verdicts by PEM, each with when it stops holding (the certificate's expiry).
        self._verified: dict[str, tuple[Identified, datetime.datetime]] = {}

    def __bool__(self) -> bool:
        return bool(self._names or self._networks)

    def trusts(self, switch: str | None, peer_host: str | None) -> bool:
        """Whether a connection from ``peer_host`` whose certificate's CN is ``switch`` is a trusted proxy."""
        if switch is not None and switch in self._names:
            return True
        if peer_host is None or not self._networks:
            return False
        try:
            address = ipaddress.ip_address(peer_host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def identify(self, forwarded: Forwarded) -> Identified:
        if forwarded.verify != "SUCCESS" or forwarded.cert_pem is None:
            why = f"the proxy's verification said {forwarded.verify!r}" if forwarded.verify else "none was forwarded"
            return Identified(None, f"no verified client certificate from the switch ({why})")
        now = datetime.datetime.now(datetime.UTC)
        cached = self._verified.get(forwarded.cert_pem)
        if cached is None or now >= cached[1]:  # a verdict holds until the certificate would expire
            cached = self._verify(forwarded.cert_pem, now)
            if len(self._verified) >= MAX_CACHED:
                self._verified.pop(next(iter(self._verified)))
            self._verified[forwarded.cert_pem] = cached
        return cached[0]

    def _verify(self, pem: str, now: datetime.datetime) -> tuple[Identified, datetime.datetime]:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except ValueError:
            return Identified(None, "the forwarded client certificate is not a PEM certificate"), now + REFUSAL_HOLDS
        verifier = (
            PolicyBuilder()
            .store(self._store())
            .time(now)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_LEAF_POLICY)
            .build_client_verifier()
        )
        try:
            verifier.verify(cert, [])
        except VerificationError as exc:
            # the chain's own words where they say more (which CA issued it, which one we hold), else the verifier's
            why = self._trust.problem_with([cert], now) or f"{exc}"
            refusal = f"the forwarded client certificate is not trusted here: {why}"
            return Identified(None, refusal), now + REFUSAL_HOLDS
        return Identified(common_name(cert)), cert.not_valid_after_utc

    def _store(self) -> Store:
        if self._anchors is None:
            self._anchors = Store(self._trust.certificates())
        return self._anchors


def _for_client_authentication(policy: Policy, cert: x509.Certificate, usage: x509.ExtendedKeyUsage | None) -> None:
    """The extendedKeyUsage check the web PKI profile makes, at any criticality: clientAuth must be named."""
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise ValueError("its extended key usage does not include clientAuth")


_LEAF_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _for_client_authentication)
)
