"""What a test bench does to the controller's TLS for the handshakes to come: present another certificate from
the same CA, or offer other ALPN protocols (``python -m controller trials``: cert-rotation, h1-only).

Both change the serving ``SSLContext`` itself: OpenSSL copies a context's certificate and reads its ALPN choice
when each new connection is made, so connections already up keep what they had, and the next handshakes get the
change. Each is a context manager that puts back what was there.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509

from dialout.config import ControllerConfig
from dialout.errors import PKIError
from dialout.pki import issue_another_controller_certificate
from dialout.tls_files import controller_files


class TLSActions:
    def __init__(self, context: ssl.SSLContext, cfg: ControllerConfig, alpn: Sequence[str]) -> None:
        self._context = context
        self._cfg = cfg
        self._alpn = list(alpn)

    @contextlib.contextmanager
    def another_certificate(self) -> Iterator[x509.Certificate]:
        """Present a new certificate from the controller's CA (same names, new key) on new handshakes; yields it.
        Made in a temporary directory, never in certs_dir. PKIError when it cannot be made here: the controller
        serves the user's own certificate (``controller.tls``), or its CA key is not on this machine."""
        files = controller_files(self._cfg)
        if files.own:
            raise PKIError("the controller serves its own certificate (controller.tls): dialout holds no CA key for it")
        with tempfile.TemporaryDirectory(prefix="dialout-rotation-") as directory:
            another = issue_another_controller_certificate(self._cfg.certs_dir, self._cfg.hostnames, Path(directory))
            another.configure_cert(self._context)
            try:
                yield another.chain()[0]
            finally:
                files.identity.configure_cert(self._context)

    @contextlib.contextmanager
    def offering(self, protocols: Sequence[str]) -> Iterator[None]:
        """Offer only ``protocols`` in ALPN on new handshakes."""
        self._context.set_alpn_protocols(list(protocols))
        try:
            yield
        finally:
            self._context.set_alpn_protocols(self._alpn)
