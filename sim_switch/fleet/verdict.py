"""The judgement of a fleet run, as data: whether it held, and each problem as a value of its own kind
(``sim_switch/render/fleet.py`` says it in words). Judged from a ``FleetTally``, so one run, a run over workers and
merged shards are judged alike."""

from __future__ import annotations

from dataclasses import dataclass

from sim_switch.fleet.run import Shard
from sim_switch.fleet.tally import FleetTally
from sim_switch.model.failures import FailureKind


@dataclass(frozen=True)
class FailedPings:
    """``count`` pings failed this way."""

    kind: FailureKind
    status: int | None  # HTTP_STATUS: which
    count: int


@dataclass(frozen=True)
class SpreadOverConnections:
    """Under HTTP/2 every switch should use one connection; some used more (or none)."""

    per_switch: tuple[tuple[int, int], ...]  # (connections, switches that used that many), fewest first


@dataclass(frozen=True)
class MissingShards:
    """A merge of shards that is not the whole fleet."""

    missing: tuple[Shard, ...]
    here: int  # switches in the shards that are here
    fleet: int  # switches in the whole fleet


FleetProblem = FailedPings | SpreadOverConnections | MissingShards


@dataclass(frozen=True)
class FleetVerdict:
    whole: bool  # judged as the whole fleet (a run of it, or every shard merged), not one shard on its own
    problems: tuple[FleetProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def judge_fleet(tally: FleetTally, whole: bool = True) -> FleetVerdict:
    """``whole``: the tally must be the whole fleet; otherwise one shard's run is judged on its own switches."""
    problems: list[FleetProblem] = [FailedPings(kind, status, count) for (kind, status), count in tally.errors.items()]
    per_switch = tally.connections_per_switch
    if tally.http2 and set(per_switch) - {1}:
        problems.append(SpreadOverConnections(tuple(sorted(per_switch.items()))))
    if whole and tally.missing_shards:
        problems.append(MissingShards(tally.missing_shards, tally.switches, tally.fleet_switches))
    return FleetVerdict(whole or not tally.missing_shards, tuple(problems))
