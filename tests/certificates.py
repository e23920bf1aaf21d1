"""Certificates the PKI would never issue, made for a test by hand with the controller's own CA key: expired, for
a server only, a CA's own."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dialout.tls_files import Identity, ca_cert_path, ca_private_key_path


def issued_by_our_ca(
    certs_dir: Path, directory: Path, *, usage: x509.ObjectIdentifier | None, days: int, name: str = "switch-1"
) -> Identity:
    """A certificate for ``name`` from the controller's own CA, signed here with the CA's key, and its key (0600):
    with only the extended key usage ``usage`` (None: a CA certificate of its own), valid ``days`` from now
    (negative: expired)."""
    ca = x509.load_pem_x509_certificate(ca_cert_path(certs_dir).read_bytes())
    ca_key = serialization.load_pem_private_key(ca_private_key_path(certs_dir).read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=2), now + datetime.timedelta(days=days))
    if days < 0:
        start = now + datetime.timedelta(days=days - 30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usage is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    identity = Identity(directory / f"{name}.made.pem", directory / f"{name}.made.key")
    identity.cert.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    identity.key.touch(mode=0o600)
    identity.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return identity
