"""Small words both halves write alike: a count with its noun, and an address with its port."""

from __future__ import annotations

__all__ = ["format_address", "host_of", "plural"]


def plural(count: int, noun: str) -> str:
    """``1 stream``, ``3 streams``, ``2 switches``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("ch", "sh", "s", "x")) else f"{count} {noun}s"


def format_address(host: str, port: int) -> str:
    """``ip:port``, with an IPv6 address in brackets: the same text on both ends of a connection."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_of(peer: str) -> str:
    """``ip:port`` or ``[ip6]:port`` -> the address alone."""
    return peer.rpartition(":")[0].strip("[]")
