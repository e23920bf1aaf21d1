"""The switch's side of mutual TLS: trust only the controller's CA, present the switch's own certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from controller.pki import ca_cert_path, switch_identity


class SwitchSetupError(Exception):
    """The switch cannot dial: its certificate, key or the controller's CA is missing or unusable."""


def client_ssl_context(certs_dir: Path, switch_id: str) -> ssl.SSLContext:
    """An explicit context (httpx 0.28 deprecates ``cert=``): hostname checking on, TLS >= 1.2 as HTTP/2
    requires (RFC 9113 section 9.2), and the system's CAs left out: the controller is trusted through our CA only.
    httpcore sets the ALPN list on it per connection (``h2`` only when the scenario asks for HTTP/2)."""
    identity = switch_identity(certs_dir, switch_id)
    ca_file = ca_cert_path(certs_dir)
    missing = [str(path) for path in (ca_file, identity.cert, identity.key) if not path.is_file()]
    if missing:
        raise SwitchSetupError(
            f"certificate file missing: {', '.join(missing)} (run `python -m controller certs`, or point "
            f"switch.certs_dir at the controller's certs)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode REQUIRED and check_hostname on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=ca_file)
        context.load_cert_chain(identity.cert, identity.key)
    except (OSError, ssl.SSLError) as exc:
        raise SwitchSetupError(f"cannot load the switch's certificates from {certs_dir}: {exc}") from exc
    return context
