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

import contextlib
import datetime
import fcntl
import ipaddress
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from dialout.errors import PKIError
from dialout.refusals import did_you_mean, listed
from dialout.tls_files import (
    Identity,
    Trust,
    ca_cert_path,
    ca_private_key_path,
    check_validity,
    common_name,
    controller_identity,
    read_certificates,
    switch_identity,
)

__all__ = [
    "Identity",
    "PKIError",
    "ca_cert_path",
    "ca_private_key_path",
    "controller_identity",
    "ensure_certs",
    "ensure_switch_certs",
    "generate_certs",
    "issue_another_controller_certificate",
    "switch_identity",
]

logger = logging.getLogger(__name__)


def _ca_identity(certs_dir: Path) -> Identity:
    return Identity(ca_cert_path(certs_dir), ca_private_key_path(certs_dir))


LEAF_VALIDITY = datetime.timedelta(days=365)
# Issue leaves an hour in the past so a peer whose clock is a little behind still accepts them.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)
# Reissue a leaf this long before it expires, so a long run never starts on a certificate about to lapse.
RENEW_BEFORE = datetime.timedelta(days=7)
# The organisational units dialout writes into what it issues: with the issuer's unit, how it knows its own.
CA_UNIT = "dialout controller CA"
CONTROLLER_UNIT = "dialout controller"
SWITCH_UNIT = "dialout switch"
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644


def ensure_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    """The controller's side: make whatever of dialout's PKI is missing, expiring or stale in ``certs_dir``; return
    the files written.

    A brand-new CA is made only when neither ``ca.pem`` nor ``ca.key`` exists: a CA certificate without its key
    (certificates copied from a controller) is kept, and issuing from it is an error that says so, rather than
    silently replacing the trust anchor the other side relies on.

    Only a certificate that dialout issued is ever replaced (``_dialout_issued``): one a user placed there is
    used as it is, or refused with a line that says why, never overwritten.
    """
    with _issuing(certs_dir):
        if _no_ca(certs_dir):
            return _generate_certs(certs_dir, hostnames, switch_ids)
        leaves = [_controller_leaf(certs_dir, hostnames)] + [_switch_leaf(certs_dir, sid) for sid in switch_ids]
        return _issue_what_is_due(certs_dir, leaves)


def ensure_switch_certs(
    certs_dir: Path, switch_ids: Iterable[str], fleet: Sequence[str] | None, where: str = "config.yaml"
) -> list[Path]:
    """The switch's side: each switch's certificate and key, checked against ``ca.pem``; nothing else is ever made.
    A switch never makes a CA (a switch host holds no CA key): with no ``ca.pem`` it stops, saying where the files
    come from. It issues its own certificate only where the controller's CA key is there already (the
    controller's own machine), and only for an id in the controller's ``fleet`` (``controller.switches``), which the
    controller would otherwise refuse with 403. Without ``ca.key``, what is missing or stale says which files to
    copy. A switch certificate that ``ca.pem`` did not sign is refused before a dial: the controller, which trusts
    that CA, would refuse it on the wire. ``where``: the config file, for the words. ``fleet`` None: not checked (a
    fleet scenario's ids are made from its pattern, not typed, and its config may describe no controller)."""
    ids = list(switch_ids)
    if certs_dir.exists() and not certs_dir.is_dir():
        raise PKIError(f"{certs_dir}: cannot hold certificates: it exists and is not a directory (certs_dir)")
    if not ca_cert_path(certs_dir).exists():
        files = ", ".join(["ca.pem", *(name for sid in ids[:2] for name in (f"{sid}.pem", f"{sid}.key"))])
        raise PKIError(
            f"{certs_dir} (switch.certs_dir in {where}) has no ca.pem, and a switch never makes a CA: the "
            f"controller makes its PKI when it first starts (`python -m controller --config {where}`); copy "
            f"{files}{' ...' if len(ids) > 2 else ''} from its certs_dir here"
        )
    leaves = [_switch_leaf(certs_dir, sid) for sid in ids]
    due = [leaf.identity for leaf in leaves if not leaf.identity.cert.exists()]
    strangers = [sid for sid in ids if not listed(sid, fleet)] if fleet is not None else []
    if due and strangers and _ca_identity(certs_dir).key.exists():
        raise PKIError(_not_in_fleet(strangers[0], fleet or (), where))
    with _issuing(certs_dir):
        return _issue_what_is_due(certs_dir, leaves, signed_by_ca=True)


@contextlib.contextmanager
def _issuing(certs_dir: Path) -> Iterator[None]:
    """One process at a time looks for what is due in ``certs_dir`` and makes it: a fleet's two shards started
    together each found the same certificates missing and wrote them, the key of one beside the certificate of the
    other (a shard exited 2 on the mismatch). An advisory lock on the directory itself, so nothing is left in it;
    released when the descriptor closes, with the process if it dies. Where the directory cannot be locked (some
    network filesystems refuse flock on a descriptor opened to read), it goes on unlocked, as it did before."""
    _make_directory(certs_dir)
    directory: int | None = None
    with contextlib.suppress(OSError):
        directory = os.open(certs_dir, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(directory, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if directory is not None:
            os.close(directory)


def _not_in_fleet(switch_id: str, fleet: Sequence[str], where: str) -> str:
    mean = did_you_mean(switch_id, fleet)
    guess = f"; did you mean {mean}?" if mean else ""
    return (
        f"switch {switch_id!r} is not in controller.switches ({', '.join(fleet)}) in {where}{guess}: its controller "
        "would refuse it (403), so no certificate is issued for it. Fix switch.id, or add it to controller.switches"
    )


def issue_another_controller_certificate(certs_dir: Path, hostnames: Iterable[str], directory: Path) -> Identity:
    """A second controller certificate from dialout's CA in ``certs_dir``, for the same names, written to
    ``directory`` (its key 0600): what a controller rotating its certificate would present (``python -m controller
    trials``, cert-rotation). ``certs_dir`` itself is not touched. PKIError when there is no CA key to issue it."""
    ca_files = _ca_identity(certs_dir)
    if not ca_files.key.exists():
        raise PKIError(f"{ca_files.key}: no CA key to issue another controller certificate from")
    another = Identity(directory / "controller.pem", directory / "controller.key")
    _issue(_load_ca(ca_files), _Leaf(another, tuple(hostnames), "dialout controller", CONTROLLER_UNIT))
    return another


def _no_ca(certs_dir: Path) -> bool:
    ca_files = _ca_identity(certs_dir)
    return not ca_files.cert.exists() and not ca_files.key.exists()


def _issue_what_is_due(certs_dir: Path, leaves: list[_Leaf], signed_by_ca: bool = False) -> list[Path]:
    """Issue each of ``leaves`` that needs it. ``signed_by_ca``: a certificate the user placed must lead to the CA
    in certs_dir too (a switch's: its controller trusts that CA)."""
    ca_files = _ca_identity(certs_dir)
    cas = _read_cas(ca_files.cert)  # once: a fleet has thousands of leaves
    reasons = {leaf: due for leaf in leaves if (due := _why_issue(leaf, ca_files.cert, cas, signed_by_ca))}
    if not reasons:
        return []
    if not ca_files.key.exists():
        leaf, due = next(iter(reasons.items()))
        raise _no_ca_key(ca_files, leaf.identity, due)
    ca = _load_ca(ca_files)
    written: list[Path] = []
    for leaf, due in reasons.items():
        written += _issue(ca, leaf, due)
    return written


def generate_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    """Make a new CA and issue every identity from it, replacing what dialout had issued there before: the
    controller, ``switch_ids``, and every other switch certificate dialout issued in ``certs_dir`` (a fleet's), so
    that none is left signed by the CA this one replaces. A file it did not issue is never replaced (PKIError names
    it)."""
    with _issuing(certs_dir):
        return _generate_certs(certs_dir, hostnames, switch_ids)


def _generate_certs(certs_dir: Path, hostnames: Iterable[str], switch_ids: Iterable[str]) -> list[Path]:
    switch_ids = list(dict.fromkeys([*switch_ids, *_dialout_switches_in(certs_dir)]))
    leaves = [_controller_leaf(certs_dir, hostnames)] + [_switch_leaf(certs_dir, sid) for sid in switch_ids]
    _refuse_foreign(certs_dir, leaves)
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
        raise PKIError(
            f"{ca_files.cert}: not dialout's CA; dialout will not replace it (move it, or point certs_dir elsewhere)"
        )
    for leaf in leaves:
        cert, key = leaf.identity.cert, leaf.identity.key
        if cert.exists() and _dialout_issued(_read_cert(cert), _read_cas(ca_files.cert)) is _Origin.NOT_DIALOUT:
            raise PKIError(
                f"{cert}: not issued by dialout; dialout will not replace it (move it, or point certs_dir elsewhere)"
            )
        if key.exists() and not cert.exists():
            raise _orphan_key(leaf.identity)


@dataclass(frozen=True)
class _Due:
    """Why a certificate is issued, said of it ("is missing", "expires on ...")."""

    why: str
    reissue: bool = True  # a file of dialout's is replaced
    # An earlier CA's certificate left behind: worth a warning even where issuing is otherwise quiet (a fleet's).
    warn: bool = False


NEW = _Due("is missing", reissue=False)


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


def _issue(ca: trustme.CA, leaf: _Leaf, due: _Due = NEW) -> list[Path]:
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
    _make_directory(identity.cert.parent)
    _write_atomically(identity.key, issued.private_key_pem.bytes(), KEY_FILE_MODE)
    _write_atomically(identity.cert, b"".join(blob.bytes() for blob in issued.cert_chain_pems), CERT_FILE_MODE)
    until = (now + LEAF_VALIDITY).date()
    if not due.reissue:
        logger.info("issued %s for %s (valid until %s)", identity.cert, leaf.common_name, until)
    else:  # replacing a file: say so, and why dialout may
        logger.log(
            logging.WARNING if due.warn else logging.INFO,
            "reissued %s for %s (valid until %s): dialout issued it (OU=%s) and it %s",
            identity.cert,
            leaf.common_name,
            until,
            leaf.unit,
            due.why,
        )
    return [identity.key, identity.cert]


def _why_issue(leaf: _Leaf, ca_cert: Path, cas: list[x509.Certificate], signed_by_ca: bool) -> _Due | None:
    """Why ``leaf`` needs issuing (None: it does not). Raises PKIError for files dialout may not touch, and with
    ``signed_by_ca`` for one the CA in ``ca_cert`` (its certificates: ``cas``) did not issue."""
    identity = leaf.identity
    if not identity.cert.exists():
        if identity.key.exists():
            raise _orphan_key(identity)
        return NEW
    cert = _read_cert(identity.cert)
    origin = _dialout_issued(cert, cas)
    if origin is _Origin.NOT_DIALOUT:
        # Not ours: used as it is (its names are the user's business), unless it cannot work at all.
        if not identity.key.exists():
            raise PKIError(f"{identity.key}: private key file missing for {identity.cert}")
        check_validity(cert, identity.cert)
        problem = Trust(ca_cert).problem_with(identity.chain()) if signed_by_ca else None
        if problem is not None:
            raise PKIError(
                f"{identity.cert} was not issued by {ca_cert}: {problem} (a certificate from another CA "
                "belongs in switch.tls)"
            )
        return None
    if origin is _Origin.EARLIER_CA:
        return _Due(f"was not issued by {ca_cert} (an earlier dialout CA signed it)", warn=True)
    if not identity.key.exists():
        return _Due("had lost its key")
    expires = cert.not_valid_after_utc
    if expires - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return _Due(f"expires on {expires:%Y-%m-%d}")
    names = _subject_alt_names(cert)
    wanted = {_normalise_name(name) for name in leaf.names}
    if names != wanted:
        return _Due(f"named {', '.join(sorted(names))}, now {', '.join(sorted(wanted))}")
    return None


def _no_ca_key(ca_files: Identity, identity: Identity, due: _Due) -> PKIError:
    """What a machine without the CA's key (a switch's own) is told about a certificate it cannot issue."""
    copy = f"copy {identity.cert.name} and {identity.key.name} from the controller's certs_dir"
    return PKIError(
        f"{identity.cert} {due.why}, and {ca_files.key} is not here to issue it (the CA key stays with the "
        f"controller): {copy}, or run `python -m controller` there first"
    )


def _orphan_key(identity: Identity) -> PKIError:
    return PKIError(
        f"{identity.key} exists without its certificate {identity.cert}: dialout replaces only what it "
        "issued itself; remove the key to have a new pair issued"
    )


class _Origin(Enum):
    """Who issued a certificate found in certs_dir, as far as dialout can tell."""

    CURRENT_CA = "current"  # dialout, from the CA in certs_dir
    EARLIER_CA = "earlier"  # dialout, from a CA of its own that a new one has since replaced
    NOT_DIALOUT = "other"  # the user placed it there


def _read_cas(ca_cert: Path) -> list[x509.Certificate]:
    try:
        return read_certificates(ca_cert)
    except PKIError:
        return []


def _dialout_issued(cert: x509.Certificate, cas: list[x509.Certificate]) -> _Origin:
    """How dialout knows a certificate is its own: it carries one of the units dialout issues to, and its issuer
    is a dialout CA (by the unit in the issuer's name); the CA in certs_dir (``cas``) signed it, or an earlier one
    did. A file the user placed there fails the first two."""
    if _unit(cert) not in (CONTROLLER_UNIT, SWITCH_UNIT) or _issuer_unit(cert) != CA_UNIT:
        return _Origin.NOT_DIALOUT
    for ca in cas:
        if _unit(ca) != CA_UNIT:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return _Origin.CURRENT_CA
    return _Origin.EARLIER_CA


def _dialout_switches_in(certs_dir: Path) -> list[str]:
    """The switch ids of the switch certificates dialout issued in ``certs_dir``, under any of its CAs."""
    found: list[str] = []
    for path in sorted(certs_dir.glob("*.pem")) if certs_dir.is_dir() else []:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        if _unit(cert) == SWITCH_UNIT and _issuer_unit(cert) == CA_UNIT and common_name(cert) == path.stem:
            found.append(path.stem)
    return found


def _issuer_unit(cert: x509.Certificate) -> str | None:
    units = cert.issuer.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else None


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
    try:
        return trustme.CA.from_pem(ca_files.cert.read_bytes(), ca_files.key.read_bytes())
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot load the CA from {ca_files.cert} and {ca_files.key}: {exc}") from exc


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PKIError(f"{directory}: cannot hold certificates: it exists and is not a directory (certs_dir)") from None
    except OSError as exc:
        raise PKIError(f"{directory}: cannot make it, for certificates: {exc.strerror or exc}") from exc


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte: the file is created with that mode (never
    world-readable, even for a moment, when it is a key) and renamed into place."""
    temp_name: str | None = None
    try:
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp_name, path)
    except BaseException as exc:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise PKIError(f"{path}: cannot write it: {exc.strerror or exc}") from exc
        raise
