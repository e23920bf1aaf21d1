"""The controller's PKI: a CA, the controller's server certificate, and one client certificate per switch.

A leaf module: it imports nothing of Quart or Hypercorn, so ``sim_switch`` can use it.

The controller owns the PKI because it is the party that decides which switches may dial in. Certificates are made
with trustme and laid out in one directory::

    ca.pem  ca.key                  the CA (its key issues every identity below)
    controller.pem  controller.key  the server certificate, SANs = the config's hostnames
    <switch-id>.pem  <switch-id>.key  a switch's client certificate, CN = the switch id

Private keys are written 0600 and replaced atomically, so a reader never sees half a key.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

logger = logging.getLogger(__name__)

LEAF_VALIDITY = datetime.timedelta(days=365)
# Issue leaves an hour in the past so a peer whose clock is a little behind still accepts them.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)
# Reissue a leaf this long before it expires, so a long run never starts on a certificate about to lapse.
RENEW_BEFORE = datetime.timedelta(days=7)
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644


class PKIError(Exception):
    """Certificates are missing and cannot be made, or are unreadable."""


@dataclass(frozen=True)
class Identity:
    """A certificate chain (leaf first) and its private key, as files."""

    cert: Path
    key: Path


def ca_cert_path(certs_dir: Path) -> Path:
    return certs_dir / "ca.pem"


def controller_identity(certs_dir: Path) -> Identity:
    return Identity(certs_dir / "controller.pem", certs_dir / "controller.key")


def switch_identity(certs_dir: Path, switch_id: str) -> Identity:
    return Identity(certs_dir / f"{switch_id}.pem", certs_dir / f"{switch_id}.key")


def ca_private_key_path(certs_dir: Path) -> Path:
    return certs_dir / "ca.key"


def _ca_identity(certs_dir: Path) -> Identity:
    return Identity(ca_cert_path(certs_dir), ca_private_key_path(certs_dir))


def ensure_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    """Make whatever is missing, expiring or stale in ``certs_dir``; return the files written.

    A brand-new CA is made only when neither ``ca.pem`` nor ``ca.key`` exists: a CA certificate without its key
    (certificates copied from a controller) is kept, and issuing from it is an error that says so, rather than
    silently replacing the trust anchor the other side relies on.
    """
    ca_files = _ca_identity(certs_dir)
    if not ca_files.cert.exists() and not ca_files.key.exists():
        return generate_certs(certs_dir, hostnames, switch_ids)

    wanted = [_controller_leaf(certs_dir, hostnames)] + [_switch_leaf(certs_dir, sid) for sid in switch_ids]
    stale = [leaf for leaf in wanted if _needs_issuing(leaf)]
    if not stale:
        return []
    ca = _load_ca(ca_files)
    written: list[Path] = []
    for leaf in stale:
        written += _issue(ca, leaf)
    return written


def generate_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    """Make a new CA and issue every identity from it, replacing whatever was there."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="dialout", organization_unit_name="dialout controller CA")
    ca_files = _ca_identity(certs_dir)
    _write_atomically(ca_files.key, ca.private_key_pem.bytes(), KEY_FILE_MODE)
    _write_atomically(ca_files.cert, ca.cert_pem.bytes(), CERT_FILE_MODE)
    written = [ca_files.key, ca_files.cert]
    logger.info("made a new CA: %s", ca_files.cert)
    written += _issue(ca, _controller_leaf(certs_dir, hostnames))
    for switch_id in switch_ids:
        written += _issue(ca, _switch_leaf(certs_dir, switch_id))
    return written


@dataclass(frozen=True)
class _Leaf:
    """A certificate the CA issues: where it goes, the names it is valid for, and who it is."""

    identity: Identity
    names: tuple[str, ...]  # subject alternative names
    common_name: str
    unit: str


def _controller_leaf(certs_dir: Path, hostnames: Iterable[str]) -> _Leaf:
    return _Leaf(controller_identity(certs_dir), tuple(hostnames), "dialout controller", "dialout controller")


def _switch_leaf(certs_dir: Path, switch_id: str) -> _Leaf:
    return _Leaf(switch_identity(certs_dir, switch_id), (switch_id,), switch_id, "dialout switch")


def _issue(ca: trustme.CA, leaf: _Leaf) -> list[Path]:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # trustme wants naive UTC
    issued = ca.issue_cert(
        *leaf.names,
        common_name=leaf.common_name,
        organization_name="dialout",
        organization_unit_name=leaf.unit,
        not_before=now - CLOCK_SKEW_ALLOWANCE,
        not_after=now + LEAF_VALIDITY,
    )
    identity = leaf.identity
    identity.cert.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(identity.key, issued.private_key_pem.bytes(), KEY_FILE_MODE)
    _write_atomically(identity.cert, b"".join(blob.bytes() for blob in issued.cert_chain_pems), CERT_FILE_MODE)
    logger.info("issued %s for %s (valid until %s)", identity.cert, leaf.common_name, (now + LEAF_VALIDITY).date())
    return [identity.key, identity.cert]


def _needs_issuing(leaf: _Leaf) -> bool:
    if not leaf.identity.cert.exists() or not leaf.identity.key.exists():
        return True
    cert = _read_cert(leaf.identity.cert)
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return True
    return _subject_alt_names(cert) != {_normalise_name(name) for name in leaf.names}


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read certificate {path}: {exc}") from exc


def _subject_alt_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names: set[str] = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return names | {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def _normalise_name(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _load_ca(ca_files: Identity) -> trustme.CA:
    if not ca_files.key.exists():
        raise PKIError(
            f"cannot issue certificates: {ca_files.key} is missing (the CA key lives with the controller; "
            f"run `python -m controller certs` there, or copy the switch's .pem and .key here)"
        )
    try:
        return trustme.CA.from_pem(ca_files.cert.read_bytes(), ca_files.key.read_bytes())
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot load the CA from {ca_files.cert} and {ca_files.key}: {exc}") from exc


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte: the file is created with that mode (never
    world-readable, even for a moment, when it is a key) and renamed into place."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
