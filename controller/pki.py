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
from cryptography.exceptions import InvalidSignature

from controller.tls_files import (
    Identity,
    PKIError,
    ca_cert_path,
    ca_private_key_path,
    check_validity,
    controller_identity,
    read_certificates,
    switch_identity,
)

__all__ = [
    "Identity", "PKIError", "ca_cert_path", "ca_private_key_path", "controller_identity", "ensure_certs",
    "generate_certs", "switch_identity",
]  # fmt: skip

logger = logging.getLogger(__name__)


def _ca_identity(certs_dir: Path) -> Identity:
    return Identity(ca_cert_path(certs_dir), ca_private_key_path(certs_dir))


LEAF_VALIDITY = datetime.timedelta(days=365)
# Issue leaves an hour in the past so a peer whose clock is a little behind still accepts them.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)
# Reissue a leaf this long before it expires, so a long run never starts on a certificate about to lapse.
RENEW_BEFORE = datetime.timedelta(days=7)
# The organisational units dialout writes into what it issues: with the CA's signature, how it knows its own.
CA_UNIT = "dialout controller CA"
CONTROLLER_UNIT = "dialout controller"
SWITCH_UNIT = "dialout switch"
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644


def ensure_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    """Make whatever of dialout's PKI is missing, expiring or stale in ``certs_dir``; return the files written.

    A brand-new CA is made only when neither ``ca.pem`` nor ``ca.key`` exists: a CA certificate without its key
    (certificates copied from a controller) is kept, and issuing from it is an error that says so, rather than
    silently replacing the trust anchor the other side relies on.

    Only a certificate that dialout issued is ever replaced (``_issued_by_dialout``): one a user placed there is
    used as it is, or refused with a line that says why, never overwritten.
    """
    ca_files = _ca_identity(certs_dir)
    if not ca_files.cert.exists() and not ca_files.key.exists():
        return generate_certs(certs_dir, hostnames, switch_ids)

    wanted = [_controller_leaf(certs_dir, hostnames)] + [_switch_leaf(certs_dir, sid) for sid in switch_ids]
    reasons = {leaf: why for leaf in wanted if (why := _why_issue(leaf, ca_files.cert)) is not None}
    if not reasons:
        return []
    ca = _load_ca(ca_files)
    written: list[Path] = []
    for leaf, why in reasons.items():
        written += _issue(ca, leaf, why)
    return written


def generate_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    """Make a new CA and issue every identity from it, replacing what dialout had issued there before; a file it
    did not issue is never replaced (PKIError names it)."""
    leaves = [_controller_leaf(certs_dir, hostnames)] + [_switch_leaf(certs_dir, sid) for sid in switch_ids]
    _refuse_foreign(certs_dir, leaves)
    certs_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="dialout", organization_unit_name=CA_UNIT)
    ca_files = _ca_identity(certs_dir)
    _write_atomically(ca_files.key, ca.private_key_pem.bytes(), KEY_FILE_MODE)
    _write_atomically(ca_files.cert, ca.cert_pem.bytes(), CERT_FILE_MODE)
    written = [ca_files.key, ca_files.cert]
    logger.info("made a new CA: %s", ca_files.cert)
    for leaf in leaves:
        written += _issue(ca, leaf)
    return written


def _refuse_foreign(certs_dir: Path, leaves: list[_Leaf]) -> None:
    """Raise PKIError if replacing dialout's PKI in ``certs_dir`` would overwrite a file dialout did not write."""
    ca_files = _ca_identity(certs_dir)
    if ca_files.cert.exists() and not any(_unit(ca) == CA_UNIT for ca in read_certificates(ca_files.cert)):
        raise PKIError(f"{ca_files.cert}: not dialout's CA; dialout will not replace it (move it, or point "
                       "certs_dir elsewhere)")  # fmt: skip
    for leaf in leaves:
        cert, key = leaf.identity.cert, leaf.identity.key
        if cert.exists() and not _issued_by_dialout(_read_cert(cert), ca_files.cert):
            raise PKIError(f"{cert}: not issued by dialout; dialout will not replace it (move it, or point "
                           "certs_dir elsewhere)")  # fmt: skip
        if key.exists() and not cert.exists():
            raise _orphan_key(leaf.identity)


@dataclass(frozen=True)
class _Leaf:
    """A certificate the CA issues: where it goes, the names it is valid for, and who it is."""

    identity: Identity
    names: tuple[str, ...]  # subject alternative names
    common_name: str
    unit: str


def _controller_leaf(certs_dir: Path, hostnames: Iterable[str]) -> _Leaf:
    return _Leaf(controller_identity(certs_dir), tuple(hostnames), "dialout controller", CONTROLLER_UNIT)


def _switch_leaf(certs_dir: Path, switch_id: str) -> _Leaf:
    return _Leaf(switch_identity(certs_dir, switch_id), (switch_id,), switch_id, SWITCH_UNIT)


def _issue(ca: trustme.CA, leaf: _Leaf, why: str = "new") -> list[Path]:
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
    until = (now + LEAF_VALIDITY).date()
    if why == "new":
        logger.info("issued %s for %s (valid until %s)", identity.cert, leaf.common_name, until)
    else:  # replacing a file: say so, and why dialout may
        logger.info("reissued %s for %s (valid until %s): dialout issued it (signed by its CA, OU=%s) and %s",
                    identity.cert, leaf.common_name, until, leaf.unit, why)  # fmt: skip
    return [identity.key, identity.cert]


def _why_issue(leaf: _Leaf, ca_cert: Path) -> str | None:
    """Why ``leaf`` needs issuing (None: it does not). Raises PKIError for files dialout may not touch."""
    identity = leaf.identity
    if not identity.cert.exists():
        if identity.key.exists():
            raise _orphan_key(identity)
        return "new"
    cert = _read_cert(identity.cert)
    if not _issued_by_dialout(cert, ca_cert):
        # Not ours: used as it is (its names are the user's business), unless it cannot work at all.
        if not identity.key.exists():
            raise PKIError(f"{identity.key}: private key file missing for {identity.cert}")
        check_validity(cert, identity.cert)
        return None
    if not identity.key.exists():
        return "its key was missing"
    expires = cert.not_valid_after_utc
    if expires - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return f"it expires on {expires:%Y-%m-%d}"
    names = _subject_alt_names(cert)
    wanted = {_normalise_name(name) for name in leaf.names}
    if names != wanted:
        return f"its names were {', '.join(sorted(names))}, now {', '.join(sorted(wanted))}"
    return None


def _orphan_key(identity: Identity) -> PKIError:
    return PKIError(f"{identity.key} exists without its certificate {identity.cert}: dialout replaces only what it "
                    "issued itself; remove the key to have a new pair issued")  # fmt: skip


def _issued_by_dialout(cert: x509.Certificate, ca_cert: Path) -> bool:
    """How dialout knows a certificate is its own: the CA in certs_dir (dialout's, by its subject) signed it, and it
    carries one of the units dialout issues to. A file the user placed there fails one of these."""
    if _unit(cert) not in (CONTROLLER_UNIT, SWITCH_UNIT):
        return False
    try:
        cas = read_certificates(ca_cert)
    except PKIError:
        return False
    for ca in cas:
        if _unit(ca) != CA_UNIT:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _unit(cert: x509.Certificate) -> str | None:
    units = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else None


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
