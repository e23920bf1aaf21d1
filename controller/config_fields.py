"""Reading one config value: typed field readers that take ``(value, key_path)`` and return the value or raise
``ConfigError`` naming the key path. Used by ``controller.config``; imports nothing of Quart or Hypercorn."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit

# A switch id becomes a certificate CN, a DNS name in its SAN and a file name in certs/: keep it to what all
# three accept.
_SWITCH_ID = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class ConfigError(Exception):
    """The config is unusable. ``path`` is the YAML key path (``scenarios.seed.pings[2]``); ``location`` is
    ``file:line`` once the loader knows it."""

    def __init__(self, path: str, message: str, location: str | None = None) -> None:
        super().__init__(path, message, location)
        self.path = path
        self.message = message
        self.location = location

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        key = f"{self.path}: " if self.path else ""
        return f"{prefix}{key}{self.message}"


T = TypeVar("T")


def optional(section: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T],
              default: T) -> T:  # fmt: skip
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


def string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"must be a non-empty string, got {_describe(value)}")
    return value


def string_list(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of strings, got {_describe(value)}")
    return tuple(string(item, f"{path}[{index}]") for index, item in enumerate(value))


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


def switch_ids(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"must be a non-empty list of switch ids, got {_describe(value)}")
    return tuple(dict.fromkeys(switch_id_or_pattern(item, f"{path}[{index}]") for index, item in enumerate(value)))


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {_describe(value)}")
    return value


def _is_finite_number(value: object) -> TypeGuard[int | float]:
    # bool is an int in Python, and YAML 1.1 reads `yes`/`on` as true: refuse it explicitly.
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def number_at_least_0(value: object, path: str) -> float:
    if not _is_finite_number(value) or value < 0:
        raise ConfigError(path, f"must be a finite number >= 0, got {_describe(value)}")
    return float(value)


def positive_number(value: object, path: str) -> float:
    if not _is_finite_number(value) or value <= 0:
        raise ConfigError(path, f"must be a finite number > 0, got {_describe(value)}")
    return float(value)


def int_range(low: int, high: int) -> Callable[[object, str], int]:
    def read(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(path, f"must be a whole number from {low} to {high}, got {_describe(value)}")
        return value

    return read


port = int_range(0, 65535)


def number_range(low: float, high: float) -> Callable[[object, str], float]:
    def read(value: object, path: str) -> float:
        if not _is_finite_number(value) or not low <= value <= high:
            raise ConfigError(path, f"must be a number from {low:g} to {high:g}, got {_describe(value)}")
        return float(value)

    return read


def one_of(*choices: str) -> Callable[[object, str], str]:
    def read(value: object, path: str) -> str:
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}, got {_describe(value)}")
        return str(value)

    return read


def check_controller_url(url: str, path: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(path, f"must be an https:// URL (the controller always speaks TLS), got {url!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port lazily, here
    except ValueError as exc:
        raise ConfigError(path, f"has a bad port: {url!r}") from exc


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
