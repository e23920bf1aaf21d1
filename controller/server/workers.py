"""``serve --workers N``: the controller in N processes on one port, one account between them.

The parent binds the sockets and forks the workers; each worker serves with its own event loop, its own
Hypercorn, its own registry and its own life in the account's store (``controller/accounts/ledger.py``), so that
``/connections``, ``/diagnosis`` and ``explain`` read every worker's records. Every worker accepts on the same
listening sockets, a new connection going to one with the fewest open (``balance.py``); the parent keeps them
open, so connections that arrive while a worker is started again wait for the others. Worker 1 also serves the
admin listener (its live page shows worker 1's streams in flight; what it reads after the fact, every worker's).

The parent serves nothing. A worker that dies is started again, and the log says so; one that keeps dying at start
stops them all. SIGTERM or SIGINT is passed on to every worker: each sends GOAWAY, lets its pings finish for up to
``graceful_timeout_s`` and cuts what is left, and the parent returns once all have stopped. A worker is forked with
both blocked, and they stay so until its loop handles them (``stop_signals_handled``): one that comes meanwhile
waits for it, rather than meet the parent's handler (inherited at the fork: it served on, unwatched, until killed)
or the default (killed at once: "not every worker stopped cleanly").

Forked, not spawned (as Hypercorn's own workers are): the config, the certificates' checks and the bound sockets
are already here, and the modules imported once are shared copy-on-write. Nothing that runs a thread or holds the
store is made before the fork (the ledger is each worker's own).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from controller.http.cpu import count_the_workers_together
from dialout.text import plural

logger = logging.getLogger(__name__)

# A worker that dies within this long of its start this many times in a row is not started again: something it
# needs is gone (its certificate, its store), and restarting it would only fill the log.
EARLY_DEATH_S = 2.0
EARLY_DEATHS = 3
# How long the parent waits for a worker's exit once every worker was told to stop, beyond the grace: the
# workers bound themselves (serve returns within graceful_timeout_s plus its cut bound).
STOP_MARGIN_S = 10.0

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

# What a worker runs: serve on the parent's sockets until told to stop (calling ``stop_signals_handled`` once it
# handles them); its exit code (0: nothing was cut).
Worker = Callable[[int], int]


@dataclass
class _Slot:
    """One worker's place: the process now in it, when that started, how many died young in a row."""

    number: int
    process: BaseProcess
    started: float
    early_deaths: int = 0


def supervise(
    workers: int, worker: Worker, grace_s: float, gone: Callable[[int, int], None] = lambda number, pid: None
) -> int:
    """Run ``worker(number)`` in ``workers`` forked processes (numbered from 1), starting each again when it dies,
    until SIGTERM or SIGINT; then every worker drains, and the exit code is 0 when none cut a stream. ``gone``: told
    the number and pid of each worker process that has ended."""
    context = multiprocessing.get_context("fork")
    stopping: list[float] = []  # when the stop began, once it has

    def stop(signum: int, _: FrameType | None) -> None:
        if not stopping:
            logger.info("%s: every worker finishes its in-flight requests, then stops", signal.Signals(signum).name)
            stopping.append(time.monotonic())
        for slot in slots.values():
            _signal(slot.process, signal.SIGTERM)

    def start(number: int) -> None:
        """Worker ``number`` in its slot, forked with the stop signals blocked: in the parent too, until the slot
        holds it, so that a stop that comes meanwhile (``stop``, once unblocked) is passed on to it as well."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process = context.Process(target=_run_worker, args=(worker, number), name=f"controller worker {number}")
            process.start()
            if number in slots:
                slots[number].process, slots[number].started = process, time.monotonic()
            else:
                slots[number] = _Slot(number, process, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    slots: dict[int, _Slot] = {}
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        for number in range(1, workers + 1):
            start(number)
        pids = ", ".join(str(slot.process.pid) for slot in slots.values())
        logger.info("serving with %s (pids %s)", plural(workers, "worker process"), pids)
        code = _watch(slots, start, stopping, grace_s, gone)
        said = "every worker stopped cleanly" if code == 0 else "not every worker stopped cleanly (above: which)"
        logger.info("stopped: %s", said)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _watch(
    slots: dict[int, _Slot],
    start: Callable[[int], None],
    stopping: list[float],
    grace_s: float,
    gone: Callable[[int, int], None],
) -> int:
    """Start dead workers again until told to stop; then wait for every worker's end (a worker still there
    ``STOP_MARGIN_S`` after its grace is killed). The exit code."""
    code = 0
    while slots:
        timeout = None if not stopping else max(0.0, stopping[0] + grace_s + STOP_MARGIN_S - time.monotonic())
        ended = wait([slot.process.sentinel for slot in slots.values()], timeout)
        if not ended and stopping:
            for slot in slots.values():
                logger.error("worker %d (pid %s) did not stop within its grace: killed", slot.number, slot.process.pid)
                _signal(slot.process, signal.SIGKILL)
                slot.process.join(STOP_MARGIN_S)  # at once: SIGKILL is not asked, it is done
            code = 1
            continue
        for slot in [slot for slot in list(slots.values()) if slot.process.sentinel in ended]:
            slot.process.join()
            exitcode = slot.process.exitcode
            if slot.process.pid is not None:
                gone(slot.number, slot.process.pid)
            if stopping:
                code = code or (0 if exitcode == 0 else 1)
                if exitcode is not None and exitcode < 0:  # (one that exits says itself what it cut)
                    logger.error("worker %d (pid %s) %s while stopping", slot.number, slot.process.pid, _how(exitcode))
                del slots[slot.number]
                continue
            young = time.monotonic() - slot.started < EARLY_DEATH_S
            slot.early_deaths = slot.early_deaths + 1 if young else 0
            if slot.early_deaths >= EARLY_DEATHS:
                logger.error(
                    "worker %d died %d times within %g s of its start (%s): stopping every worker",
                    slot.number,
                    slot.early_deaths,
                    EARLY_DEATH_S,
                    _how(exitcode),
                )
                del slots[slot.number]
                stopping.append(time.monotonic())
                for other in slots.values():
                    _signal(other.process, signal.SIGTERM)
                code = 1
                continue
            logger.warning("worker %d (pid %s) %s; starting it again", slot.number, slot.process.pid, _how(exitcode))
            start(slot.number)
    return code


def _run_worker(worker: Worker, number: int) -> None:
    """In the forked child: the parent's signal handlers undone (the worker's loop sets its own, and then
    ``stop_signals_handled``), then serve."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    count_the_workers_together()
    code = worker(number)
    logging.shutdown()
    os._exit(code)


def stop_signals_handled() -> None:
    """Called by a worker once its loop handles SIGTERM and SIGINT: what came since the fork is delivered now. (In
    a process that never blocked them, nothing.)"""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _signal(process: BaseProcess, signum: signal.Signals) -> None:
    if process.pid is not None and process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile: its sentinel says so
            os.kill(process.pid, signum)


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"
