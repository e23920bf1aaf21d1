"""A fleet over several processes on this machine (``--workers N``): the same mechanism as ``--shard`` across
machines. Worker ``w`` of ``W`` runs a shard of the switches, with its own event loop and clients, and sends back its
tally; the tallies are merged, so the summary, ``--json`` and the exit code are those of one run.

One process encodes every request and handshake of its switches (about 1 ms of CPU each in httpx and h2): past a
few hundred switches, one process measures its own queueing. Workers spread that over the cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from dialout.asyncio_seam import smaller_tls_read_buffers
from dialout.collector import pace_for_many_objects
from dialout.config import Fleet
from dialout.errors import DialoutError
from dialout.pages import Page
from sim_switch.dial.settings import RunSettings
from sim_switch.fleet.run import Shard, run_fleet, switches_of
from sim_switch.fleet.tally import FleetTally, merge, tally, tally_from_json, tally_json
from sim_switch.model.events import TraceEvent


class WorkerError(DialoutError):
    """A worker failed or died; the message says which and how. The run failed: exit 1."""

    exit_code = 1
    page = Page.FLEETS


def worker_shards(shard: Shard | None, workers: int) -> list[Shard]:
    """The shards the workers run: of shard I/N, worker w takes every W-th of its switches from the w-th, which is
    shard I + w*N of N*W of the whole fleet."""
    index, count = (shard.index, shard.count) if shard else (0, 1)
    return [Shard(index + w * count, count * workers) for w in range(workers)]


def run_in_workers(
    settings: RunSettings,
    urls: tuple[str, ...],
    shard: Shard | None,
    workers: int,
    progress: Callable[[int, int], None],
    trace: Callable[[TraceEvent], str] | None,
) -> FleetTally:
    """The tally of this run (the whole fleet, or ``shard`` of it) over ``workers`` processes. ``settings`` travel
    to each by pickle: a fleet's carry no TLS context (each switch makes its own). ``trace``: how a worker prints
    each trace event on stderr (-v; a module-level function, which pickles by name), or None."""
    fleet = settings.scenario.kind
    assert isinstance(fleet, Fleet), "only a fleet is split over workers"
    total = len(switches_of(fleet, shard))
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads and an event loop
    pipes: dict[Connection, BaseProcess] = {}
    for part in worker_shards(shard, workers):
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(
            target=_work,
            name=f"worker {part}",
            daemon=True,
            args=(settings, urls, part, trace, send),
        )
        worker.start()
        send.close()  # the worker's end: its EOF is the worker's exit
        pipes[receive] = worker
    parts: list[FleetTally] = []
    done = 0
    try:
        while pipes:
            for ready in wait(list(pipes)):
                assert isinstance(ready, Connection)
                try:
                    kind, value = ready.recv()
                except EOFError:  # the worker exited: cleanly after its tally, or not
                    ended = pipes.pop(ready)
                    ended.join()
                    if ended.exitcode != 0:
                        raise WorkerError(f"{ended.name} died (exit code {ended.exitcode})") from None
                    continue
                if kind == "done":
                    done += 1
                    progress(done, total)
                elif kind == "tally":
                    parts.append(tally_from_json(value, pipes[ready].name))
                else:
                    raise WorkerError(f"{pipes[ready].name}: {value}")
    finally:
        for left in pipes.values():
            left.terminate()
            left.join()
    merged = merge(parts)
    return dataclasses.replace(merged, shards=(shard,) if shard else ())


def _work(
    settings: RunSettings,
    urls: tuple[str, ...],
    shard: Shard,
    trace: Callable[[TraceEvent], str] | None,
    results: Connection,
) -> None:
    """One worker: its shard of the fleet, a message per switch done, then its tally (or what went wrong)."""
    logging.basicConfig(level=logging.INFO, format="sim_switch: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def show(event: TraceEvent) -> None:
        if trace is not None:
            print(trace(event), file=sys.stderr, flush=True)

    def report(kind: str, value: Any = None) -> None:  # noqa: ANN401
        results.send((kind, value))

    pace_for_many_objects()  # a spawned process: it starts with the default pace, and asyncio's buffers
    smaller_tls_read_buffers()
    try:
        result = asyncio.run(run_fleet(settings, urls, show, lambda done, total: report("done"), shard))
        report("tally", tally_json(tally(result)))
    except KeyboardInterrupt:
        report("error", "interrupted")
    except Exception as exc:  # any failure goes back to the parent, which says it in one line
        report("error", f"{type(exc).__name__}: {exc}")
    finally:
        results.close()
