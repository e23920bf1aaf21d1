"""A shutdown that an HTTP/2 client can act on: it is told which of its requests were not processed.

On shutdown Hypercorn finishes the streams in flight, resets any new stream, and sends GOAWAY once a busy
connection goes idle. Its resets say REFUSED_STREAM (not processed, RFC 9113 section 8.7), not h2's NO_ERROR:
``hypercorn_seam.ServedH2Connection``. One gap is closed here when the shutdown begins: a connection that is
already idle is closed without any GOAWAY, so a request the client sent at that moment dies with the connection,
processed or not for all it knows. A GOAWAY first (RFC 9113 section 6.8) names the last stream processed, and
httpcore then retries the later ones on a new connection by itself.

Then the shutdown flag is set at once, so that no new stream slips in between.
"""

from __future__ import annotations

import logging

import h2.exceptions

from controller.server.asgi_tls import live_servers
from controller.server.hypercorn_seam import DialoutConfig, SeamH2Protocol
from dialout.text import plural

logger = logging.getLogger(__name__)


async def refuse_new_streams(config: DialoutConfig) -> None:
    """Make every live HTTP/2 connection of the server with this Hypercorn ``config`` refuse new streams; with the
    config's ``goodbye`` words, a GOAWAY carrying them goes to the busy ones too (``dialout.signals``)."""
    servers = live_servers(config)
    goodbye = config.goodbye
    idle = 0
    for server in servers:
        protocol = getattr(getattr(server, "protocol", None), "protocol", None)
        if not isinstance(protocol, SeamH2Protocol):
            continue  # HTTP/1.1: Hypercorn closes idle connections and ends busy ones after their response
        if server.writer.is_closing() or protocol.closed:
            continue  # over already; Hypercorn keeps its task until the idle timer runs out
        if protocol.idle or goodbye:
            try:
                await protocol.goaway_now(goodbye)
            except (OSError, RuntimeError, h2.exceptions.ProtocolError) as exc:
                logger.info("GOAWAY not sent on a closing connection: %s", exc)  # the shutdown goes on
                continue
            idle += protocol.idle
    if servers:
        # The worker context is shared by every connection; Hypercorn sets it too, a moment later.
        await servers[0].context.terminated.set()
    logger.info(
        "shutting down: %s open (%d idle HTTP/2 sent GOAWAY); new streams are refused (REFUSED_STREAM)",
        plural(len(servers), "connection"),
        idle,
    )
