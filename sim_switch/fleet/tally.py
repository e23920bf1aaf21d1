"""A fleet's run reduced to what adds up: counts, HDR histograms and tallies by kind. One process's run (a whole
fleet, a shard of it, or a worker's part) makes one; tallies merge into the fleet's exactly, and the fleet's
summary, verdict and ``--json`` are drawn from a tally, so one run and a merged one read the same.

``tally_json`` / ``tally_from_json`` carry one between processes and machines (``--json``'s ``tally`` field).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dialout.config import Fleet
from dialout.errors import DialoutError
from dialout.pages import Page
from sim_switch.fleet.histograms import Histogram
from sim_switch.fleet.run import FleetResult, Shard, parse_shard
from sim_switch.model.failures import FailureKind

# A merge refuses tallies of another shape. 2: the controllers as a list, failed pings by (kind, status).
TALLY_VERSION = 2

# A kind of failed ping: its kind, and for HTTP_STATUS the status.
ErrorKey = tuple[FailureKind, int | None]


class MergeError(DialoutError):
    """Tallies that are not parts of one fleet run; the message says which field differs, and where."""

    page = Page.FLEETS


@dataclass(frozen=True)
class FleetTally:
    scenario: str
    controllers: tuple[str, ...]  # where the fleet's switches dialled
    http2: bool
    fleet_switches: int  # the whole fleet's, whichever part of it this is
    pings_per_switch: int
    interval_s: float
    shards: tuple[Shard, ...]  # the parts this is made of; () for a whole fleet run in one process
    switches: int
    sent: int
    answered_ok: int
    started_at: float  # epoch seconds: parts on several machines line up on the wall clock
    ended_at: float
    cpu_s: float  # CPU time of the processes that ran the switches
    latency: Histogram
    overhead: Histogram
    handshake: Histogram
    errors: dict[ErrorKey, int] = field(default_factory=dict)  # failed pings by kind, most first
    connections_per_switch: dict[int, int] = field(default_factory=dict)  # connections -> switches
    # controller URL -> {"switches", "sent", "answered_ok"}: how the fleet spread over switch.controllers
    by_controller: dict[str, dict[str, int]] = field(default_factory=dict)
    processes: int = 1  # that ran the switches: cpu_s is theirs together

    @property
    def failed(self) -> int:
        return self.sent - self.answered_ok

    @property
    def wall_time_s(self) -> float:
        return self.ended_at - self.started_at

    @property
    def missing_shards(self) -> tuple[Shard, ...]:
        """The shards of the fleet's partition that are not in it (none for a run of the whole fleet)."""
        if not self.shards:
            return ()
        count = self.shards[0].count
        have = {shard.index for shard in self.shards}
        return tuple(Shard(index, count) for index in range(count) if index not in have)


def tally(result: FleetResult) -> FleetTally:
    """The tally of one process's fleet run."""
    fleet = result.scenario.kind
    assert isinstance(fleet, Fleet), "run_fleet runs fleets only"
    pings = [ping for _, run in result.runs for ping in run.pings]
    answered = [ping for ping in pings if ping.ok]
    handshakes = [c.handshake_s for _, run in result.runs for c in run.connections if c.handshake_s is not None]
    return FleetTally(
        scenario=result.scenario.name,
        controllers=tuple(result.controllers),
        http2=result.scenario.http2,
        fleet_switches=fleet.switches,
        pings_per_switch=fleet.pings,
        interval_s=fleet.interval_s,
        shards=(result.shard,) if result.shard else (),
        switches=len(result.runs),
        sent=len(pings),
        answered_ok=len(answered),
        started_at=result.started_at,
        ended_at=result.started_at + result.wall_time_s,
        cpu_s=result.cpu_s,
        latency=Histogram(ping.elapsed_s for ping in answered),
        overhead=Histogram(ping.elapsed_s - ping.interval_s for ping in answered),
        handshake=Histogram(handshakes),
        errors=_most_first(Counter((p.failure.kind, p.failure.status) for p in pings if p.failure is not None)),
        connections_per_switch=dict(Counter(len(run.connections) for _, run in result.runs)),
        by_controller=_by_controller(result),
    )


def _by_controller(result: FleetResult) -> dict[str, dict[str, int]]:
    shares = {url: Counter[str]() for url in result.controllers}
    for _, run in result.runs:
        share = shares.setdefault(run.controller_url, Counter())
        share.update(switches=1, sent=len(run.pings), answered_ok=sum(ping.ok for ping in run.pings))
    return {url: {key: share[key] for key in _SHARE} for url, share in shares.items()}


_SHARE = ("switches", "sent", "answered_ok")


# What must be the same in every part of one fleet run, and the plain fields a part carries beside.
_SAME = ("scenario", "http2", "fleet_switches", "pings_per_switch", "interval_s")
_CARRIED = ("switches", "sent", "answered_ok", "started_at", "ended_at", "cpu_s", "processes")


def _refuse_mixed(parts: list[FleetTally]) -> None:
    """MergeError unless ``parts`` are distinct shards of one partition of one fleet run."""
    if not parts:
        raise MergeError("nothing to merge")
    first = parts[0]
    for part in parts[1:]:
        for name in _SAME:
            if getattr(part, name) != getattr(first, name):
                raise MergeError(
                    f"not parts of one fleet run: {name} is {getattr(first, name)!r} in one and "
                    f"{getattr(part, name)!r} in another"
                )
    shards = [shard for part in parts for shard in part.shards]
    if len(parts) > 1 and any(not part.shards for part in parts):
        raise MergeError("a run of the whole fleet cannot be merged with anything: it has every switch already")
    repeated = sorted({str(shard) for shard in shards if shards.count(shard) > 1})
    if repeated:
        raise MergeError(f"shard {', '.join(repeated)} given more than once")
    counts = sorted({shard.count for shard in shards})
    if len(counts) > 1:
        raise MergeError(f"shards of different partitions (of {' and of '.join(map(str, counts))}): they overlap")


def merge(parts: Iterable[FleetTally]) -> FleetTally:
    """One tally of the parts of a fleet run: counts and histograms add, the run spans from the first start to the
    last end. Refuses parts of different runs, and a shard given twice."""
    parts = list(parts)
    _refuse_mixed(parts)
    first = parts[0]
    shards = [shard for part in parts for shard in part.shards]
    latency, overhead, handshake = Histogram(), Histogram(), Histogram()
    for part in parts:
        latency.add(part.latency)
        overhead.add(part.overhead)
        handshake.add(part.handshake)
    controllers = sorted({url for part in parts for url in part.controllers})
    by_controller: dict[str, Counter[str]] = {}
    for part in parts:
        for url, share in part.by_controller.items():
            by_controller.setdefault(url, Counter()).update(share)
    return FleetTally(
        scenario=first.scenario,
        controllers=tuple(controllers),
        http2=first.http2,
        fleet_switches=first.fleet_switches,
        pings_per_switch=first.pings_per_switch,
        interval_s=first.interval_s,
        shards=tuple(sorted(shards, key=lambda shard: (shard.count, shard.index))),
        switches=sum(part.switches for part in parts),
        sent=sum(part.sent for part in parts),
        answered_ok=sum(part.answered_ok for part in parts),
        started_at=min(part.started_at for part in parts),
        ended_at=max(part.ended_at for part in parts),
        cpu_s=sum(part.cpu_s for part in parts),
        latency=latency,
        overhead=overhead,
        handshake=handshake,
        errors=_most_first(sum((Counter(part.errors) for part in parts), Counter())),
        connections_per_switch=dict(sum((Counter(part.connections_per_switch) for part in parts), Counter())),
        by_controller={url: {key: share[key] for key in _SHARE} for url, share in sorted(by_controller.items())},
        processes=sum(part.processes for part in parts),
    )


def tally_json(part: FleetTally) -> dict[str, Any]:
    """Everything a merge needs, histograms in HdrHistogram's compressed base64 form."""
    return {
        "version": TALLY_VERSION,
        **{name: getattr(part, name) for name in (*_SAME, *_CARRIED)},
        "controllers": list(part.controllers),
        "shards": [str(shard) for shard in part.shards],
        "histograms": {name: getattr(part, name).encode() for name in ("latency", "overhead", "handshake")},
        "errors": [[kind.value, status, count] for (kind, status), count in part.errors.items()],
        "connections_per_switch": {str(k): v for k, v in sorted(part.connections_per_switch.items())},
        "by_controller": part.by_controller,
    }


def tally_from_json(data: object, where: str) -> FleetTally:
    """A tally from ``tally_json``'s form; ``MergeError`` naming ``where`` (a file) and the field if it is not
    one."""
    if not isinstance(data, Mapping) or data.get("version") != TALLY_VERSION:
        raise MergeError(f"{where}: no fleet tally of version {TALLY_VERSION} (run the shard with --json)")
    try:
        histograms = data["histograms"]
        return FleetTally(
            scenario=str(data["scenario"]),
            controllers=tuple(str(url) for url in data["controllers"]),
            http2=bool(data["http2"]),
            fleet_switches=int(data["fleet_switches"]),
            pings_per_switch=int(data["pings_per_switch"]),
            interval_s=float(data["interval_s"]),
            shards=tuple(parse_shard(text) for text in data["shards"]),
            switches=int(data["switches"]),
            sent=int(data["sent"]),
            answered_ok=int(data["answered_ok"]),
            started_at=float(data["started_at"]),
            ended_at=float(data["ended_at"]),
            cpu_s=float(data["cpu_s"]),
            latency=Histogram.decode(histograms["latency"]),
            overhead=Histogram.decode(histograms["overhead"]),
            handshake=Histogram.decode(histograms["handshake"]),
            errors={
                (FailureKind(kind), None if status is None else int(status)): int(count)
                for kind, status, count in data["errors"]
            },
            connections_per_switch={int(k): int(v) for k, v in data["connections_per_switch"].items()},
            by_controller=_read_shares(data.get("by_controller", {})),
            processes=int(data.get("processes", 1)),
        )
    except KeyError as exc:
        raise MergeError(f"{where}: the tally has no {exc.args[0]!r}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise MergeError(f"{where}: the tally is damaged ({exc})") from exc


def _read_shares(data: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    return {str(url): {key: int(share[key]) for key in _SHARE} for url, share in data.items()}


def _most_first(counts: Counter[ErrorKey]) -> dict[ErrorKey, int]:
    return dict(counts.most_common())
