"""Reading one config value: typed field readers that take ``(value, key_path)`` and return the value or raise
``ConfigError`` naming the key path. Used by ``dialout.config``; imports nothing of Quart or Hypercorn."""

from __future__ import annotations

import ipaddress
import math
import re
import weakref
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeGuard, TypeVar
from urllib.parse import urlsplit

from dialout.errors import ConfigError

# A switch id becomes a certificate CN, a DNS name in its SAN and a file name in certs/: keep it to what all
# three accept.
_SWITCH_ID = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)

# RFC 9110 section 5.6.2: what a method or a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
R = TypeVar("R", bound=Callable[[object, str], object])

# What each reader takes, in words: the configuration reference's "type" column (docs/reference/config.md).
_KINDS: weakref.WeakKeyDictionary[Callable[[object, str], object], str] = weakref.WeakKeyDictionary()


def kind_of(read: Callable[[object, str], object]) -> str:
    """What a value read by ``read`` must be, in a few words; a reader without words is a ``KeyError``."""
    return _KINDS[read]


def _kind(words: str) -> Callable[[R], R]:
    def mark(read: R) -> R:
        _KINDS[read] = words
        return read

    return mark


def optional(section: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T], default: T) -> T:
    if key not in section:
        return default
    return read(section[key], f"{path}.{key}")


def mapping(value: object, path: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, got {_describe(value)}")
    if allowed is not None:
        unknown = sorted(str(key) for key in value if key not in allowed)
        if unknown:
            child = f"{path}.{unknown[0]}" if path else unknown[0]
            raise ConfigError(child, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


@_kind("string")
def string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"must be a non-empty string, got {_describe(value)}")
    return value


@_kind("list of strings")
def string_list(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of strings, got {_describe(value)}")
    return tuple(string(item, f"{path}[{index}]") for index, item in enumerate(value))


@_kind("switch id (a DNS label or name)")
def switch_id(value: object, path: str) -> str:
    switch_id = string(value, path)
    if not _SWITCH_ID.fullmatch(switch_id):
        raise ConfigError(path, f"must be a DNS-style name (letters, digits, '-', '.'), got {switch_id!r}")
    return switch_id


def switch_id_or_pattern(value: object, path: str) -> str:
    """A switch id, or a shell-style pattern of them (``fleet-*``) that a fleet's generated ids match."""
    text = string(value, path)
    if "*" in text and _SWITCH_ID.fullmatch(text.replace("*", "x")):
        return text
    return switch_id(text, path)


@_kind("list of switch ids or patterns")
def switch_ids(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"must be a non-empty list of switch ids, got {_describe(value)}")
    return tuple(dict.fromkeys(switch_id_or_pattern(item, f"{path}[{index}]") for index, item in enumerate(value)))


@_kind("list of CNs or patterns")
def names(value: object, path: str) -> tuple[str, ...]:
    """A list, possibly empty, of certificate CNs or patterns of them (``ops-*``)."""
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of names, got {_describe(value)}")
    return tuple(dict.fromkeys(switch_id_or_pattern(item, f"{path}[{index}]") for index, item in enumerate(value)))


@_kind("true or false")
def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {_describe(value)}")
    return value


def _is_finite_number(value: object) -> TypeGuard[int | float]:
    # bool is an int in Python, and YAML 1.1 reads `yes`/`on` as true: refuse it explicitly.
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


@_kind("number >= 0")
def number_at_least_0(value: object, path: str) -> float:
    if not _is_finite_number(value) or value < 0:
        raise ConfigError(path, f"must be a finite number >= 0, got {_describe(value)}")
    return float(value)


@_kind("number > 0")
def positive_number(value: object, path: str) -> float:
    if not _is_finite_number(value) or value <= 0:
        raise ConfigError(path, f"must be a finite number > 0, got {_describe(value)}")
    return float(value)


def int_range(low: int, high: int) -> Callable[[object, str], int]:
    def read(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(path, f"must be a whole number from {low} to {high}, got {_describe(value)}")
        return value

    _KINDS[read] = f"whole number, {low:,} to {high:,}"
    return read


port = int_range(0, 65535)


def number_range(low: float, high: float) -> Callable[[object, str], float]:
    def read(value: object, path: str) -> float:
        if not _is_finite_number(value) or not low <= value <= high:
            raise ConfigError(path, f"must be a number from {low:g} to {high:g}, got {_describe(value)}")
        return float(value)

    _KINDS[read] = f"number, {low:g} to {high:g}"
    return read


def choice(enum: type[E]) -> Callable[[object, str], E]:
    """One of a StrEnum's values, read as its member."""

    def read(value: object, path: str) -> E:
        if isinstance(value, str) and value in {member.value for member in enum}:
            return enum(value)
        allowed = ", ".join(member.value for member in enum)
        raise ConfigError(path, f"must be one of {allowed}, got {_describe(value)}")

    _KINDS[read] = "one of " + ", ".join(f"`{member.value}`" for member in enum)
    return read


def one_of(*choices: str) -> Callable[[object, str], str]:
    def read(value: object, path: str) -> str:
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}, got {_describe(value)}")
        return str(value)

    _KINDS[read] = "one of " + ", ".join(f"`{choice}`" for choice in choices)
    return read


def check_controller_url(url: str, path: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(path, f"must be an https:// URL (or http:// for a cleartext listener), got {url!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port lazily, here
    except ValueError as exc:
        raise ConfigError(path, f"has a bad port: {url!r}") from exc


@_kind("path")
def file_path(value: object, path: str) -> Path:
    return Path(string(value, path))


@_kind("`auto`, or an integer 1 to 256")
def worker_count(value: object, path: str) -> int | Literal["auto"]:
    """``auto`` (one per core), or how many."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(path, f"must be auto or an integer from 1 to {MAX_WORKERS}, got {_describe(value)}")
    return value


MAX_WORKERS = 256


@_kind("path, `postgresql://` URL, or null")
def account_store(value: object, path: str) -> Path | str | None:
    """An SQLite file (a path), a PostgreSQL server (its URL, kept as it is), or none (null)."""
    if value is None:
        return None
    text = string(value, path)
    if text.startswith(("postgresql://", "postgres://")):
        return text
    if "://" in text:
        raise ConfigError(path, f"must be a path or a postgresql:// URL, got {text!r}")
    return Path(text)


def proxy_identity(value: object, path: str) -> str:
    """A trusted proxy: the CN of its client certificate, or the address (or network) it connects from."""
    text = string(value, path)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return switch_id(text, path)
    if network.prefixlen == 0:  # every address may then say which switch it forwards for
        raise ConfigError(path, f"{text} trusts every address; name the proxy's own address or network")
    return str(network)


@_kind("list of CNs or addresses")
def proxy_identities(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of certificate CNs or addresses, got {_describe(value)}")
    return tuple(dict.fromkeys(proxy_identity(item, f"{path}[{index}]") for index, item in enumerate(value)))


@_kind("list of addresses")
def networks(value: object, path: str) -> tuple[str, ...]:
    """Addresses or networks (``10.0.0.7``, ``10.0.0.0/24``), each once; not every address at once."""
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of addresses or networks, got {_describe(value)}")
    found: dict[str, None] = {}
    for index, item in enumerate(value):
        text = string(item, f"{path}[{index}]")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"{path}[{index}]", f"must be an address or a network, got {text!r}") from None
        if network.prefixlen == 0:
            raise ConfigError(f"{path}[{index}]", f"{text} is every address; name the balancer's own")
        found[str(network)] = None
    return tuple(found)


@_kind("HTTP method")
def http_method(value: object, path: str) -> str:
    method = string(value, path)
    if not _TOKEN.fullmatch(method):
        raise ConfigError(path, f"must be an HTTP method such as GET or POST, got {method!r}")
    return method.upper()


@_kind("request target")
def request_path(value: object, path: str) -> str:
    """A request target with optional placeholders: ``{interval}``, the ping's interval, and ``{n}``, its number
    in the run (``/ping?interval={interval}&n={n}``: each ping a target of its own, so a controller can tell a
    retry from the next ping)."""
    text = string(value, path)
    if not text.startswith("/"):
        raise ConfigError(path, f"must start with '/', got {text!r}")
    try:
        text.format(interval="1", n="1")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(path, f"may hold {{interval}} and {{n}} and nothing else in braces, got {text!r}") from exc
    return text


@_kind("mapping of header names to values")
def headers(value: object, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping of header names to values, got {_describe(value)}")
    pairs: list[tuple[str, str]] = []
    for name, text in value.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigError(f"{path}.{name}", "is not a valid header name")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ConfigError(f"{path}.{name}", f"must be a one-line string, got {_describe(text)}")
        pairs.append((name, text))
    return tuple(pairs)


@_kind("list of HTTP statuses")
def statuses(value: object, path: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"must be a non-empty list of HTTP statuses, got {_describe(value)}")
    read = int_range(100, 599)
    return tuple(dict.fromkeys(read(item, f"{path}[{index}]") for index, item in enumerate(value)))


@_kind("string")
def optional_string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"{value!r} (a YAML boolean: yes/no/on/off/true/false)"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict | list):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return repr(value)
