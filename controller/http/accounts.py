"""What the controller says of its connections (``GET /connections``) and of its switches (``GET /diagnosis``):
the same answers on the TLS port and on the admin listener.

Who may read what: on the TLS port a switch reads only its own records (another switch's would tell it the
fleet's names, addresses and timings); a CN in ``controller.operators`` reads every switch's. The admin listener
answers everything: it is the operator's way in (loopback, or a credential).

The diagnosis shares the event loop with every switch's pings: at 10,000 connections it takes some 70 ms of CPU,
its JSON included, which in one piece would be 70 ms of every ping waiting (issue 20). It runs a slice
of at most ``SLICE_S`` at a time, letting the loop go between slices, and one diagnosis at a time, so that ten
askers at once do not take ten slices in a row. (A thread would not do: the loop would wait up to 5 ms, the
interpreter's switch interval, for every step it took, and a ping takes a dozen.)"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from quart import Quart, Response, jsonify, request

from controller.accounts.connections import ConnectionRegistry
from controller.accounts.ledger import Records
from controller.diagnosis.analysis import Carried, WindowError, diagnose_stepwise, limits_of, parse_window
from controller.diagnosis.sentences import diagnosis_json, refused_handshake_json
from controller.http.cpu import controller_cpu
from controller.http.json_text import json_text
from dialout.config import ControllerConfig
from dialout.loop_lag import LoopLag

# The switch whose records a request may read, or None: every switch's.
OwnRecords = Callable[[], str | None]
# The longest the diagnosis holds the event loop at a time.
SLICE_S = 0.002


def every_switch() -> str | None:
    return None


async def account_of(registry: ConnectionRegistry, switch: str | None = None, since: float | None = None) -> Records:
    """What the account holds (of ``switch``; of connections open at or after ``since``, monotonic): read from its
    store, so that it spans restarts and processes, or from this process's memory when it has none."""
    if registry.ledger is not None:
        return await registry.ledger.read(switch, since, registry.in_flight())
    connections = [c for c in registry.connections(switch) if since is None or c.closed is None or c.closed >= since]
    totals = {name: t for name, t in registry.totals().items() if switch is None or name == switch}
    return Records(connections, registry.spans(), totals)


async def connections_answer(
    registry: ConnectionRegistry, switch: str | None, stream_times: bool = False, since: float | None = None
) -> dict[str, Any]:
    """``cpu_s``: the controller's CPU time so far, over ``processes`` worker processes, so that a fleet can tell
    which side of a run was CPU-bound (``controller/http/cpu.py``).
    ``stream_times``: each connection's answered streams with their times (``?streams=1``), for one switch's
    cross-check. ``since`` (monotonic): only the connections open at or after then (a switch asks about its own
    run, not the controller's whole history of it)."""
    account = await account_of(registry, switch, since)
    lags = LoopLag.of_running_loop().history() if stream_times else None
    records = []
    for connection in account.connections:
        record = connection.to_json()
        if stream_times:
            record["stream_times"] = connection.stream_times(lags)
        records.append(record)
    cpu = controller_cpu()
    return {
        "cpu_s": round(cpu.cpu_s, 6),
        "processes": cpu.processes,
        # how long this controller has been running: a switch tells a restart from a lost record by it
        "uptime_s": round(time.monotonic() - registry.started, 6),
        # this process, as the account numbers the controller processes that wrote to it (each connection's "life")
        "life": None if registry.ledger is None else registry.ledger.life,
        "connections": records,
        "switches": {
            name: {"connections": t.connections, "streams": t.streams, "peak_in_flight": t.peak_in_flight}
            for name, t in account.totals.items()
        },
    }


async def diagnosis_answer(
    cfg: ControllerConfig,
    registry: ConnectionRegistry,
    args: Mapping[str, str],
    switch: str | None,
    turn: asyncio.Lock,
    everyone: bool = True,
) -> tuple[str, int]:
    """The JSON text of the answer, and its status. ``args``: the query (``since``, ``connections``); a bad window
    is a 400 with one line. ``switch``: only that switch's diagnosis. ``turn``: held while diagnosing.
    ``everyone``: the asker may read every client's records, and so, when no one switch is asked for, the handshakes
    refused too (by address: they never got as far as a name)."""
    try:
        window = parse_window(args.get("since"), args.get("connections"))
    except WindowError as exc:
        return json.dumps({"error": str(exc)}), 400
    async with turn:
        with _collector.held():
            account, lag = await account_of(registry), LoopLag.of_running_loop()
            steps = diagnose_stepwise(account.connections, account.spans, limits_of(cfg), window, switch, lag=lag)
            parts: list[str] = []
            carriers: list[dict[str, Any]] = []  # the trusted proxies' own connections, left out
            slice_began = time.perf_counter()
            for found in steps:
                if isinstance(found, Carried):
                    carriers.append({"proxy": found.proxy, "connections": found.connections})
                elif found is not None:
                    parts.append(json_text(diagnosis_json(found)))
                if time.perf_counter() - slice_began >= SLICE_S:
                    await asyncio.sleep(0)
                    slice_began = time.perf_counter()
    now = time.monotonic()
    handshakes = registry.refusals.since(window.since) if everyone and not switch else []
    refused = [refused_handshake_json(kept, now) for kept in handshakes if kept.name is None]
    tail = f',"carriers":{json_text(carriers)},"refused_handshakes":{json_text(refused)}'
    return '{"switches":[' + ",".join(parts) + "]" + tail + "}", 200


class _CollectorPause:
    """The cyclic garbage collector off while a diagnosis runs (any of the process's apps). A diagnosis's working
    set (a list per connection, a dict per switch: some 30,000 containers at 10,000 connections) lives across its
    slices; collections in between promoted it to the oldest generation, and every second or third diagnosis then
    paid for a full collection of the whole history: 60-100 ms with the loop held (measured). Freed by reference
    counting at the end, it never reaches the collector."""

    def __init__(self) -> None:
        self._holders = 0
        self._was_on = True

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if not self._holders:
            self._was_on = gc.isenabled()
            gc.disable()
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders and self._was_on:
                gc.enable()


_collector = _CollectorPause()


def serve_accounts(
    app: Quart, cfg: ControllerConfig, registry: ConnectionRegistry, own_records: OwnRecords = every_switch
) -> None:
    """``GET /connections`` and ``GET /diagnosis`` on ``app``: the TLS port's app and the admin listener's.
    ``own_records``: whose records the request in hand may read."""

    turn = asyncio.Lock()  # one diagnosis at a time on this app

    def asked_for() -> tuple[str | None, tuple[Response, int] | None]:
        asked, own = request.args.get("switch"), own_records()
        if own is not None and asked not in (None, own):
            refusal = f"{own} may read only its own records; controller.operators lists who may read every switch's"
            return None, (jsonify({"error": refusal}), 403)
        return own or asked, None

    @app.get("/connections")
    async def connections() -> Response | tuple[Response, int]:
        switch, refused = asked_for()
        if refused is not None:
            return refused
        try:
            since = parse_window(request.args.get("since"), None).since
        except WindowError as exc:
            return jsonify({"error": str(exc)}), 400
        answer = await connections_answer(registry, switch, request.args.get("streams") == "1", since)
        return Response(json_text(answer), mimetype="application/json")

    @app.get("/diagnosis")
    async def diagnosis() -> tuple[Response, int]:
        switch, refused = asked_for()
        if refused is not None:
            return refused
        everyone = own_records() is None
        text, status = await diagnosis_answer(cfg, registry, request.args, switch, turn, everyone)
        return Response(text, status, mimetype="application/json"), status
