"""The ``interval`` query parameter of ``/ping``: strict parsing, with errors that say what was wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# Plain decimal notation with an optional exponent, as a person types it, in ASCII digits: Python's float() also
# takes 'nan', 'inf', '1_0', surrounding whitespace and any script's digits (U+0663 is 3, U+FF11 is 1), none of them a
# delay a switch means.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# Longer than any interval a person means; also keeps float() off megabyte-long digit strings.
MAX_INTERVAL_CHARS = 32


class IntervalError(ValueError):
    """The interval is missing or unusable; the message is what the client is told."""


def parse_interval(values: Sequence[str], max_interval_s: float) -> float:
    """The one ``interval`` value in ``values`` (every occurrence in the query) as seconds, or ``IntervalError``."""
    if not values:
        raise IntervalError("missing query parameter 'interval' (seconds to wait, e.g. /ping?interval=5)")
    if len(values) > 1:
        raise IntervalError(f"'interval' given {len(values)} times; give it once")
    text = values[0]
    shown = text if len(text) <= MAX_INTERVAL_CHARS else text[:MAX_INTERVAL_CHARS] + "..."
    if len(text) > MAX_INTERVAL_CHARS or not _DECIMAL.fullmatch(text):
        raise IntervalError(f"interval must be a number of seconds, got {shown!r}")
    seconds = float(text) + 0.0  # "-0" is 0 (not -0.0 in the answer)
    if not math.isfinite(seconds):
        raise IntervalError(f"interval must be a finite number, got {shown!r}")
    if seconds < 0:
        raise IntervalError(f"interval must be >= 0, got {shown!r}")
    if seconds > max_interval_s:
        raise IntervalError(f"interval must be <= {max_interval_s:g} s (max_interval_s), got {shown!r}")
    return seconds
