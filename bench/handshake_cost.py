"""What one TLS handshake costs OpenSSL itself, each side, with dialout's certificates and client certificates
required: both ends in this process on memory BIOs, no sockets, no asyncio. The floor under the controller's cost
per connection (bench/run.py's fleet and storm rows): what is above it is Python's.

    .venv/bin/python bench/handshake_cost.py [--handshakes 300]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.server.serve import server_ssl_context
from dialout.config import ControllerConfig
from dialout.pki import generate_certs
from sim_switch.dial.tls import client_ssl_context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[float, float]:
    """One handshake, both ends stepped in turn: (the server's CPU seconds, the client's)."""
    to_server = ssl.MemoryBIO()  # the client's outgoing is the server's incoming
    client_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(client_in, to_server, server_hostname="127.0.0.1")
    theirs = server.wrap_bio(to_server, server_out, server_side=True)
    spent = [0.0, 0.0]
    done = [False, False]
    while not all(done):
        for side, end in ((1, ours), (0, theirs)):
            started = time.process_time()
            try:
                end.do_handshake()
                done[side] = True
            except ssl.SSLWantReadError:
                pass
            spent[side] += time.process_time() - started
            client_in.write(server_out.read())
    return spent[0], spent[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        generate_certs(certs, ["localhost", "127.0.0.1"], ["switch-1"])
        server = server_ssl_context(ControllerConfig(certs_dir=certs, switches=("switch-1",)))
        client = client_ssl_context(certs, "switch-1")
        server.sni_callback = None  # the controller's notes the ClientHello's time: not OpenSSL's cost
        times = [handshake(server, client) for _ in range(args.handshakes)]
    server_ms = sum(s for s, _ in times) / len(times) * 1000
    client_ms = sum(c for _, c in times) / len(times) * 1000
    print(
        f"TLS handshake, client certificate required, {ssl.OPENSSL_VERSION}: server {server_ms:.2f} ms, "
        f"client {client_ms:.2f} ms of CPU each (mean of {args.handshakes})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
