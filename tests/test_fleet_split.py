"""A fleet split over processes: ``--workers N`` on one machine, ``--shard I/N`` + ``merge`` across machines.
Real processes against a real controller; merged reports equal one run's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim_switch.fleet.histograms import Histogram
from sim_switch.fleet.run import Shard
from sim_switch.fleet.tally import ErrorKey, FleetTally, MergeError, merge, tally_from_json, tally_json
from sim_switch.fleet.workers import worker_shards
from sim_switch.model.failures import FailureKind
from sim_switch.render.fleet import errors_by_kind
from tests.commands import run_module
from tests.servers import REPO, ControllerProcess, write_config

FLEET = """\
  fleet:
    fleet: {switches: 50, pings: 2, interval_s: 0.05}
"""
# What must add up exactly between one run and a split one (times and percentiles are the run's own).
TOTALS = (
    "scenario",
    "mode",
    "ok",
    "switches",
    "sent",
    "answered_ok",
    "failed",
    "errors_by_kind",
    "connections_per_switch",
)


@pytest.fixture(scope="module")
def fleet_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    directory = tmp_path_factory.mktemp("fleet-split")
    config = write_config(directory, extra=FLEET, controller="  switches: [switch-1, 'fleet-*']\n")
    with ControllerProcess.start(config, "--quiet") as process:
        yield process


def fleet_run(process: ControllerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module(
        "sim_switch", "--config", str(process.config), "--url", process.url, "--scenario", "fleet", "--json", *args
    )


def test_workers_report_as_one_run(fleet_controller: ControllerProcess) -> None:
    one = fleet_run(fleet_controller, "--workers", "1")
    two = fleet_run(fleet_controller, "--workers", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    single, split = json.loads(one.stdout), json.loads(two.stdout)
    assert set(split) == set(single)  # the same fields
    assert {key: split[key] for key in TOTALS} == {key: single[key] for key in TOTALS}
    assert (split["switches"], split["answered_ok"], split["connections_per_switch"]) == (50, 100, {"1": 50})
    assert split["shards"] == single["shards"] == []  # a whole fleet, however it was run
    assert split["tally"]["cpu_s"] > 0
    assert split["verdict"].startswith("FLEET OK: 50 switches x 2 pings, 100 ok, 0 failed")


def start_shard(process: ControllerProcess, shard: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim_switch",
            "--config",
            str(process.config),
            "--url",
            process.url,
            "--scenario",
            "fleet",
            "--json",
            "--workers",
            "1",
            "--shard",
            shard,
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_shards_in_separate_processes_merge_into_one_run(fleet_controller: ControllerProcess, tmp_path: Path) -> None:
    shards = [start_shard(fleet_controller, f"{index}/2") for index in range(2)]  # at once, as two machines would
    files = []
    for index, shard in enumerate(shards):
        out, err = shard.communicate(timeout=120)
        assert shard.returncode == 0, err  # a shard is judged on its own switches
        report = json.loads(out)
        assert report["switches"] == 25
        assert report["verdict"].startswith(f"SHARD OK: 25 switches x 2 pings (shard {index}/2 of 50 switches)")
        files.append(tmp_path / f"shard-{index}.json")
        files[-1].write_text(out, encoding="utf-8")
    merged = run_module("sim_switch", "merge", *map(str, files), "--json")
    assert merged.returncode == 0, merged.stderr
    whole = fleet_run(fleet_controller, "--workers", "1")
    together, alone = json.loads(merged.stdout), json.loads(whole.stdout)
    assert {key: together[key] for key in TOTALS} == {key: alone[key] for key in TOTALS}
    assert together["shards"] == ["0/2", "1/2"]
    assert together["verdict"].startswith("FLEET OK: 50 switches x 2 pings, 100 ok, 0 failed")
    # merged histograms hold every ping: the percentiles of the whole, read from the shards' own histograms
    parts = [tally_from_json(json.loads(path.read_text(encoding="utf-8"))["tally"], path.name) for path in files]
    expected = Histogram()
    for part in parts:
        expected.add(part.latency)
    assert together["latency_s"] == {mark: round(value, 6) for mark, value in expected.marks().items()}
    text = run_module("sim_switch", "merge", *map(str, files))
    assert "shards: 0/2, 1/2" in text.stdout
    # a shard left out is a failed fleet; a shard given twice is a mistake
    partial = run_module("sim_switch", "merge", str(files[0]))
    assert partial.returncode == 1
    assert "failure: shard 1/2 missing: 25 of the fleet's 50 switches are here" in partial.stdout
    twice = run_module("sim_switch", "merge", str(files[0]), str(files[0]))
    assert twice.returncode == 2
    assert twice.stderr.strip() == ("sim_switch: merge: shard 0/2 given more than once (read more: docs/fleets.md)")


def test_merging_histograms_is_exact_on_known_data() -> None:
    left, right = [0.001 * n for n in range(1, 501)], [0.5 + 0.002 * n for n in range(1, 301)]
    whole = Histogram(left + right)
    merged = Histogram(left)
    merged.add(Histogram(right))
    assert merged == whole
    assert merged.count == 800
    assert merged.marks() == whole.marks()
    assert merged.percentile(50) == pytest.approx(0.4, rel=1e-3)  # the 400th of 800 values, within 0.1%
    assert merged.max == pytest.approx(1.1, rel=1e-3)
    assert Histogram.decode(merged.encode()) == merged  # as it travels in --json


def part(shard: Shard, latencies: list[float], errors: dict[ErrorKey, int]) -> FleetTally:
    return FleetTally(
        scenario="fleet",
        controllers=("https://127.0.0.1:1",),
        http2=True,
        fleet_switches=4,
        pings_per_switch=2,
        interval_s=0.0,
        shards=(shard,),
        switches=2,
        sent=4,
        answered_ok=4 - sum(errors.values()),
        started_at=100.0 + shard.index,
        ended_at=110.0 + shard.index,
        cpu_s=1.5,
        latency=Histogram(latencies),
        overhead=Histogram(latencies),
        handshake=Histogram([0.01, 0.02]),
        errors=errors,
        connections_per_switch={1: 2},
    )


def test_tallies_merge_exactly_and_refuse_parts_of_other_runs() -> None:
    refused, timed_out = (FailureKind.HTTP_STATUS, 403), (FailureKind.NO_ANSWER, None)
    a = part(Shard(0, 2), [0.1, 0.2, 0.3], {refused: 1})
    b = part(Shard(1, 2), [0.4], {refused: 2, timed_out: 1})
    merged = merge([tally_from_json(json.loads(json.dumps(tally_json(t))), "test") for t in (b, a)])
    assert (merged.switches, merged.sent, merged.answered_ok, merged.cpu_s) == (4, 8, 4, 3.0)
    assert merged.errors == {refused: 3, timed_out: 1}  # merged by kind and status, not by their words
    assert errors_by_kind(merged) == {"HTTP 403": 3, "no complete answer from the controller": 1}
    assert merged.connections_per_switch == {1: 4}
    assert (merged.started_at, merged.ended_at) == (100.0, 111.0)  # first start to last end
    assert merged.latency == Histogram([0.1, 0.2, 0.3, 0.4])
    assert merged.shards == (Shard(0, 2), Shard(1, 2))
    assert merged.missing_shards == ()
    with pytest.raises(MergeError, match=r"interval_s is 0\.0 in one and 5\.0 in another"):
        merge([a, FleetTally(**{**vars(b), "interval_s": 5.0})])
    with pytest.raises(MergeError, match="shards of different partitions"):
        merge([a, part(Shard(1, 3), [0.4], {})])
    with pytest.raises(MergeError, match="test: no fleet tally"):
        tally_from_json({"version": 99}, "test")


def test_workers_split_a_shard_into_shards_of_the_whole_fleet() -> None:
    ids = [f"s{n}" for n in range(23)]
    for shard in (None, Shard(1, 3)):
        parts = worker_shards(shard, 4)
        mine = shard.take(ids) if shard else ids
        taken = [switch for worker in parts for switch in worker.take(ids)]
        assert sorted(taken) == sorted(mine)  # every switch of the shard once, none from outside it
        assert len(taken) == len(set(taken))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "2/2"], "argument --shard: I must be 0 to N-1 and N at least 1, got '2/2'"),
        (["--shard", "half"], "argument --shard: must be I/N, e.g. 0/4 (shard 0 of 4), got 'half'"),
        (["--workers", "0"], "argument --workers: must be a whole number of processes, at least 1, got '0'"),
        (["--scenario", "seed", "--workers", "2"], "--workers: only a fleet scenario is split; 'seed' is one-shot"),
    ],
)
def test_bad_split_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    config = write_config(tmp_path, extra=FLEET, controller="  switches: [switch-1, 'fleet-*']\n")
    done = run_module("sim_switch", "--config", str(config), "--scenario", "fleet", *args)
    assert done.returncode == 2
    assert message in done.stderr.splitlines()[-1]


def test_merge_says_which_file_is_not_a_shard(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "seed.json").write_text('{"scenario": "seed"}', encoding="utf-8")
    for name, message in (
        ("notes.txt", "not the --json of a fleet run"),
        ("seed.json", "no fleet tally"),
        ("gone.json", "No such file or directory"),
    ):
        done = run_module("sim_switch", "merge", str(tmp_path / name))
        assert done.returncode == 2
        [line] = done.stderr.splitlines()
        assert line.startswith(f"sim_switch: merge: {tmp_path / name}: ")
        assert message in line
