"""The JSON of the controller's two big answers, ``GET /diagnosis`` and ``GET /connections``: 1.4 and 3.4 MB at
10,000 connections, written with the event loop held. orjson takes a tenth of the standard library's CPU for
the diagnosis's (1.2 against 13.5 ms) and a quarter for the connections' (9 against 34 ms; ``bench/RESULTS.md``,
ninth). Its one import is here."""

from __future__ import annotations

import orjson

# As json.dumps: keys that are not strings (a connection id) written as strings.
_OPTIONS = orjson.OPT_NON_STR_KEYS


def json_text(value: object) -> str:
    """``value`` as compact JSON (no spaces after separators); a float that is not finite is null."""
    return orjson.dumps(value, option=_OPTIONS).decode()
