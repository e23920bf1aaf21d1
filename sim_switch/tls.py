"""The switch's side of mutual TLS: trust only the controller's CA, present the switch's own certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from controller.config import SwitchConfig
from controller.tls_files import TLSFiles, switch_files


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


def client_ssl_context(certs_dir: Path, switch_id: str) -> ssl.SSLContext:
    """``switch_id``'s context on dialout's own PKI in ``certs_dir``."""
    return switch_ssl_context(switch_files(SwitchConfig(certs_dir=certs_dir), switch_id))
