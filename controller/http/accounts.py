"""What the controller says of its connections (``GET /connections``) and of its switches (``GET /diagnosis``):
the same answers on the TLS port and on the admin listener."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from quart import Quart, Response, jsonify, request

from controller.accounts.connections import ConnectionRegistry
from controller.diagnosis.analysis import WindowError, diagnose, limits_of, parse_window
from controller.diagnosis.sentences import diagnosis_json
from dialout.config import ControllerConfig


def connections_answer(registry: ConnectionRegistry, switch: str | None, stream_times: bool = False) -> dict[str, Any]:
    """``cpu_s``: this process's CPU time so far, so that a fleet can tell which side of a run was CPU-bound.
    ``stream_times``: each connection's answered streams with their times (``?streams=1``), for one switch's
    cross-check."""
    records = []
    for connection in registry.connections(switch):
        record = connection.to_json()
        if stream_times:
            record["stream_times"] = connection.stream_times()
        records.append(record)
    return {
        "cpu_s": round(time.process_time(), 6),
        "connections": records,
        "switches": {
            name: {"connections": t.connections, "streams": t.streams, "peak_in_flight": t.peak_in_flight}
            for name, t in registry.totals().items()
            if switch is None or name == switch
        },
    }


def diagnosis_answer(
    cfg: ControllerConfig, registry: ConnectionRegistry, args: Mapping[str, str]
) -> tuple[dict[str, Any], int]:
    """``args``: the query (``switch``, ``since``, ``connections``); a bad window is a 400 with one line."""
    try:
        window = parse_window(args.get("since"), args.get("connections"))
    except WindowError as exc:
        return {"error": str(exc)}, 400
    found = diagnose(registry.connections(), registry.spans(), limits_of(cfg), window, args.get("switch"))
    return {"switches": [diagnosis_json(one) for one in found]}, 200


def serve_accounts(app: Quart, cfg: ControllerConfig, registry: ConnectionRegistry) -> None:
    """``GET /connections`` and ``GET /diagnosis`` on ``app``: the TLS port's app and the admin listener's."""

    @app.get("/connections")
    async def connections() -> Response:
        switch = request.args.get("switch")
        return jsonify(connections_answer(registry, switch, stream_times=request.args.get("streams") == "1"))

    @app.get("/diagnosis")
    async def diagnosis() -> tuple[Response, int]:
        answer, status = diagnosis_answer(cfg, registry, request.args)
        return jsonify(answer), status
