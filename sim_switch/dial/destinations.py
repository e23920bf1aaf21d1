"""Which controller a switch dials: a destination group, as RFC 8071 call home and SONiC's dial-out have.

A session keeps a ``Destinations``: the list, the one it is on, and the one it last connected to. ``start_with``
(``switch.start_with``) picks where it begins and where it begins again after losing its link; each dial that
fails moves to the next in the list, wrapping round. A fleet picks each switch's controller once, with
``spread_over``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

from dialout.config import Spread, StartWith


class Destinations:
    def __init__(self, urls: Sequence[str], start_with: StartWith, unit_random: Callable[[], float]) -> None:
        if not urls:
            raise ValueError("a switch needs at least one controller to dial")
        self.urls = tuple(urls)
        self._start_with = start_with
        self._random = unit_random
        self._last_connected: int | None = None
        self._index = self._starting_index()

    @property
    def current(self) -> str:
        return self.urls[self._index]

    @property
    def several(self) -> bool:
        return len(self.urls) > 1

    def connected(self) -> None:
        """The current controller answered."""
        self._last_connected = self._index

    def start_again(self) -> str:
        """The link went down: where ``start_with`` says the redial begins."""
        self._index = self._starting_index()
        return self.current

    def move_on(self) -> str:
        """A dial failed: the next controller in the list."""
        self._index = (self._index + 1) % len(self.urls)
        return self.current

    def _starting_index(self) -> int:
        match self._start_with:
            case StartWith.FIRST_LISTED:
                return 0
            case StartWith.LAST_CONNECTED:
                return self._last_connected or 0
            case StartWith.RANDOM:
                return min(int(self._random() * len(self.urls)), len(self.urls) - 1)


def spread_over(urls: Sequence[str], switch_id: str, place: int, spread: Spread) -> str:
    """The controller a fleet's switch dials: by a hash of its id (stable whatever the fleet or shard), or by its
    place in the fleet (``round-robin``: counts as even as the list allows)."""
    match spread:
        case Spread.HASH:
            return urls[zlib.crc32(switch_id.encode()) % len(urls)]
        case Spread.ROUND_ROBIN:
            return urls[place % len(urls)]
