"""The switch's side of mutual TLS: trust only the controller's CA, present the switch's own certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from dialout.config import SwitchConfig
from dialout.tls_files import switch_files, switch_ssl_context

__all__ = ["client_ssl_context", "switch_ssl_context"]


def client_ssl_context(certs_dir: Path, switch_id: str) -> ssl.SSLContext:
    """``switch_id``'s context on dialout's own PKI in ``certs_dir``."""
    return switch_ssl_context(switch_files(SwitchConfig(certs_dir=certs_dir), switch_id))
