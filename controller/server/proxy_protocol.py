"""The switch's own address through a TCP balancer (``controller.balancers``): the PROXY protocol's header.

A balancer that passes TLS through (nginx's stream module, ``nginx-conf --stream``; HAProxy in TCP mode; a cloud's
network load balancer) dials the controller from its own address, so every switch would look like the balancer:
the account's peers, and the switch's cross-check, which finds its connection by its own address, could not tell
them apart. The balancer says whose connection it is before the switch's first byte, in HAProxy's PROXY protocol:
version 1 is one line of text (nginx: ``proxy_protocol on;``; HAProxy: ``send-proxy``)::

    PROXY TCP4 203.0.113.7 192.0.2.1 56324 8443\\r\\n

and version 2 the same in binary, after a 12-byte signature (HAProxy: ``send-proxy-v2``; what AWS's NLB sends).

On a connection from a balancer the header is required: one without it is a balancer not set up for it (or not a
balancer), and is closed before TLS, with one line in the log a minute per address saying how to set it up.
``PROXY UNKNOWN`` and version 2's ``LOCAL`` (a balancer's own health check) keep the balancer's address.
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
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # the signature, the version and command, the family and protocol, the length of the rest
V2_MAX_REST = 2048  # addresses and TLVs: a balancer's own extensions (TLS details, a cloud's ids) fit well within
SAY_AGAIN_AFTER_S = 60.0
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Source = tuple[str, int] | None  # the switch's address and port; None: the balancer's own connection
_FAMILIES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}
# Version 2's family and protocol byte, for TCP over IPv4 and IPv6: the address block's size, and the address type.
_V2_TCP = {0x11: (12, ipaddress.IPv4Address), 0x21: (36, ipaddress.IPv6Address)}


class ProxyHeaderError(ConnectionError):
    """No PROXY header, or one that does not parse: the connection is closed before TLS."""


class ProxyHeaders:
    """Reads the PROXY header of connections from ``balancers``; what ``asyncio_seam.read_before_tls`` asks of it."""

    def __init__(self, balancers: Sequence[IPNetwork]) -> None:
        self._balancers = tuple(balancers)
        self._said_at: dict[str, float] = {}

    def applies(self, peername: Any) -> bool:  # noqa: ANN401 - a socket address, whose shape depends on the family
        """Whether a connection from ``peername`` comes through a balancer, and so starts with a PROXY header."""
        try:
            address = ipaddress.ip_address(peername[0])
        except (TypeError, ValueError, IndexError):
            return False
        return any(address in network for network in self._balancers)

    def read(self, peername: Any, data: bytes) -> tuple[int, Source] | None:  # noqa: ANN401 - as in applies
        """The bytes the header takes and the switch's address; None while the header is incomplete. Raises
        ``ProxyHeaderError`` (and says so) when ``data`` does not start with one."""
        try:
            return header(data)
        except ValueError as exc:
            self._refuse(peername, data, str(exc))

    def _refuse(self, peername: Any, data: bytes, reason: str) -> NoReturn:  # noqa: ANN401 - as in applies
        host = str(peername[0])
        now = time.monotonic()
        if now - self._said_at.get(host, -SAY_AGAIN_AFTER_S) >= SAY_AGAIN_AFTER_S:
            self._said_at[host] = now
            logger.warning(
                "closed a connection from %s (controller.balancers) before TLS: %s (it sent %r); a balancer must "
                "send the PROXY protocol's header first (nginx: `proxy_protocol on;` in its stream server, as "
                "`python -m controller nginx-conf --stream` writes it; HAProxy: `send-proxy` or `send-proxy-v2`); "
                "said again for this address in a minute at most",
                host,
                reason,
                data[:24],
            )
        raise ProxyHeaderError(reason)


def header(data: bytes) -> tuple[int, Source] | None:
    """The PROXY header (either version) at the start of ``data``: the bytes it takes and its source; None while
    incomplete. ValueError: ``data`` does not start with one."""
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        return _read_v2(data)
    end = data.find(b"\r\n", 0, MAX_LINE)
    if end >= 0:
        return end + 2, parse(data[:end])
    if len(data) < MAX_LINE and SIGNATURE.startswith(data[: len(SIGNATURE)]):
        return None  # a line's beginning, so far
    raise ValueError("no PROXY header before the TLS ClientHello")


def parse(line: bytes) -> Source:
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


def _read_v2(data: bytes) -> tuple[int, Source] | None:
    """A version 2 header at the start of ``data``: its size and source; None while incomplete."""
    if len(data) < V2_FIXED:
        return None
    rest = int.from_bytes(data[14:16], "big")
    if rest > V2_MAX_REST:
        raise ValueError(f"a PROXY v2 header of {rest} bytes beyond its first 16 (at most {V2_MAX_REST})")
    if len(data) < V2_FIXED + rest:
        return None
    return V2_FIXED + rest, parse_v2(data[12], data[13], data[V2_FIXED : V2_FIXED + rest])


def parse_v2(version_command: int, family_protocol: int, rest: bytes) -> Source:
    """The source of a version 2 header from its 13th and 14th bytes and what follows its length; None for LOCAL,
    or for an address that is not TCP over IP (the balancer's own, the protocol says). ValueError: not one."""
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2 or command not in (0, 1):
        raise ValueError(f"a PROXY v2 header must be version 2, LOCAL or PROXY, got {version_command:#04x}")
    if command == 0 or family_protocol not in _V2_TCP:
        return None
    size, address = _V2_TCP[family_protocol]
    if len(rest) < size:
        raise ValueError(f"a PROXY v2 header's addresses take {size} bytes, it has {len(rest)}")
    half = (size - 4) // 2  # the source's address, then the destination's, then their ports
    port = int.from_bytes(rest[2 * half : 2 * half + 2], "big")
    if port == 0:
        raise ValueError("a PROXY v2 header's source port must be 1 to 65535, got 0")
    return str(address(rest[:half])), port
