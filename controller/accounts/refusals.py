"""The clients the controller refused, by who and why: each kind logged at once with its fix, then at most once a
second with a count (a client that redials without backoff is hundreds of refusals a minute), and kept for
``/diagnosis`` and ``explain``.

Who is a source address for a refused TLS handshake (no name is known before it ends) and a certificate's name
from an address for a refused request (403). The words are ``dialout.refusals``': the switch, refused, says the
same ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dialout.refusals import Refusal, explained, words
from dialout.text import plural, printable, utc_now

logger = logging.getLogger(__name__)

LOG_EVERY_S = 1.0
# Distinct (who, why) pairs kept: past it the one refused longest ago goes. A flood from many addresses is
# bounded by the pending-handshake caps before it gets here.
MAX_KEPT = 1_000


@dataclass
class RefusedClient:
    """The refusals of one client for one reason. ``host``: where it came from; ``name``: its certificate's name,
    for a refused request (None for a refused handshake, which never got as far)."""

    host: str
    name: str | None
    refusal: Refusal
    detail: str  # OpenSSL's own words for the latest, or the 403's
    count: int = 0
    first_at: str = ""  # UTC, ISO 8601
    last_at: str = ""
    first: float = 0.0  # time.monotonic()
    last: float = 0.0
    _said: int = 0  # count at the last log line
    _said_at: float = -LOG_EVERY_S
    _due: asyncio.TimerHandle | None = None

    def describe(self) -> str:
        """Who, as the log and explain say it."""
        return f"{printable(self.name)} at {self.host}" if self.name is not None else self.host


class Refusals:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str | None, Refusal], RefusedClient] = OrderedDict()

    def handshake(self, host: str, refusal: Refusal, detail: str) -> None:
        """A TLS handshake from ``host`` refused (or failed) for ``refusal``; ``detail``: OpenSSL's words."""
        self._add(host, None, refusal, detail)

    def request(self, host: str, name: str, refusal: Refusal, detail: str) -> None:
        """A request from certificate ``name`` at ``host`` refused with 403; ``detail``: what it was told."""
        self._add(host, name, refusal, detail)

    def since(self, moment: float | None = None) -> list[RefusedClient]:
        """Every kind refused at or after ``moment`` (monotonic; None: all kept), the most recent last."""
        return sorted(
            (kept for kept in self._kept.values() if moment is None or kept.last >= moment), key=lambda r: r.last
        )

    def _add(self, host: str, name: str | None, refusal: Refusal, detail: str) -> None:
        key = (host, name, refusal)
        now = self._clock()
        kept = self._kept.get(key)
        if kept is None:
            if len(self._kept) >= MAX_KEPT:
                self._kept.popitem(last=False)
            kept = self._kept[key] = RefusedClient(host, name, refusal, detail, first_at=utc_now(), first=now)
        self._kept.move_to_end(key)
        kept.count += 1
        kept.detail = detail
        kept.last, kept.last_at = now, utc_now()
        if kept._due is not None:
            return
        wait_s = kept._said_at + LOG_EVERY_S - now
        if wait_s <= 0:
            self._say(kept)
            return
        with contextlib.suppress(RuntimeError):  # no loop running (a test's records): said with the next one
            kept._due = asyncio.get_running_loop().call_later(wait_s, self._say, kept)

    def _say(self, kept: RefusedClient) -> None:
        kept._due = None
        new = kept.count - kept._said
        if not new:
            return
        what = "TLS handshake" if kept.name is None else "request"
        if kept._said == 0 and kept.name is None:  # the first: what it was and what to do, in full
            said = f"{explained(kept.refusal)} (OpenSSL: {printable(kept.detail)})"
            logger.warning("refused a TLS handshake from %s: %s", kept.describe(), said)
        elif kept._said == 0:  # a 403: what the client was told
            logger.warning("refused a request of %s (403): %s", kept.describe(), printable(kept.detail))
        else:
            logger.warning(
                "refused %s %s %s over %.0f s: %s (%d in all)",
                plural(new, what),
                "from" if kept.name is None else "of",
                kept.describe(),
                max(LOG_EVERY_S, self._clock() - kept._said_at),
                words(kept.refusal).what,
                kept.count,
            )
        kept._said, kept._said_at = kept.count, self._clock()
