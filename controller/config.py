"""The one config file that drives both halves: schema, strict parsing, and loading with line numbers.

A leaf module: it imports nothing of Quart or Hypercorn, so ``sim_switch`` can use it.

``parse_config`` turns a plain mapping into frozen dataclasses and raises ``ConfigError(path, message)`` for the
first thing it rejects; ``load_config`` reads the YAML file, remembers on which line every key stands, and adds the
file name and line to that error. Unknown keys, wrong types (YAML's ``yes`` is a bool, not a number) and values
out of range are all rejected: a misspelt key that is silently ignored is a scenario that silently tests the wrong
thing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit

import yaml

DEFAULT_PORT = 8443
DEFAULT_MAX_INTERVAL_S = 60.0
DEFAULT_MAX_CONCURRENT_STREAMS = 100
# Hypercorn keeps an RFC 7540 priority tree per connection whose node count is capped at 1000: the 1000th
# concurrent stream kills the whole connection, so the largest value we accept is 999.
MAX_CONCURRENT_STREAMS_LIMIT = 999
# Hypercorn's own default (1000) sends GOAWAY after that many requests on one connection, in the middle of a run:
# a prototype lost 1851 of 20000 pings that way. A switch session is long-lived, so the default is effectively
# "never"; lower it only to test GOAWAY handling.
DEFAULT_KEEP_ALIVE_MAX_REQUESTS = 2**31 - 1
DEFAULT_GRACEFUL_TIMEOUT_S = 20.0
# The request line and headers of one request: larger ones are refused (HTTP/1.1: 431) before they cost memory.
# 16 KiB is Hypercorn's own HTTP/1.1 default, far above what a ping needs.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 90.0
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")

HTTP_VERSIONS = ("HTTP/1.1", "HTTP/2")
# A switch id becomes a certificate CN, a DNS name in its SAN and a file name in certs/: keep it to what all
# three accept.
_SWITCH_ID = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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


@dataclass(frozen=True)
class ControllerConfig:
    host: str = "localhost"
    port: int = DEFAULT_PORT
    certs_dir: Path = Path("certs")
    hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES
    max_interval_s: float = DEFAULT_MAX_INTERVAL_S
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    keep_alive_max_requests: int = DEFAULT_KEEP_ALIVE_MAX_REQUESTS
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    switches: tuple[str, ...] = ("switch-1",)  # the fleet: CNs allowed to dial in
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a switch redials after losing the controller: exponential backoff with jitter (RFC 8071 leaves the
    schedule to the implementation; this is the usual one)."""

    initial_s: float = 0.1
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    give_up_after_s: float = 60.0  # a ping still failing this long after its first try fails for good

    def delay_s(self, attempt: int, unit_random: float) -> float:
        """The wait before redial ``attempt`` (1, 2, ...); ``unit_random`` is uniform in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        return base * (1 + self.jitter * (2 * unit_random - 1))


# A ping is retried only when it is known not to have been processed: it never left the switch, the controller
# refused its stream (RST_STREAM REFUSED_STREAM), or its GOAWAY said so (RFC 9113 sections 6.8 and 8.7).
RETRY_SAFE = "safe"
# Also retry a ping whose connection broke while it was in flight: GET is idempotent (RFC 9110 section 9.2.2).
RETRY_IDEMPOTENT = "idempotent"


@dataclass(frozen=True)
class SwitchConfig:
    switch_id: str = "switch-1"
    controller_url: str = f"https://localhost:{DEFAULT_PORT}"
    certs_dir: Path = Path("certs")
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    reconnect: ReconnectPolicy = ReconnectPolicy()
    retry: str = RETRY_SAFE


@dataclass(frozen=True)
class Expectation:
    """What a scenario must show to pass; ``None`` means "not checked"."""

    connections: int | None = None
    http_version: str | None = None


@dataclass(frozen=True)
class Schedule:
    """A persistent session: a batch of pings every ``every_s``, for ``duration_s`` or until ``count`` pings."""

    every_s: float
    batch: int
    interval_s: float
    duration_s: float | None = None
    count: int | None = None

    def batches(self) -> int:
        if self.count is not None:
            return -(-self.count // self.batch)
        assert self.duration_s is not None
        return max(1, math.ceil(self.duration_s / self.every_s))

    def total_pings(self) -> int:
        return self.count if self.count is not None else self.batches() * self.batch


@dataclass(frozen=True)
class Scenario:
    name: str
    pings_s: tuple[float, ...] = ()  # a one-shot run: these pings, all at once
    persistent: Schedule | None = None  # or a session that stays up
    http2: bool = True
    description: str = ""
    expect: Expectation = Expectation()


@dataclass(frozen=True)
class Config:
    controller: ControllerConfig
    switch: SwitchConfig
    scenarios: tuple[Scenario, ...]

    @property
    def switch_ids(self) -> tuple[str, ...]:
        """Every switch that needs a certificate: the fleet, and the switch this file runs as."""
        return tuple(dict.fromkeys((*self.controller.switches, self.switch.switch_id)))

    def scenario(self, name: str) -> Scenario:
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        known = ", ".join(s.name for s in self.scenarios) or "none"
        raise ConfigError("scenarios", f"no scenario named {name!r} (known: {known})")


# --- loading -------------------------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and parse ``path``. Every failure, from a missing file to a bad value, is a ``ConfigError`` that
    names the file, and the line and key path where it has them."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config: {exc.strerror or exc}", location=str(path)) from exc
    loader = yaml.SafeLoader(text)
    try:
        # What yaml.safe_load does, in two steps: the node tree carries the line numbers.
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"not valid YAML: {problem}", location=where) from exc
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if root is not None:
        try:
            _record_lines(root, "", lines)
        except ConfigError as exc:
            exc.location = f"{path}:{lines.get(exc.path, '?')}"
            raise
    try:
        return parse_config(data if data is not None else {}, base_dir=path.parent)
    except ConfigError as exc:
        exc.location = f"{path}:{_line_of(exc.path, lines)}" if lines else str(path)
        raise


def _record_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Map every key path below ``node`` to its 1-based line; reject duplicate keys, which PyYAML would let the
    last one win silently."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            if child in lines:
                lines[child] = key_node.start_mark.line + 1
                raise ConfigError(child, "duplicate key")
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{path}[{index}]"
            lines[child] = item.start_mark.line + 1
            _record_lines(item, child, lines)


def _line_of(path: str, lines: Mapping[str, int]) -> int | str:
    """The line of ``path``, or of its nearest ancestor that is in the file (a missing key is reported on the
    line of the mapping that should hold it)."""
    while path:
        if path in lines:
            return lines[path]
        path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
    return 1


# --- parsing -------------------------------------------------------------------------------------------------


def parse_config(data: object, base_dir: Path = Path()) -> Config:
    """Turn a mapping (as YAML gives it) into a ``Config``. Relative paths resolve against ``base_dir``, the
    config file's directory, never the working directory."""
    root = _mapping(data, "", {"controller", "switch", "scenarios"})
    controller = _parse_controller(root.get("controller", {}), base_dir)
    switch = _parse_switch(root.get("switch", {}), base_dir, controller)
    if "switches" not in root.get("controller", {}):
        # The fleet defaults to the one switch this file describes, so the demo needs no list.
        controller = replace(controller, switches=(switch.switch_id,))
    scenarios_data = _mapping(root.get("scenarios", {}), "scenarios", None)
    scenarios = tuple(_parse_scenario(name, value, f"scenarios.{name}") for name, value in scenarios_data.items())
    return Config(controller=controller, switch=switch, scenarios=scenarios)


def _parse_controller(data: object, base_dir: Path) -> ControllerConfig:
    path = "controller"
    keys = {
        "host", "port", "certs_dir", "hostnames", "max_interval_s", "max_concurrent_streams",
        "keep_alive_max_requests", "graceful_timeout_s", "switches", "max_header_bytes",
    }  # fmt: skip
    section = _mapping(data, path, keys)
    default = ControllerConfig()
    hostnames = _optional(section, "hostnames", path, _string_list, default.hostnames)
    if not hostnames:
        raise ConfigError(f"{path}.hostnames", "must name at least one hostname for the controller certificate")
    return ControllerConfig(
        host=_optional(section, "host", path, _string, default.host),
        port=_optional(section, "port", path, _port, default.port),
        certs_dir=base_dir / _optional(section, "certs_dir", path, _string, str(default.certs_dir)),
        hostnames=hostnames,
        max_interval_s=_optional(section, "max_interval_s", path, _positive_number, default.max_interval_s),
        max_concurrent_streams=_optional(
            section, "max_concurrent_streams", path, _int_range(1, MAX_CONCURRENT_STREAMS_LIMIT),
            default.max_concurrent_streams,
        ),
        keep_alive_max_requests=_optional(
            section, "keep_alive_max_requests", path, _int_range(1, 2**31 - 1), default.keep_alive_max_requests
        ),
        graceful_timeout_s=_optional(section, "graceful_timeout_s", path, _number_at_least_0,
                                     default.graceful_timeout_s),
        switches=_optional(section, "switches", path, _switch_ids, default.switches),
        max_header_bytes=_optional(section, "max_header_bytes", path, _int_range(1024, 1024 * 1024),
                                   default.max_header_bytes),
    )  # fmt: skip


def _parse_switch(data: object, base_dir: Path, controller: ControllerConfig) -> SwitchConfig:
    path = "switch"
    section = _mapping(data, path, {"id", "controller_url", "certs_dir", "request_timeout_s", "reconnect", "retry"})
    default = SwitchConfig()
    switch_id = _optional(section, "id", path, _switch_id, default.switch_id)
    url = _optional(section, "controller_url", path, _string, f"https://localhost:{controller.port}")
    check_controller_url(url, f"{path}.controller_url")
    return SwitchConfig(
        switch_id=switch_id,
        controller_url=url,
        certs_dir=base_dir / _optional(section, "certs_dir", path, _string, str(default.certs_dir)),
        request_timeout_s=_optional(section, "request_timeout_s", path, _positive_number,
                                    default.request_timeout_s),
        reconnect=_parse_reconnect(section.get("reconnect", {}), f"{path}.reconnect"),
        retry=_optional(section, "retry", path, _one_of(RETRY_SAFE, RETRY_IDEMPOTENT), default.retry),
    )  # fmt: skip


def _parse_reconnect(data: object, path: str) -> ReconnectPolicy:
    section = _mapping(data, path, {"initial_s", "max_s", "multiplier", "jitter", "give_up_after_s"})
    default = ReconnectPolicy()
    policy = ReconnectPolicy(
        initial_s=_optional(section, "initial_s", path, _positive_number, default.initial_s),
        max_s=_optional(section, "max_s", path, _positive_number, default.max_s),
        multiplier=_optional(section, "multiplier", path, _number_range(1, 100), default.multiplier),
        jitter=_optional(section, "jitter", path, _number_range(0, 1), default.jitter),
        give_up_after_s=_optional(section, "give_up_after_s", path, _number_at_least_0, default.give_up_after_s),
    )
    if policy.max_s < policy.initial_s:
        raise ConfigError(f"{path}.max_s", f"must be >= initial_s ({policy.initial_s:g}), got {policy.max_s:g}")
    return policy


def _parse_scenario(name: str, data: object, path: str) -> Scenario:
    if not isinstance(name, str) or not _SCENARIO_NAME.fullmatch(name):
        raise ConfigError(path, f"scenario names are letters, digits, '-' and '_', got {name!r}")
    section = _mapping(data, path, {"description", "pings", "persistent", "http2", "expect"})
    if ("pings" in section) == ("persistent" in section):
        raise ConfigError(
            f"{path}.pings",
            "give either pings (a one-shot run, e.g. [5, 10, 15]) or persistent (a session), not "
            + ("both" if "pings" in section else "neither"),
        )
    intervals: tuple[float, ...] = ()
    schedule = None
    if "pings" in section:
        pings = section["pings"]
        if not isinstance(pings, list) or not pings:
            raise ConfigError(f"{path}.pings", f"must be a non-empty list of intervals in seconds, got {pings!r}")
        intervals = tuple(_number_at_least_0(value, f"{path}.pings[{index}]") for index, value in enumerate(pings))
    else:
        schedule = _parse_schedule(section["persistent"], f"{path}.persistent")
    expect_data = _mapping(section.get("expect", {}), f"{path}.expect", {"connections", "http_version"})
    expect = Expectation(
        connections=_optional(expect_data, "connections", f"{path}.expect", _int_range(1, 1_000_000), None),
        http_version=_optional(expect_data, "http_version", f"{path}.expect", _http_version, None),
    )
    return Scenario(
        name=name,
        pings_s=intervals,
        persistent=schedule,
        http2=_optional(section, "http2", path, _bool, True),
        description=_optional(section, "description", path, _string, ""),
        expect=expect,
    )


def _parse_schedule(data: object, path: str) -> Schedule:
    section = _mapping(data, path, {"duration_s", "count", "every_s", "batch", "interval_s"})
    if ("duration_s" in section) == ("count" in section):
        raise ConfigError(f"{path}.duration_s", "give either duration_s (seconds) or count (pings in all), not "
                          + ("both" if "count" in section else "neither"))  # fmt: skip
    for key in ("every_s", "interval_s"):
        if key not in section:
            raise ConfigError(f"{path}.{key}", "missing")
    return Schedule(
        every_s=_positive_number(section["every_s"], f"{path}.every_s"),
        batch=_optional(section, "batch", path, _int_range(1, 10_000), 1),
        interval_s=_number_at_least_0(section["interval_s"], f"{path}.interval_s"),
        duration_s=_optional(section, "duration_s", path, _positive_number, None),
        count=_optional(section, "count", path, _int_range(1, 10_000_000), None),
    )


# --- typed field readers: each takes (value, path) and returns the value or raises ConfigError ---------------

T = TypeVar("T")


def _optional(section: Mapping[str, object], key: str, path: str, read: Callable[[object, str], T],
              default: T) -> T:  # fmt: skip
    if key not in section:
        return default
    return read(section[key], f"{path}.{key}")


def _mapping(value: object, path: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, got {_describe(value)}")
    if allowed is not None:
        unknown = sorted(str(key) for key in value if key not in allowed)
        if unknown:
            child = f"{path}.{unknown[0]}" if path else unknown[0]
            raise ConfigError(child, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"must be a non-empty string, got {_describe(value)}")
    return value


def _string_list(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of strings, got {_describe(value)}")
    return tuple(_string(item, f"{path}[{index}]") for index, item in enumerate(value))


def _switch_id(value: object, path: str) -> str:
    switch_id = _string(value, path)
    if not _SWITCH_ID.fullmatch(switch_id):
        raise ConfigError(path, f"must be a DNS-style name (letters, digits, '-', '.'), got {switch_id!r}")
    return switch_id


def _switch_ids(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"must be a non-empty list of switch ids, got {_describe(value)}")
    return tuple(dict.fromkeys(_switch_id(item, f"{path}[{index}]") for index, item in enumerate(value)))


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {_describe(value)}")
    return value


def _is_finite_number(value: object) -> TypeGuard[int | float]:
    # bool is an int in Python, and YAML 1.1 reads `yes`/`on` as true: refuse it explicitly.
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _number_at_least_0(value: object, path: str) -> float:
    if not _is_finite_number(value) or value < 0:
        raise ConfigError(path, f"must be a finite number >= 0, got {_describe(value)}")
    return float(value)


def _positive_number(value: object, path: str) -> float:
    if not _is_finite_number(value) or value <= 0:
        raise ConfigError(path, f"must be a finite number > 0, got {_describe(value)}")
    return float(value)


def _int_range(low: int, high: int) -> Callable[[object, str], int]:
    def read(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(path, f"must be a whole number from {low} to {high}, got {_describe(value)}")
        return value

    return read


_port = _int_range(0, 65535)


def _number_range(low: float, high: float) -> Callable[[object, str], float]:
    def read(value: object, path: str) -> float:
        if not _is_finite_number(value) or not low <= value <= high:
            raise ConfigError(path, f"must be a number from {low:g} to {high:g}, got {_describe(value)}")
        return float(value)

    return read


def _one_of(*choices: str) -> Callable[[object, str], str]:
    def read(value: object, path: str) -> str:
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}, got {_describe(value)}")
        return str(value)

    return read


_http_version = _one_of(*HTTP_VERSIONS)


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
