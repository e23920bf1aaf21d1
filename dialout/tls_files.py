"""TLS material as files, for both halves: an ``Identity`` (a certificate chain and its key) that a context presents,
and a ``Trust`` (CA certificates) that a context verifies the other side with, as trustme's ``configure_cert`` and
``configure_trust`` do. Which files they are comes from config.yaml: the user's own (``controller.tls``,
``switch.tls``), or dialout's PKI in ``certs_dir``.

Everything is checked before the first dial or the first accept, and each problem is one ``PKIError`` line that
names the file and the cause: missing or unreadable, a key that does not match its certificate, a certificate
expired or not yet valid, one not issued by the CA that will be asked to trust it, a URL whose host the controller's
certificate does not name. A TLS library would say most of these too, but later, on the wire, and without the file.

A leaf module: it imports nothing of Quart or Hypercorn, so ``sim_switch`` can use it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from dialout.config import Config, ControllerConfig, SwitchConfig
from dialout.errors import PKIError

# A chain longer than this is a loop or a mistake, not a PKI.
MAX_CHAIN = 8
PUBLIC_KEY_DER = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Identity:
    """A certificate chain (leaf first, then any intermediates) and its private key, as files."""

    cert: Path
    key: Path

    def chain(self) -> list[x509.Certificate]:
        """The certificates in ``cert``, leaf first; raises PKIError if there are none."""
        return _some_certificates(self.cert)

    def check(self, now: datetime.datetime | None = None) -> list[x509.Certificate]:
        """The chain, once the key matches the leaf and every certificate in it is valid now."""
        chain = self.chain()
        key_data = _read(self.key, "private key")
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except TypeError as exc:  # a password was needed
            raise PKIError(f"{self.key}: the private key is encrypted; give an unencrypted one") from exc
        except ValueError as exc:
            raise PKIError(f"{self.key}: not a PEM private key (or of a kind not supported): {exc}") from exc
        if key.public_key().public_bytes(*PUBLIC_KEY_DER) != chain[0].public_key().public_bytes(*PUBLIC_KEY_DER):
            raise PKIError(f"{self.key}: this key does not match the certificate in {self.cert}")
        for cert in chain:
            check_validity(cert, self.cert, now)
        return chain

    def configure_cert(self, context: ssl.SSLContext) -> None:
        """Present this identity on ``context``."""
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise PKIError(f"{self.cert}: cannot load it with {self.key}: {exc}") from exc


@dataclass(frozen=True)
class Trust:
    """The CA certificates (a root, or a chain of intermediates and root) that verify the other side."""

    ca: Path

    def certificates(self) -> list[x509.Certificate]:
        return _some_certificates(self.ca, " (it should hold the CA that verifies the other side)")

    def configure_trust(self, context: ssl.SSLContext) -> None:
        """Verify the other side on ``context`` with these CAs, and only these."""
        self.certificates()
        try:
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise PKIError(f"{self.ca}: cannot load it as CA certificates: {exc}") from exc

    def verify(self, chain: Sequence[x509.Certificate], source: object, now: datetime.datetime | None = None) -> None:
        """Raise PKIError unless ``chain`` (leaf first, from ``source``) leads by signatures to one of these CAs,
        every certificate on the way valid now."""
        problem = self.problem_with(chain, now)
        if problem is not None:
            raise PKIError(f"{source}: {problem}")

    def problem_with(self, chain: Sequence[x509.Certificate], now: datetime.datetime | None = None) -> str | None:
        """Why ``chain`` does not lead to these CAs, or None when it does."""
        anchors = self.certificates()
        intermediates = list(chain[1:]) + anchors
        current = chain[0]
        for _ in range(MAX_CHAIN):
            if _validity_problem(current, now):
                return f"{_name(current)} {_validity_problem(current, now)}"
            if any(_issued_by(current, anchor) for anchor in anchors):
                return None
            issuer = next((cert for cert in intermediates if _issued_by(current, cert)), None)
            if issuer is None or issuer == current:
                break
            current = issuer
        holds = "; ".join(anchor.subject.rfc4514_string() for anchor in anchors)
        return (
            f"{_name(chain[0])} is not issued by the CA in {self.ca} (its issuer: {_issuer(current)}; that file "
            f"holds: {holds})"
        )


@dataclass(frozen=True)
class TLSFiles:
    """What one half presents and what it trusts; ``own`` when they are the user's files, not dialout's PKI."""

    identity: Identity
    trust: Trust
    own: bool


def controller_files(cfg: ControllerConfig) -> TLSFiles:
    if cfg.tls is not None:
        return TLSFiles(Identity(cfg.tls.cert, cfg.tls.key), Trust(cfg.tls.client_ca), own=True)
    return TLSFiles(controller_identity(cfg.certs_dir), Trust(ca_cert_path(cfg.certs_dir)), own=False)


def switch_files(cfg: SwitchConfig, switch_id: str) -> TLSFiles:
    if cfg.tls is not None:
        tls = cfg.tls.for_switch(switch_id)
        return TLSFiles(Identity(tls.cert, tls.key), Trust(tls.ca), own=True)
    return TLSFiles(switch_identity(cfg.certs_dir, switch_id), Trust(ca_cert_path(cfg.certs_dir)), own=False)


def switch_ssl_context(files: TLSFiles) -> ssl.SSLContext:
    """An explicit context (httpx 0.28 deprecates ``cert=``): hostname checking on, TLS >= 1.2 as HTTP/2
    requires (RFC 9113 section 9.2), and the system's CAs left out: the controller is trusted through the given CA
    only. httpcore sets the ALPN list on it per connection (``h2`` only when the scenario asks for HTTP/2).
    Raises PKIError, one line naming the file, for anything unusable."""
    files.identity.check()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode REQUIRED and check_hostname on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    files.trust.configure_trust(context)
    files.identity.configure_cert(context)
    return context


def check_other_half(cfg: Config, side: str, url: str | None = None, switch_id: str | None = None) -> None:
    """When both halves in this config are on the user's own PKI, check across them what can be checked before a
    dial: what ``side`` ("controller" or "switch") presents must lead to the CA the other half trusts, and the
    switch's URL must be among the controller certificate's names. Files the other half keeps elsewhere (not on
    this machine) are skipped. With dialout's PKI on either side there is nothing to cross-check: it issued both."""
    controller = controller_files(cfg.controller)
    switch = switch_files(cfg.switch, switch_id or cfg.switch.switch_id)
    if not (controller.own and switch.own):
        return
    mine, theirs = (controller, switch) if side == "controller" else (switch, controller)
    if theirs.trust.ca.exists():
        theirs.trust.verify(mine.identity.chain(), mine.identity.cert)
    parts = urlsplit(url or cfg.switch.controller_url)
    if side == "switch" and parts.scheme == "https" and parts.hostname and controller.identity.cert.exists():
        check_names(controller.identity.chain()[0], parts.hostname, controller.identity.cert)


# dialout's own PKI: where each file of it lives in certs_dir.


def ca_cert_path(certs_dir: Path) -> Path:
    return certs_dir / "ca.pem"


def ca_private_key_path(certs_dir: Path) -> Path:
    return certs_dir / "ca.key"


def controller_identity(certs_dir: Path) -> Identity:
    return Identity(certs_dir / "controller.pem", certs_dir / "controller.key")


def switch_identity(certs_dir: Path, switch_id: str) -> Identity:
    return Identity(certs_dir / f"{switch_id}.pem", certs_dir / f"{switch_id}.key")


# Reading and judging certificates.


def read_certificates(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _some_certificates(path: Path, hint: str = "") -> list[x509.Certificate]:
    certificates = read_certificates(path)
    if not certificates:
        raise PKIError(f"{path}: holds no PEM certificate{hint}")
    return certificates


def check_validity(cert: x509.Certificate, source: object, now: datetime.datetime | None = None) -> None:
    problem = _validity_problem(cert, now)
    if problem:
        raise PKIError(f"{source}: {_name(cert)} {problem}")


def check_names(cert: x509.Certificate, host: str, source: object) -> None:
    """Raise PKIError unless ``cert`` is valid for ``host`` (a DNS name, wildcards as RFC 6125 allows, or an IP)."""
    names = certificate_names(cert)
    if not any(_matches(name, host) for name in names):
        listed = ", ".join(names) or "none"
        raise PKIError(f"{source}: the URL's host {host!r} is not among the controller certificate's names ({listed})")


def certificate_names(cert: x509.Certificate) -> list[str]:
    """Its subject alternative names, DNS names and IP addresses, as written."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _matches(name: str, host: str) -> bool:
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name.startswith("*.") and "." in host:  # a wildcard stands for exactly one leftmost label
        return host.split(".", 1)[1] == name[2:]
    return name == host


def _validity_problem(cert: x509.Certificate, now: datetime.datetime | None) -> str | None:
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > now:
        return f"is not valid yet: not before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _name(cert: x509.Certificate) -> str:
    return f"the certificate of {cert.subject.rfc4514_string() or '(no subject)'}"


def _issuer(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string() or "(no issuer)"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PKIError(f"{path}: {what} file missing") from None
    except OSError as exc:
        raise PKIError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
