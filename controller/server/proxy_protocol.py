"""The switch's own address through a TCP balancer (``controller.balancers``): the PROXY protocol's line.

A balancer that passes TLS through (nginx's stream module, ``nginx-conf --stream``) dials the controller from its
own address, so every switch would look like the balancer: the account's peers, and the switch's cross-check,
which finds its connection by its own address, could not tell them apart. The balancer says whose connection it
is in one line of text before the switch's first byte (HAProxy's PROXY protocol, version 1; nginx:
``proxy_protocol on;``)::

    PROXY TCP4 203.0.113.7 192.0.2.1 56324 8443\\r\\n

On a connection from a balancer the line is required: one without it is a balancer not set up for it (or not a
balancer), and is closed before TLS, with one line in the log a minute per address saying how to set it up.
``PROXY UNKNOWN`` (a balancer's own health check) keeps the balancer's address.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any, NoReturn

logger = logging.getLogger(__name__)

MAX_LINE = 107  # the longest version 1 line, CRLF included (the protocol's own bound)
SIGNATURE = b"PROXY "
SAY_AGAIN_AFTER_S = 60.0
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_FAMILIES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}


class ProxyLineError(ConnectionError):
    """No PROXY line, or one that does not parse: the connection is closed before TLS."""


class ProxyLines:
    """Reads the PROXY line of connections from ``balancers``; what ``asyncio_seam.read_before_tls`` asks of it."""

    def __init__(self, balancers: Sequence[IPNetwork]) -> None:
        self._balancers = tuple(balancers)
        self._said_at: dict[str, float] = {}

    def applies(self, peername: Any) -> bool:  # noqa: ANN401 - a socket address, whose shape depends on the family
        """Whether a connection from ``peername`` comes through a balancer, and so starts with a PROXY line."""
        try:
            address = ipaddress.ip_address(peername[0])
        except (TypeError, ValueError, IndexError):
            return False
        return any(address in network for network in self._balancers)

    def read(self, peername: Any, data: bytes) -> tuple[int, tuple[str, int] | None] | None:  # noqa: ANN401
        """The bytes the line takes and the switch's address (None: UNKNOWN); None while the line is incomplete.
        Raises ``ProxyLineError`` (and says so) when ``data`` does not start with one."""
        end = data.find(b"\r\n", 0, MAX_LINE)
        if end < 0:
            if len(data) < MAX_LINE and SIGNATURE.startswith(data[: len(SIGNATURE)]):
                return None  # its beginning, so far
            self._refuse(peername, data, "no PROXY line before the TLS ClientHello")
        try:
            return end + 2, parse(data[:end])
        except ValueError as exc:
            self._refuse(peername, data, str(exc))

    def _refuse(self, peername: Any, data: bytes, reason: str) -> NoReturn:  # noqa: ANN401 - as in applies
        host = str(peername[0])
        now = time.monotonic()
        if now - self._said_at.get(host, -SAY_AGAIN_AFTER_S) >= SAY_AGAIN_AFTER_S:
            self._said_at[host] = now
            logger.warning(
                "closed a connection from %s (controller.balancers) before TLS: %s (it sent %r); a balancer must "
                "send the PROXY protocol's line first (nginx: `proxy_protocol on;` in its stream server, as "
                "`python -m controller nginx-conf --stream` writes it); said again for this address in a minute "
                "at most",
                host,
                reason,
                data[:24],
            )
        raise ProxyLineError(reason)


def parse(line: bytes) -> tuple[str, int] | None:
    """The source address of a version 1 line without its CRLF; None for ``PROXY UNKNOWN``. ValueError: not one."""
    words = line.split(b" ")
    if words[:1] != [b"PROXY"] or len(words) < 2:
        raise ValueError(f"not a PROXY line: {line[:24]!r}")
    if words[1] == b"UNKNOWN":
        return None
    family = _FAMILIES.get(words[1])
    if family is None or len(words) != 6:
        raise ValueError(f"a PROXY line must be PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT, got {line!r}")
    source, destination, source_port, destination_port = words[2:]
    try:
        family(source.decode("ascii", "replace"))
        family(destination.decode("ascii", "replace"))
    except ValueError:
        raise ValueError(
            f"a PROXY line's addresses must be of its family ({words[1].decode()}), got {line!r}"
        ) from None
    ports = [int(port) if port.isdigit() and len(port) <= 5 else -1 for port in (source_port, destination_port)]
    if not all(0 < port < 65536 for port in ports):
        raise ValueError(f"a PROXY line's ports must be 1 to 65535, got {line!r}")
    return source.decode("ascii"), ports[0]
