"""Which side of a fleet run was CPU-bound: each side's CPU read through the run (``CpuWatch``: this process's
workers from /proc, a real controller's ``GET /connections``), its longest busy stretch, and the report's words."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim_switch.dial.tls import client_ssl_context
from sim_switch.fleet.bottleneck import CpuShares, Side, Stretch, bottleneck, cpu_shares, longest_bound_stretch
from sim_switch.fleet.cpu_watch import ControllerCpu, CpuSample, CpuWatch, MachineCpu
from sim_switch.fleet.histograms import Histogram
from sim_switch.fleet.tally import FleetTally
from sim_switch.fleet.verdict import judge_fleet
from sim_switch.render.fleet import bottleneck_sentence, fleet_json
from tests.servers import ControllerProcess, write_config

MAIN = os.getpid()
BURN_S = 0.3  # of CPU, in a child process
TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # /proc's resolution

# Burns BURN_S of its own CPU once told to on stdin, then says its whole CPU time (start-up included) and ends.
BURNER = f"""
import os, sys, time
sys.stdin.readline()
start = time.process_time()
while time.process_time() - start < {BURN_S}:
    pass
times = os.times()
print(times.user + times.system)
"""


def _cpu_of_children_waited_for() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _burner() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _burn(burner: subprocess.Popen[str]) -> float:
    """Tell ``burner`` to burn; the CPU time it says it took in all. Not waited for: it may still be ending."""
    assert burner.stdin is not None
    assert burner.stdout is not None
    burner.stdin.write("go\n")
    burner.stdin.close()
    return float(burner.stdout.readline())


@pytest.mark.skipif(
    not Path(f"/proc/{MAIN}/task/{MAIN}/children").exists(), reason="reads the fleet's workers' CPU from /proc (Linux)"
)
def test_the_watch_reads_the_workers_it_saw_start_and_each_controller_through_the_run(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--quiet") as controller:
        asking = (client_ssl_context(config.parent / "certs", "switch-1"), "switch-1")
        # A child this process had before the fleet (a bench's controller): not the fleet's.
        with _burner() as from_before:
            own_before, children_before_s = time.process_time(), _cpu_of_children_waited_for()
            with CpuWatch((controller.url,), asking, workers=2, period_s=0.05) as watch:
                with _burner() as worker:
                    worker_said_s = _burn(worker)
                # Ended and waited for, as a fleet's workers are: its time counts still, its ending's too.
                worker_cpu_s = _cpu_of_children_waited_for() - children_before_s
                _burn(from_before)  # not waited for until the watch is over
            own_s = time.process_time() - own_before
    first, last = watch.samples[0], watch.samples[-1]
    assert len(watch.samples) >= 3
    assert all(sample.controllers[controller.url].processes == 1 for sample in watch.samples)
    assert [s.controllers[controller.url].cpu_s for s in watch.samples] == sorted(
        s.controllers[controller.url].cpu_s for s in watch.samples
    )
    assert first.switch_cpu_s is not None
    assert last.switch_cpu_s is not None
    switch_side_s = last.switch_cpu_s - first.switch_cpu_s
    assert worker_cpu_s + TICK_S >= worker_said_s >= BURN_S  # its ending's time too (both in ticks, as floats)
    # This machine was at least as busy as the worker kept it, on all its cores.
    assert first.machine is not None
    assert last.machine is not None
    assert last.machine.cores == os.cpu_count()
    assert last.machine.busy_s - first.machine.busy_s >= worker_cpu_s - TICK_S * last.machine.cores
    # The worker's whole time and at most this process's own: not the other child's BURN_S.
    assert worker_cpu_s - TICK_S <= switch_side_s <= worker_cpu_s + own_s + 2 * TICK_S < worker_cpu_s + BURN_S


def test_the_longest_stretch_at_cpu_bound_is_found_and_a_moment_is_not() -> None:
    # (when, CPU seconds so far): an intake at 96% of a core for 1.5 s, then the wait, then a 0.5 s burst
    series = [(10.0, 0.0), (10.5, 0.48), (11.0, 0.96), (11.5, 1.44), (12.0, 1.5), (12.5, 1.55), (13.0, 2.05)]
    assert _rounded(longest_bound_stretch(series, 1, start=10.0)) == (0.0, 1.5, 0.96)
    assert longest_bound_stretch(series[3:], 1, start=10.0) is None  # 0.5 s at a whole core is a moment
    # Two processes: the same CPU is half a core each.
    assert longest_bound_stretch(series, 2, start=10.0) is None
    doubled = [(at, cpu_s * 2) for at, cpu_s in series]
    assert _rounded(longest_bound_stretch(doubled, 2, start=10.0)) == (0.0, 1.5, 0.96)


def _rounded(stretch: Stretch | None) -> tuple[float, float, float] | None:
    return None if stretch is None else (round(stretch.from_s, 6), round(stretch.to_s, 6), round(stretch.share, 6))


def _tally(wall_s: float, cpu_s: float) -> FleetTally:
    return FleetTally(
        scenario="fleet",
        controllers=("https://c:1",),
        http2=True,
        fleet_switches=1000,
        pings_per_switch=10,
        interval_s=5.0,
        shards=(),
        switches=1000,
        sent=10_000,
        answered_ok=10_000,
        started_at=100.0,
        ended_at=100.0 + wall_s,
        cpu_s=cpu_s,
        latency=Histogram([5.0]),
        overhead=Histogram([0.1]),
        handshake=Histogram([0.5]),
        connections_per_switch={1: 1000},
    )


def test_an_intake_bound_controller_is_the_bottleneck_though_the_run_averages_below() -> None:
    """A fleet at 5 s whose controller (2 workers) spends 3 s at 95% of both cores taking the fleet in, then waits."""
    # The run from 100.0 to 110.0 (its tally's started_at, ended_at); before it, 2 s of the switches' set-up (their
    # certificates loaded) at a whole core: not the run's.
    at = [98.0, 99.0, *(100.0 + n for n in range(11))]
    controller = [0.0, 0.0, 0.0, 1.9, 3.8, 5.7, 5.8, 5.9, 6.0, 6.1, 6.2, 6.3, 6.4]  # two processes' together
    switch = [0.0, 1.0, *(2.0 + cpu_s for cpu_s in (0.0, 0.4, 0.8, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9))]
    samples = [
        CpuSample(a, s, {"https://c:1": ControllerCpu(c, 2)}) for a, s, c in zip(at, switch, controller, strict=True)
    ]
    shares = cpu_shares(_tally(10.0, 1.9), samples)
    assert shares.controllers == {"https://c:1": pytest.approx(0.32)}  # over the whole wall: far below CPU_BOUND
    assert {url: _rounded(stretch) for url, stretch in shares.controller_stretches.items()} == {
        "https://c:1": (0.0, 3.0, 0.95)
    }
    assert shares.switch_stretch is None
    assert bottleneck(shares) is Side.CONTROLLER
    assert bottleneck_sentence(shares) == (
        "the controller was the bottleneck: https://c:1 at 32% of a core per process (2), 95% for 3.0 s "
        "(0.0-3.0 s into the run), the switch side at 19% of a core per process (1); 1 controller served the fleet"
    )
    cpu = fleet_json(_tally(10.0, 1.9), judge_fleet(_tally(10.0, 1.9)), shares)["cpu"]
    assert cpu["controllers_busiest"] == {"https://c:1": {"from_s": 0.0, "to_s": 3.0, "share": 0.95}}
    assert cpu["switch_busiest"] is None
    assert cpu["bottleneck_side"] == "controller"


def test_a_switch_side_bound_for_a_stretch_says_what_waited_then() -> None:
    shares = CpuShares(
        switch=0.4, processes=1, controllers={"https://c:1": 0.3}, switch_stretch=Stretch(0.1, 2.4, 0.97)
    )
    assert bottleneck(shares) is Side.SWITCH
    assert bottleneck_sentence(shares) == (
        "the switch side was the bottleneck: the switch side at 40% of a core per process (1), 97% for 2.3 s "
        "(0.1-2.4 s into the run), the controller https://c:1 at 30% of a core; what it sent then waited on the "
        "simulator's own queueing: split it further (--workers, --shard on more machines)"
    )


def test_the_report_says_which_side_was_cpu_bound_over_the_whole_run() -> None:
    shares = CpuShares(switch=0.97, processes=1, controllers={"https://c:1": 0.31})
    assert bottleneck(shares) is Side.SWITCH
    simulator = bottleneck_sentence(shares)
    assert simulator is not None
    assert simulator.startswith("the switch side was the bottleneck: the switch side at 97% of a core per process (1)")
    assert "https://c:1 at 31%" in simulator
    assert "; the latencies are mostly the simulator's own queueing" in simulator
    controller = bottleneck_sentence(CpuShares(switch=0.4, processes=2, controllers={"https://c:1": 0.95}))
    assert controller is not None
    assert controller.startswith("the controller was the bottleneck: https://c:1 at 95% of a core")
    both = bottleneck_sentence(CpuShares(switch=0.9, processes=2, controllers={"https://c:1": 0.9}))
    assert both is not None
    assert both.startswith("both sides were CPU-bound")
    assert bottleneck_sentence(CpuShares(switch=0.5, processes=1, controllers={"https://c:1": 0.5})) is None
    unknown = bottleneck_sentence(CpuShares(switch=0.9, processes=1))
    assert unknown is not None
    assert "(the controller did not say its own)" in unknown


def test_a_full_machine_is_said_when_neither_side_was_bound_and_who_took_its_cores() -> None:
    """Two cores 95% busy for 2 s: the switch side 0.6 of a core, the controller's 2 workers 0.5 each, the rest
    another process's."""
    at = [100.0 + n / 2 for n in range(11)]
    busy = [0.0, 0.95, 1.9, 2.85, 3.8, 4.0, 4.2, 4.4, 4.6, 4.8, 5.0]  # both cores' together
    switch = [0.0, 0.3, 0.6, 0.9, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8]
    controller = [0.0, 0.5, 1.0, 1.5, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6]
    samples = [
        CpuSample(a, s, {"https://127.0.0.1:1": ControllerCpu(c, 2)}, MachineCpu(b, 2))
        for a, s, c, b in zip(at, switch, controller, busy, strict=True)
    ]
    shares = cpu_shares(_tally(5.0, 1.8), samples)
    assert bottleneck(shares) is None
    assert shares.machine is not None
    assert _rounded(shares.machine.stretch) == (0.0, 2.0, 0.95)
    assert bottleneck_sentence(shares) == (
        "neither side was at 80% of a core, but this machine's 2 cores were 95% busy for 2.0 s (0.0-2.0 s into "
        "the run): the switch side 0.6 of them, the controller 1.0, other processes 0.3; what waited then waited "
        "for the machine"
    )
    cpu = fleet_json(_tally(5.0, 1.8), judge_fleet(_tally(5.0, 1.8)), shares)["cpu"]
    assert cpu["bottleneck_side"] is None
    assert cpu["machine_busiest"] == {
        "from_s": 0.0,
        "to_s": 2.0,
        "share": 0.95,
        "cores": 2,
        "switch_cores": 0.6,
        "controllers_cores": 1.0,
        "others_cores": 0.3,
    }
    # A controller elsewhere is not this machine's: the rest is everything else.
    elsewhere = [
        CpuSample(
            sample.at,
            sample.switch_cpu_s,
            {"https://203.0.113.7:1": sample.controllers["https://127.0.0.1:1"]},
            sample.machine,
        )
        for sample in samples
    ]
    sentence = bottleneck_sentence(cpu_shares(_tally(5.0, 1.8), elsewhere))
    assert sentence is not None
    assert sentence.endswith(
        "(0.0-2.0 s into the run): the switch side 0.6 of them, everything else 1.3; what waited then waited for "
        "the machine"
    )


def test_two_controllers_on_this_machine_are_counted_together_and_said_as_two() -> None:
    at = [100.0 + n / 2 for n in range(5)]
    busy = [0.0, 0.95, 1.9, 2.85, 3.8]  # both cores' together, 95%
    switch = [0.0, 0.3, 0.6, 0.9, 1.2]
    each = [0.0, 0.25, 0.5, 0.75, 1.0]  # half a core each
    samples = [
        CpuSample(a, s, {f"https://127.0.0.1:{port}": ControllerCpu(c) for port in (1, 2)}, MachineCpu(b, 2))
        for a, s, c, b in zip(at, switch, each, busy, strict=True)
    ]
    sentence = bottleneck_sentence(cpu_shares(_tally(2.0, 1.2), samples))
    assert sentence is not None
    assert ": the switch side 0.6 of them, the 2 controllers 1.0, other processes 0.3; " in sentence
