"""What a fleet run shows: rates, percentiles, errors by kind, connections per switch, and one verdict line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from controller.config import Fleet
from sim_switch.fleet import FleetResult
from sim_switch.report import errors_by_kind, failure_kinds
from sim_switch.results import PingResult, plural

PERCENTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class FleetVerdict:
    ok: bool
    line: str
    failures: tuple[str, ...]


def _fleet(result: FleetResult) -> Fleet:
    assert isinstance(result.scenario.kind, Fleet), "run_fleet runs fleets only"
    return result.scenario.kind


def _pings(result: FleetResult) -> list[PingResult]:
    return [ping for _, run in result.runs for ping in run.pings]


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    marks = {f"p{int(p * 100)}": ordered[min(len(ordered) - 1, int(p * len(ordered)))] for p in PERCENTILES}
    return {**marks, "max": ordered[-1]}


def _connections_per_switch(result: FleetResult) -> Counter[int]:
    return Counter(len(run.connections) for _, run in result.runs)


def judge_fleet(result: FleetResult) -> FleetVerdict:
    pings = _pings(result)
    failed = [ping for ping in pings if not ping.ok]
    failures = [f"{count} pings: {kind}" for kind, count in errors_by_kind(pings).items()]
    per_switch = _connections_per_switch(result)
    if result.scenario.http2 and set(per_switch) - {1}:
        spread = ", ".join(f"{plural(n, 'switch')} on {plural(c, 'connection')}" for c, n in sorted(per_switch.items()))
        failures.append(f"under HTTP/2 every switch should use 1 connection: {spread}")
    rate = (len(pings) - len(failed)) / result.wall_time_s if result.wall_time_s else 0.0
    latency = _percentiles([ping.elapsed_s for ping in pings if ping.ok])
    per_switch_pings = _fleet(result).pings
    shape = f"{plural(len(result.runs), 'switch')} x {plural(per_switch_pings, 'ping')}"
    tally = f"{len(pings) - len(failed)} ok, {len(failed)} failed; {rate:.0f} pings/s in {result.wall_time_s:.2f} s"
    timing = f"; latency p50 {latency['p50']:.3f} s, p99 {latency['p99']:.3f} s" if latency else ""
    word = "FLEET OK" if not failures else "FLEET FAILED"
    return FleetVerdict(not failures, f"{word}: {shape}, {tally}{timing}", tuple(failures))


def render_fleet(result: FleetResult, verdict: FleetVerdict) -> str:
    pings = _pings(result)
    interval = _fleet(result).interval_s
    lines = [f"switches: {len(result.runs)}; pings: {len(pings)} sent, {sum(p.ok for p in pings)} ok"]
    for name, values in (
        ("latency", [ping.elapsed_s for ping in pings if ping.ok]),
        ("overhead over the interval", [ping.elapsed_s - interval for ping in pings if ping.ok]),
        ("TLS handshake per switch", [c.handshake_s for _, run in result.runs for c in run.connections
                                      if c.handshake_s is not None]),
    ):  # fmt: skip
        marks = _percentiles(values)
        if marks:
            lines.append(f"{name}: " + ", ".join(f"{mark} {value * 1000:.1f} ms" for mark, value in marks.items()))
    per_switch = _connections_per_switch(result)
    spread = (f"{plural(count, 'switch')} on {connections}" for connections, count in sorted(per_switch.items()))
    lines.append("connections per switch: " + ", ".join(spread))
    lines += [f"failure: {failure}" for failure in verdict.failures]
    lines.append(verdict.line)
    return "\n".join(lines)


def fleet_json(result: FleetResult, verdict: FleetVerdict) -> dict[str, Any]:
    pings = _pings(result)
    interval = _fleet(result).interval_s
    return {
        "scenario": result.scenario.name,
        "mode": "fleet",
        "controller": result.controller_url,
        "ok": verdict.ok,
        "verdict": verdict.line,
        "failures": list(verdict.failures),
        "switches": len(result.runs),
        "sent": len(pings),
        "answered_ok": sum(ping.ok for ping in pings),
        "failed": sum(not ping.ok for ping in pings),
        "wall_time_s": round(result.wall_time_s, 6),
        "pings_per_s": round(sum(ping.ok for ping in pings) / result.wall_time_s, 3) if result.wall_time_s else 0,
        "latency_s": _percentiles([ping.elapsed_s for ping in pings if ping.ok]),
        "overhead_s": _percentiles([ping.elapsed_s - interval for ping in pings if ping.ok]),
        "tls_handshake_s": _percentiles(
            [c.handshake_s for _, run in result.runs for c in run.connections if c.handshake_s is not None]
        ),
        "errors_by_kind": errors_by_kind(pings),
        "failure_kinds": failure_kinds(pings),
        "connections_per_switch": {str(k): v for k, v in sorted(_connections_per_switch(result).items())},
    }
