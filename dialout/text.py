"""Small words both halves write alike: a count with its noun, an address with its port, a time stamp."""

from __future__ import annotations

import datetime
import functools
import re
import time
from dataclasses import dataclass

__all__ = ["Address", "format_address", "plural", "utc_now"]


@dataclass(frozen=True)
class Address:
    """One end of a connection, kept as its parts and written ``ip:port`` (``[ip6]:port``) only when shown."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_address(self.host, self.port)

    @classmethod
    def parse(cls, text: str) -> Address | None:
        """``ip:port`` or ``[ip6]:port`` as a proxy forwards it; None when it is not one."""
        host, _, port = text.rpartition(":")
        host = host.strip("[]")
        return cls(host, int(port)) if host and port.isdigit() else None


def plural(count: int, noun: str) -> str:
    """``1 stream``, ``3 streams``, ``2 switches``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("ch", "sh", "s", "x")) else f"{count} {noun}s"


def format_address(host: str, port: int) -> str:
    """``ip:port``, with an IPv6 address in brackets: the same text on both ends of a connection."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# C0 and C1 controls, DEL, and the backslash that introduces an escape: what must not reach a log line as it is.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def printable(text: str) -> str:
    """``text`` safe for one log line: a control character (a newline that would forge a second line, an ESC that
    would drive the terminal) as ``\\xNN``, and a backslash as ``\\x5c``, so that every escape is ours."""
    return _UNPRINTABLE.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def utc_now() -> str:
    """Now, in UTC, as ISO 8601 to the millisecond: how both halves stamp what they record."""
    return utc_text(time.time())


def utc_text(timestamp: float) -> str:
    """``datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")``, its second's text made once
    a second: the controller stamps every ping twice (2% of its serving CPU under h2load, py-spy)."""
    second, microsecond = divmod(round(timestamp * 1_000_000), 1_000_000)
    return f"{_second_text(second)}.{microsecond // 1000:03d}+00:00"


@functools.lru_cache(maxsize=1)
def _second_text(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
