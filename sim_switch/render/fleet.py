"""What a fleet run shows: rates, percentiles, errors by kind, connections per switch, and one verdict line. All of
it is read from a ``FleetTally``, so a fleet run in one process, over workers, or merged from shards reads the
same."""

from __future__ import annotations

from collections import Counter
from typing import Any

from dialout.text import plural
from sim_switch.fleet.bottleneck import (
    CPU_BOUND,
    CpuShares,
    MachineStretch,
    Side,
    Stretch,
    bottleneck,
    bound_controllers,
)
from sim_switch.fleet.histograms import Histogram
from sim_switch.fleet.tally import FleetTally, tally_json
from sim_switch.fleet.verdict import FailedPings, FleetProblem, FleetVerdict, MissingShards, SpreadOverConnections
from sim_switch.render.failures import headline_of


def fleet_line(tally: FleetTally, verdict: FleetVerdict) -> str:
    """``FLEET OK: 50 switches x 2 pings, 100 ok, 0 failed; 403 pings/s in 0.25 s; latency p50 ...``"""
    latency = tally.latency.marks()
    shape = f"{plural(tally.switches, 'switch')} x {plural(tally.pings_per_switch, 'ping')}"
    if tally.missing_shards:
        shape += f" (shard {', '.join(map(str, tally.shards))} of {tally.fleet_switches} switches)"
    counts = f"{tally.answered_ok} ok, {tally.failed} failed; {_rate(tally):.0f} pings/s in {tally.wall_time_s:.2f} s"
    timing = f"; latency p50 {latency['p50']:.3f} s, p99 {latency['p99']:.3f} s" if latency else ""
    word = ("FLEET" if verdict.whole else "SHARD") + (" OK" if verdict.ok else " FAILED")
    return f"{word}: {shape}, {counts}{timing}"


def problem_text(problem: FleetProblem) -> str:
    match problem:
        case FailedPings(kind=kind, status=status, count=count):
            return f"{count} pings: {headline_of(kind, status)}"
        case SpreadOverConnections(per_switch=per_switch):
            spread = ", ".join(f"{plural(n, 'switch')} on {plural(c, 'connection')}" for c, n in per_switch)
            return f"under HTTP/2 every switch should use 1 connection: {spread}"
        case MissingShards(missing=missing, here=here, fleet=fleet):
            return f"shard {', '.join(map(str, missing))} missing: {here} of the fleet's {fleet} switches are here"


def problem_lines(verdict: FleetVerdict) -> list[str]:
    return [problem_text(problem) for problem in verdict.problems]


def _controller_share(shares: CpuShares, url: str) -> str:
    """'https://c:8443 at 83% of a core', or with workers '... of a core per process (2)', and its busy stretch."""
    processes = shares.controller_processes.get(url, 1)
    share = f"{url} at {shares.controllers[url]:.0%} of a core"
    share += f" per process ({processes})" if processes > 1 else ""
    return share + _stretch_words(shares.controller_stretches.get(url))


def _switch_share(shares: CpuShares) -> str:
    share = f"the switch side at {shares.switch:.0%} of a core per process ({shares.processes})"
    return share + _stretch_words(shares.switch_stretch)


def _stretch_words(stretch: Stretch | None) -> str:
    """', 96% for 3.2 s (0.4-3.6 s into the run)', after a share over the whole run."""
    if stretch is None:
        return ""
    return f", {stretch.share:.0%} for {stretch.seconds:.1f} s ({stretch.from_s:.1f}-{stretch.to_s:.1f} s into the run)"


def cpu_lines(shares: CpuShares) -> list[str]:
    """Each side's CPU, and the bottleneck in words if there was one: the summary's lines and the page's."""
    theirs = "".join(f", controller {_controller_share(shares, url)}" for url in shares.controllers)
    switch_side = f"switch side {shares.switch:.0%} per process ({shares.processes})"
    lines = [f"CPU (of one core): {switch_side}{_stretch_words(shares.switch_stretch)}{theirs}"]
    sentence = bottleneck_sentence(shares)
    return lines + ([f"bottleneck: {sentence}"] if sentence else [])


def bottleneck_sentence(shares: CpuShares) -> str | None:
    """Which side was CPU-bound (over the whole run, or for a stretch of it), in words; when neither was, this
    machine's cores if they were full for a stretch (and who took them); else None."""
    switch_side = _switch_share(shares)
    controllers = ", ".join(_controller_share(shares, url) for url in shares.controllers)
    match bottleneck(shares):
        case Side.BOTH:
            return (
                f"both sides were CPU-bound: {switch_side}, the controller {controllers}; on one machine they "
                "compete for its cores"
            )
        case Side.SWITCH:
            theirs = f", the controller {controllers}" if controllers else " (the controller did not say its own)"
            # Bound over the whole run, or for a stretch of it: then only what it sent in that stretch waited.
            which = "the latencies are mostly" if shares.switch >= CPU_BOUND else "what it sent then waited on"
            return (
                f"the switch side was the bottleneck: {switch_side}{theirs}; {which} the simulator's own queueing: "
                "split it further (--workers, --shard on more machines)"
            )
        case Side.CONTROLLER:
            named = ", ".join(_controller_share(shares, url) for url in bound_controllers(shares))
            return (
                f"the controller was the bottleneck: {named}, {switch_side}; "
                f"{plural(len(shares.controllers), 'controller')} served the fleet"
            )
    return None if shares.machine is None else _machine_sentence(shares.machine)


def _machine_sentence(machine: MachineStretch) -> str:
    """Neither side bound, the machine's cores full: who took them."""
    stretch = machine.stretch
    took = []
    if machine.switch is not None:
        took.append(f"the switch side {machine.switch:.1f} of them")
    if machine.controllers is not None:
        took.append(
            f"{'the controller' if machine.local == 1 else f'the {machine.local} controllers'} "
            f"{machine.controllers:.1f}"
        )
    if machine.others is not None:
        took.append(
            f"{'other processes' if machine.controllers is not None else 'everything else'} {machine.others:.1f}"
        )
    who = f": {', '.join(took)}" if took else ""
    return (
        f"neither side was at {CPU_BOUND:.0%} of a core, but this machine's {plural(machine.cores, 'core')} were "
        f"{stretch.share:.0%} busy for {stretch.seconds:.1f} s ({stretch.from_s:.1f}-{stretch.to_s:.1f} s into the "
        f"run){who}; what waited then waited for the machine"
    )


def errors_by_kind(tally: FleetTally) -> dict[str, int]:
    """Failed pings by their kind in words, with the status for HTTP refusals ('HTTP 403'), most first."""
    words: Counter[str] = Counter()
    for (kind, status), count in tally.errors.items():
        words[headline_of(kind, status)] += count
    return dict(words.most_common())


def failure_kinds(tally: FleetTally) -> dict[str, int]:
    """Failed pings by kind (``--json``: ``failure_kinds``), most first."""
    kinds: Counter[str] = Counter()
    for (kind, _), count in tally.errors.items():
        kinds[kind.value] += count
    return dict(kinds.most_common())


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
        lines += cpu_lines(shares)
    lines += [f"failure: {failure}" for failure in problem_lines(verdict)]
    lines.append(fleet_line(tally, verdict))
    return "\n".join(lines)


def fleet_json(tally: FleetTally, verdict: FleetVerdict, shares: CpuShares | None = None) -> dict[str, Any]:
    return {
        "scenario": tally.scenario,
        "mode": "fleet",
        "controller": " ".join(tally.controllers),
        "controllers": list(tally.controllers),
        "ok": verdict.ok,
        "verdict": fleet_line(tally, verdict),
        "failures": problem_lines(verdict),
        "switches": tally.switches,
        "sent": tally.sent,
        "answered_ok": tally.answered_ok,
        "failed": tally.failed,
        "wall_time_s": round(tally.wall_time_s, 6),
        "pings_per_s": round(_rate(tally), 3),
        "latency_s": _marks(tally.latency),
        "overhead_s": _marks(tally.overhead),
        "tls_handshake_s": _marks(tally.handshake),
        "errors_by_kind": errors_by_kind(tally),
        "failure_kinds": failure_kinds(tally),
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
        "controllers": {url: round(share, 4) for url, share in shares.controllers.items()},  # per process
        "controller_processes": {url: shares.controller_processes.get(url, 1) for url in shares.controllers},
        # the longest stretch at CPU_BOUND or more (None: none lasted BOUND_FOR_S), seconds into the run
        "switch_busiest": _stretch_json(shares.switch_stretch),
        "controllers_busiest": {url: _stretch_json(shares.controller_stretches.get(url)) for url in shares.controllers},
        "machine_busiest": _machine_json(shares.machine),
        "bottleneck": bottleneck_sentence(shares),
        "bottleneck_side": bottleneck(shares),
    }


def _stretch_json(stretch: Stretch | None) -> dict[str, float] | None:
    if stretch is None:
        return None
    return {"from_s": round(stretch.from_s, 3), "to_s": round(stretch.to_s, 3), "share": round(stretch.share, 4)}


def _machine_json(machine: MachineStretch | None) -> dict[str, Any] | None:
    """The machine's busiest stretch: its share of all the cores, and who took them in cores' worth (null: not
    read, or not on this machine)."""
    if machine is None:
        return None
    took = {"switch_cores": machine.switch, "controllers_cores": machine.controllers, "others_cores": machine.others}
    return {
        **(_stretch_json(machine.stretch) or {}),
        "cores": machine.cores,
        **{name: None if cores is None else round(cores, 3) for name, cores in took.items()},
    }


def _rate(tally: FleetTally) -> float:
    return tally.answered_ok / tally.wall_time_s if tally.wall_time_s > 0 else 0.0


def _marks(histogram: Histogram) -> dict[str, float]:
    return {mark: round(value, 6) for mark, value in histogram.marks().items()}
