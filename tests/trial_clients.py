"""Clients shaped like real bugs, for ``python -m controller trials`` to catch: each keeps sending requests, three
every 0.2 s, each with a target of its own (``/ping?interval=1&n=N``), and has one bad habit (``Habits``), named
by ``SHAPES``. Run one as a process, as a switch would be::

    python -m tests.trial_clients never-retries --port 8443 --certs certs

It runs until it is killed. Built on ``tests.attacks.RawH2Client`` (h2, frame by frame), which lets a habit break
the protocol where a client library would not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import h2.events
import h2.exceptions

from sim_switch.dial.tls import client_ssl_context
from tests.attacks import RawH2Client

BATCH = 3
EVERY_S = 0.2
RACE_DIALS = 3  # the racer: dials this many while its first new connection's SETTINGS are late


@dataclass(frozen=True)
class Habits:
    redial_after_s: float | None = None  # None: never dials again once its connection is gone
    redial_growth: float = 1.0  # each wait this many times the last: a "backoff" in milliseconds is still a storm
    ignore_goaway: bool = False  # goes on sending on a connection after its GOAWAY
    ignore_limits: bool = False  # opens streams past the controller's SETTINGS_MAX_CONCURRENT_STREAMS
    resend_503_at_once: bool = False  # sends a request answered 503 again at once, whatever Retry-After says
    race_after_s: float | None = None  # dials more connections when a new one's SETTINGS are this late
    pin_certificate: bool = False  # takes only the controller certificate it saw first
    h2_only: bool = False  # offers h2 and http/1.1, and hangs up when given http/1.1


SHAPES = {
    "never-retries": Habits(),  # refused-stream, goaway-unprocessed, silent
    "ignores-goaway": Habits(ignore_goaway=True),  # goaway-graceful, max-requests
    "ignores-limits": Habits(ignore_limits=True),  # stream-limit
    "tight-loop": Habits(redial_after_s=0.0),  # reset, refuse
    "tight-growing": Habits(redial_after_s=0.003, redial_growth=2.0),  # reset: 3, 6, 12 ms, growing and a storm
    "impatient": Habits(redial_after_s=1.0, resend_503_at_once=True),  # retry-after
    "racer": Habits(redial_after_s=0.0, race_after_s=0.3),  # slow-settings
    "pinned": Habits(redial_after_s=0.5, pin_certificate=True),  # cert-rotation
    "h2-only": Habits(redial_after_s=0.5, h2_only=True),  # h1-only
}


class TrialClient:
    def __init__(self, habits: Habits, port: int, context: ssl.SSLContext) -> None:
        self.habits = habits
        self._port = port
        self._context = context
        self._sent = 0
        self._pinned: bytes | None = None

    async def run(self) -> None:
        wait_s = self.habits.redial_after_s
        while True:
            with contextlib.suppress(OSError, ssl.SSLError, ConnectionError, h2.exceptions.ProtocolError):
                peers = await self._dial()
                await asyncio.gather(*(self._use(peer) for peer in peers))
            if wait_s is None:
                await asyncio.Event().wait()  # its connection is gone, and so is it: it never dials again
                return
            await asyncio.sleep(wait_s)
            wait_s *= self.habits.redial_growth

    async def _dial(self) -> list[RawH2Client]:
        peer = await self._connect()
        if self.habits.race_after_s is None:
            return [peer]
        try:
            await asyncio.wait_for(peer.settled(), self.habits.race_after_s)
        except TimeoutError:  # slow: dial more, and use them all
            return [peer, *await asyncio.gather(*(self._connect() for _ in range(RACE_DIALS - 1)))]
        return [peer]

    async def _connect(self) -> RawH2Client:
        peer = await RawH2Client.connect(self._port, self._context, alpn=["h2", "http/1.1"])
        certificate = hashlib.sha256(peer.peer_certificate()).digest()
        self._pinned = self._pinned or certificate
        if self.habits.pin_certificate and certificate != self._pinned:
            await peer.close()
            raise ConnectionError("not the certificate it pinned")
        if self.habits.h2_only and peer.alpn() != "h2":
            await peer.close()
            raise ConnectionError("not h2")
        return peer

    async def _use(self, peer: RawH2Client) -> None:
        targets: dict[int, str] = {}

        def answered(event: h2.events.Event) -> None:
            if not (self.habits.resend_503_at_once and isinstance(event, h2.events.ResponseReceived)):
                return
            if (b":status", b"503") in event.headers:
                peer.request(targets[event.stream_id])

        reading = asyncio.create_task(
            peer.keep_reading(
                ignore_goaway=self.habits.ignore_goaway, ignore_limits=self.habits.ignore_limits, on_event=answered
            )
        )
        try:
            while not reading.done():
                for _ in range(BATCH):
                    self._sent += 1
                    target = f"/ping?interval=1&n={self._sent}"
                    targets[peer.request(target)] = target
                await asyncio.wait([reading], timeout=EVERY_S)
        finally:
            reading.cancel()
            await peer.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.trial_clients", description=__doc__)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--switch", default="switch-1")
    args = parser.parse_args()
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    client = TrialClient(SHAPES[args.shape], args.port, client_ssl_context(args.certs, args.switch))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(client.run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
