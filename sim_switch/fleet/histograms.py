"""Latency histograms that add up: HdrHistogram (HdrHistogram_py, the reference implementation's Python port), so a
fleet split over processes or machines reports the percentiles of all its pings, not percentiles of percentiles.

Values are kept in microseconds from 1 us to 1 hour at 3 significant figures: any recorded value is within 0.1%
of the one reported. A histogram travels in ``--json`` as HdrHistogram's own compressed base64 form, which every
HdrHistogram implementation reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour: longer than any ping, handshake or wait a run allows
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0)


class Histogram:
    """Durations in seconds; below 1 us (or negative: an answer a hair early) counts as 1 us."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        for value in values:
            self.record(value)

    def record(self, seconds: float) -> None:
        self._hdr.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000))))

    def add(self, other: Histogram) -> None:
        self._hdr.add(other._hdr)

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    def percentile(self, percent: float) -> float:
        return int(self._hdr.get_value_at_percentile(percent)) / 1_000_000

    @property
    def min(self) -> float:
        return int(self._hdr.get_min_value()) / 1_000_000

    @property
    def max(self) -> float:
        return int(self._hdr.get_max_value()) / 1_000_000

    def marks(self) -> dict[str, float]:
        """p50, p90, p99 and max in seconds (``--json``'s ``latency_s`` and the like); empty when nothing was
        recorded."""
        if not self.count:
            return {}
        return {**{f"p{percent:g}": self.percentile(percent) for percent in PERCENTILES}, "max": self.max}

    def buckets(self) -> Iterator[tuple[float, int]]:
        """(value in seconds, how many) for every distinct recorded value, smallest first: to draw it."""
        for step in self._hdr.get_recorded_iterator():
            yield int(step.value_iterated_to) / 1_000_000, int(step.count_at_value_iterated_to)

    def encode(self) -> str:
        return bytes(self._hdr.encode()).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Histogram:
        histogram = cls()
        histogram._hdr.decode_and_add(text.encode("ascii"))
        return histogram

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and list(self.buckets()) == list(other.buckets())

    __hash__ = None  # type: ignore[assignment]  # mutable: no hash
