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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from controller import config_fields as field
from controller.config_fields import ConfigError, check_controller_url

__all__ = [
    "HTTP_VERSIONS", "RETRY_IDEMPOTENT", "RETRY_SAFE", "Config", "ConfigError", "ControllerConfig", "Expectation",
    "ReconnectPolicy", "Scenario", "Schedule", "SwitchConfig", "check_controller_url", "load_config", "parse_config",
]  # fmt: skip

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
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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
    switches: tuple[str, ...] = ("switch-1",)  # the fleet: CNs allowed to dial in, or patterns of them (fleet-*)
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    # Bench mode only (h2load cannot present a client certificate, nghttp2 issue #1479): a connection without one is
    # served as an anonymous switch. Never read from config.yaml; the CLI allows it on loopback addresses only.
    client_certs_optional: bool = False


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
class Fleet:
    """Many switches at once, each with its own certificate, client and connection, each sending ``pings``
    concurrent pings of ``interval_s``; their starts spread over ``ramp_up_s``."""

    switches: int
    id_pattern: str  # str.format with n = 1, 2, ...: "fleet-{n:04d}"
    pings: int
    interval_s: float
    ramp_up_s: float = 0.0

    def switch_ids(self) -> list[str]:
        return [self.id_pattern.format(n=n) for n in range(1, self.switches + 1)]


@dataclass(frozen=True)
class Scenario:
    name: str
    pings_s: tuple[float, ...] = ()  # a one-shot run: these pings, all at once
    persistent: Schedule | None = None  # or a session that stays up
    fleet: Fleet | None = None  # or many switches at once
    http2: bool = True
    streams: str = "queue"  # a full connection: wait for a free stream (queue) or open another (spill)
    description: str = ""
    expect: Expectation = Expectation()


@dataclass(frozen=True)
class Config:
    controller: ControllerConfig
    switch: SwitchConfig
    scenarios: tuple[Scenario, ...]

    @property
    def switch_ids(self) -> tuple[str, ...]:
        """Every switch that needs a certificate: the fleet (not its patterns), and the switch this file runs as.
        A fleet scenario's generated ids get theirs when it runs."""
        listed = (switch for switch in self.controller.switches if "*" not in switch)
        return tuple(dict.fromkeys((*listed, self.switch.switch_id)))

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
    root = field.mapping(data, "", {"controller", "switch", "scenarios"})
    controller = _parse_controller(root.get("controller", {}), base_dir)
    switch = _parse_switch(root.get("switch", {}), base_dir, controller)
    if "switches" not in root.get("controller", {}):
        # The fleet defaults to the one switch this file describes, so the demo needs no list.
        controller = replace(controller, switches=(switch.switch_id,))
    scenarios_data = field.mapping(root.get("scenarios", {}), "scenarios", None)
    scenarios = tuple(_parse_scenario(name, value, f"scenarios.{name}") for name, value in scenarios_data.items())
    return Config(controller=controller, switch=switch, scenarios=scenarios)


def _parse_controller(data: object, base_dir: Path) -> ControllerConfig:
    path = "controller"
    keys = {
        "host", "port", "certs_dir", "hostnames", "max_interval_s", "max_concurrent_streams",
        "keep_alive_max_requests", "graceful_timeout_s", "switches", "max_header_bytes",
    }  # fmt: skip
    section = field.mapping(data, path, keys)
    default = ControllerConfig()
    hostnames = field.optional(section, "hostnames", path, field.string_list, default.hostnames)
    if not hostnames:
        raise ConfigError(f"{path}.hostnames", "must name at least one hostname for the controller certificate")
    return ControllerConfig(
        host=field.optional(section, "host", path, field.string, default.host),
        port=field.optional(section, "port", path, field.port, default.port),
        certs_dir=base_dir / field.optional(section, "certs_dir", path, field.string, str(default.certs_dir)),
        hostnames=hostnames,
        max_interval_s=field.optional(section, "max_interval_s", path, field.positive_number, default.max_interval_s),
        max_concurrent_streams=field.optional(
            section, "max_concurrent_streams", path, field.int_range(1, MAX_CONCURRENT_STREAMS_LIMIT),
            default.max_concurrent_streams,
        ),
        keep_alive_max_requests=field.optional(
            section, "keep_alive_max_requests", path, field.int_range(1, 2**31 - 1), default.keep_alive_max_requests
        ),
        graceful_timeout_s=field.optional(section, "graceful_timeout_s", path, field.number_at_least_0,
                                     default.graceful_timeout_s),
        switches=field.optional(section, "switches", path, field.switch_ids, default.switches),
        max_header_bytes=field.optional(section, "max_header_bytes", path, field.int_range(1024, 1024 * 1024),
                                   default.max_header_bytes),
    )  # fmt: skip


def _parse_switch(data: object, base_dir: Path, controller: ControllerConfig) -> SwitchConfig:
    path = "switch"
    section = field.mapping(
        data, path, {"id", "controller_url", "certs_dir", "request_timeout_s", "reconnect", "retry"}
    )
    default = SwitchConfig()
    switch_id = field.optional(section, "id", path, field.switch_id, default.switch_id)
    url = field.optional(section, "controller_url", path, field.string, f"https://localhost:{controller.port}")
    check_controller_url(url, f"{path}.controller_url")
    return SwitchConfig(
        switch_id=switch_id,
        controller_url=url,
        certs_dir=base_dir / field.optional(section, "certs_dir", path, field.string, str(default.certs_dir)),
        request_timeout_s=field.optional(section, "request_timeout_s", path, field.positive_number,
                                    default.request_timeout_s),
        reconnect=_parse_reconnect(section.get("reconnect", {}), f"{path}.reconnect"),
        retry=field.optional(section, "retry", path, field.one_of(RETRY_SAFE, RETRY_IDEMPOTENT), default.retry),
    )  # fmt: skip


def _parse_reconnect(data: object, path: str) -> ReconnectPolicy:
    section = field.mapping(data, path, {"initial_s", "max_s", "multiplier", "jitter", "give_up_after_s"})
    default = ReconnectPolicy()
    policy = ReconnectPolicy(
        initial_s=field.optional(section, "initial_s", path, field.positive_number, default.initial_s),
        max_s=field.optional(section, "max_s", path, field.positive_number, default.max_s),
        multiplier=field.optional(section, "multiplier", path, field.number_range(1, 100), default.multiplier),
        jitter=field.optional(section, "jitter", path, field.number_range(0, 1), default.jitter),
        give_up_after_s=field.optional(
            section, "give_up_after_s", path, field.number_at_least_0, default.give_up_after_s
        ),
    )
    if policy.max_s < policy.initial_s:
        raise ConfigError(f"{path}.max_s", f"must be >= initial_s ({policy.initial_s:g}), got {policy.max_s:g}")
    return policy


def _parse_scenario(name: str, data: object, path: str) -> Scenario:
    if not isinstance(name, str) or not _SCENARIO_NAME.fullmatch(name):
        raise ConfigError(path, f"scenario names are letters, digits, '-' and '_', got {name!r}")
    section = field.mapping(data, path, {"description", "pings", "persistent", "fleet", "http2", "streams", "expect"})
    kinds = [kind for kind in ("pings", "persistent", "fleet") if kind in section]
    if len(kinds) != 1:
        raise ConfigError(
            f"{path}.{kinds[1] if kinds[1:] else 'pings'}",
            "give one of pings (a one-shot run, e.g. [5, 10, 15]), persistent (a session) or fleet (many switches), "
            + (f"not {' and '.join(kinds)}" if kinds else "got none"),
        )
    intervals: tuple[float, ...] = ()
    schedule = None
    fleet = _parse_fleet(section["fleet"], f"{path}.fleet") if "fleet" in section else None
    if "pings" in section:
        pings = section["pings"]
        if isinstance(pings, dict):  # {count: 1000, interval_s: 1}: many pings of one interval
            many = field.mapping(pings, f"{path}.pings", {"count", "interval_s"})
            for key in ("count", "interval_s"):
                if key not in many:
                    raise ConfigError(f"{path}.pings.{key}", "missing")
            count = field.int_range(1, 100_000)(many["count"], f"{path}.pings.count")
            pings = [field.number_at_least_0(many["interval_s"], f"{path}.pings.interval_s")] * count
        if not isinstance(pings, list) or not pings:
            raise ConfigError(
                f"{path}.pings",
                f"must be a non-empty list of intervals in seconds, or {{count, interval_s}}, got {pings!r}",
            )
        intervals = tuple(field.number_at_least_0(value, f"{path}.pings[{index}]") for index, value in enumerate(pings))
    elif "persistent" in section:
        schedule = _parse_schedule(section["persistent"], f"{path}.persistent")
    expect_data = field.mapping(section.get("expect", {}), f"{path}.expect", {"connections", "http_version"})
    expect = Expectation(
        connections=field.optional(expect_data, "connections", f"{path}.expect", field.int_range(1, 1_000_000), None),
        http_version=field.optional(expect_data, "http_version", f"{path}.expect", _http_version, None),
    )
    return Scenario(
        name=name,
        pings_s=intervals,
        persistent=schedule,
        fleet=fleet,
        http2=field.optional(section, "http2", path, field.boolean, True),
        streams=field.optional(section, "streams", path, field.one_of("queue", "spill"), "queue"),
        description=field.optional(section, "description", path, field.string, ""),
        expect=expect,
    )


def _parse_schedule(data: object, path: str) -> Schedule:
    section = field.mapping(data, path, {"duration_s", "count", "every_s", "batch", "interval_s"})
    if ("duration_s" in section) == ("count" in section):
        raise ConfigError(f"{path}.duration_s", "give either duration_s (seconds) or count (pings in all), not "
                          + ("both" if "count" in section else "neither"))  # fmt: skip
    for key in ("every_s", "interval_s"):
        if key not in section:
            raise ConfigError(f"{path}.{key}", "missing")
    return Schedule(
        every_s=field.positive_number(section["every_s"], f"{path}.every_s"),
        batch=field.optional(section, "batch", path, field.int_range(1, 10_000), 1),
        interval_s=field.number_at_least_0(section["interval_s"], f"{path}.interval_s"),
        duration_s=field.optional(section, "duration_s", path, field.positive_number, None),
        count=field.optional(section, "count", path, field.int_range(1, 10_000_000), None),
    )


def _parse_fleet(data: object, path: str) -> Fleet:
    section = field.mapping(data, path, {"switches", "id_pattern", "pings", "interval_s", "ramp_up_s"})
    for key in ("switches", "pings", "interval_s"):
        if key not in section:
            raise ConfigError(f"{path}.{key}", "missing")
    fleet = Fleet(
        switches=field.int_range(1, 100_000)(section["switches"], f"{path}.switches"),
        id_pattern=field.optional(section, "id_pattern", path, field.string, "fleet-{n:04d}"),
        pings=field.int_range(1, 10_000)(section["pings"], f"{path}.pings"),
        interval_s=field.number_at_least_0(section["interval_s"], f"{path}.interval_s"),
        ramp_up_s=field.optional(section, "ramp_up_s", path, field.number_at_least_0, 0.0),
    )
    try:
        ids = {fleet.id_pattern.format(n=1), fleet.id_pattern.format(n=2)}
        for generated in ids:
            field.switch_id(generated, f"{path}.id_pattern")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{path}.id_pattern", f"must be a str.format pattern of n, e.g. 'fleet-{{n:04d}}': {exc}"
        ) from exc
    if len(ids) < 2:
        raise ConfigError(f"{path}.id_pattern", "must contain {n}, so that every switch gets its own id")
    return fleet


_http_version = field.one_of(*HTTP_VERSIONS)
