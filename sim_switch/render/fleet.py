"""What a fleet run shows: rates, percentiles, errors by kind, connections per switch, and one verdict line. All of
it is read from a ``FleetTally``, so a fleet run in one process, over workers, or merged from shards reads the
same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dialout.text import plural
from sim_switch.fleet.bottleneck import CpuShares, bottleneck
from sim_switch.fleet.histograms import Histogram
from sim_switch.fleet.tally import FleetTally, tally_json


@dataclass(frozen=True)
class FleetVerdict:
    ok: bool
    line: str
    failures: tuple[str, ...]


def judge_fleet(tally: FleetTally, whole: bool = True) -> FleetVerdict:
    """``whole``: the tally must be the whole fleet (a run of it, or every shard merged); otherwise one shard's run
    is judged on its own switches."""
    missing = tally.missing_shards
    failures = [f"{count} pings: {kind}" for kind, count in tally.errors_by_kind.items()]
    per_switch = tally.connections_per_switch
    if tally.http2 and set(per_switch) - {1}:
        spread = ", ".join(f"{plural(n, 'switch')} on {plural(c, 'connection')}" for c, n in sorted(per_switch.items()))
        failures.append(f"under HTTP/2 every switch should use 1 connection: {spread}")
    if whole and missing:
        failures.append(
            f"shard {', '.join(map(str, missing))} missing: {tally.switches} of the fleet's "
            f"{tally.fleet_switches} switches are here"
        )
    rate = _rate(tally)
    latency = tally.latency.marks()
    shape = f"{plural(tally.switches, 'switch')} x {plural(tally.pings_per_switch, 'ping')}"
    if missing:
        shape += f" (shard {', '.join(map(str, tally.shards))} of {tally.fleet_switches} switches)"
    tally_text = f"{tally.answered_ok} ok, {tally.failed} failed; {rate:.0f} pings/s in {tally.wall_time_s:.2f} s"
    timing = f"; latency p50 {latency['p50']:.3f} s, p99 {latency['p99']:.3f} s" if latency else ""
    word = ("FLEET" if whole or not missing else "SHARD") + (" OK" if not failures else " FAILED")
    return FleetVerdict(not failures, f"{word}: {shape}, {tally_text}{timing}", tuple(failures))


def render_fleet(tally: FleetTally, verdict: FleetVerdict, shares: CpuShares | None = None) -> str:
    lines = [f"switches: {tally.switches}; pings: {tally.sent} sent, {tally.answered_ok} ok"]
    if tally.shards:
        lines.append(f"shards: {', '.join(str(shard) for shard in tally.shards)}")
    for name, histogram in (
        ("latency", tally.latency),
        ("overhead over the interval", tally.overhead),
        ("TLS handshake per switch", tally.handshake),
    ):
        marks = histogram.marks()
        if marks:
            lines.append(f"{name}: " + ", ".join(f"{mark} {value * 1000:.1f} ms" for mark, value in marks.items()))
    spread = (f"{plural(count, 'switch')} on {n}" for n, count in sorted(tally.connections_per_switch.items()))
    lines.append("connections per switch: " + ", ".join(spread))
    if len(tally.by_controller) > 1:
        lines.append("by controller:")
        lines += [
            f"  {url}: {plural(share['switches'], 'switch')}, {share['sent']} pings sent, {share['answered_ok']} ok"
            for url, share in tally.by_controller.items()
        ]
    if shares is not None:
        theirs = "".join(f", controller {url} {share:.0%}" for url, share in shares.controllers.items())
        lines.append(f"CPU (of one core): switch side {shares.switch:.0%} per process ({shares.processes}){theirs}")
        sentence = bottleneck(shares)
        lines += [f"bottleneck: {sentence}"] if sentence else []
    lines += [f"failure: {failure}" for failure in verdict.failures]
    lines.append(verdict.line)
    return "\n".join(lines)


def fleet_json(tally: FleetTally, verdict: FleetVerdict, shares: CpuShares | None = None) -> dict[str, Any]:
    return {
        "scenario": tally.scenario,
        "mode": "fleet",
        "controller": tally.controller,
        "ok": verdict.ok,
        "verdict": verdict.line,
        "failures": list(verdict.failures),
        "switches": tally.switches,
        "sent": tally.sent,
        "answered_ok": tally.answered_ok,
        "failed": tally.failed,
        "wall_time_s": round(tally.wall_time_s, 6),
        "pings_per_s": round(_rate(tally), 3),
        "latency_s": _marks(tally.latency),
        "overhead_s": _marks(tally.overhead),
        "tls_handshake_s": _marks(tally.handshake),
        "errors_by_kind": tally.errors_by_kind,
        "failure_kinds": tally.failure_kinds,
        "connections_per_switch": {str(k): v for k, v in sorted(tally.connections_per_switch.items())},
        "by_controller": tally.by_controller,
        "cpu": None if shares is None else _cpu_json(shares),
        "shards": [str(shard) for shard in tally.shards],
        "tally": tally_json(tally),  # what `python -m sim_switch merge` reads
    }


def _cpu_json(shares: CpuShares) -> dict[str, Any]:
    return {
        "switch_per_process": round(shares.switch, 4),
        "processes": shares.processes,
        "controllers": {url: round(share, 4) for url, share in shares.controllers.items()},
        "bottleneck": bottleneck(shares),
    }


def _rate(tally: FleetTally) -> float:
    return tally.answered_ok / tally.wall_time_s if tally.wall_time_s > 0 else 0.0


def _marks(histogram: Histogram) -> dict[str, float]:
    return {mark: round(value, 6) for mark, value in histogram.marks().items()}
