"""The other end's account: what the controller saw of this run, held against what the switch saw.

After the pings the switch asks ``GET /connections?switch=ID&streams=1`` on the same client, and matches the
controller's records to its own connections by address (the controller's peer address is the switch's local
address). The query is itself a stream, on a connection the response names, so it is subtracted before
comparing. The times are compared too, stream by stream: an answer that reached the switch late is a
disagreement (``late_answers``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import httpx

from sim_switch.dial.failures import classify, refused_with
from sim_switch.dial.tracing import Tracer
from sim_switch.model.events import AskingController, ControllerAnswered, NoDiagnosis
from sim_switch.model.results import (
    Concurrency,
    ConnectionRecord,
    ControllerFinding,
    ControllerView,
    Disagreement,
    LateAnswer,
    NoRecord,
    PingResult,
    StreamCount,
    peak_in_flight,
    surely_in_flight,
)

# How much further back than the run's start the question reaches: the question's own way to the controller.
SINCE_MARGIN_S = 1.0


async def ask_controller(
    client: httpx.AsyncClient,
    controller_url: str,
    switch_id: str | None,
    tracer: Tracer,
    pings: Sequence[PingResult],
    forgot_earlier: bool = False,
) -> ControllerView:
    """``switch_id`` None: an anonymous switch (cleartext), whose connections are found by address alone."""
    url = f"{controller_url.rstrip('/')}/connections"
    # Only the connections open during this run (seconds ago, on the controller's clock: no clocks compared), not
    # the controller's whole history of this switch, each with up to a thousand streams' times.
    query = {"streams": "1", "since": f"{tracer.now_s() + SINCE_MARGIN_S:.3f}"}
    if switch_id is not None:
        query["switch"] = switch_id
    shown = f"{url}?switch={switch_id}" if switch_id is not None else url
    tracer.emit(AskingController(at_s=tracer.now_s(), url=shown))
    label = switch_id or "an anonymous switch"
    try:
        response = await client.get(url, params=query)
    except httpx.HTTPError as exc:
        return ControllerView(label, error=classify(exc))
    refusal = _refusal(response)
    if refusal is not None:  # dialout's controller, which keeps an account and refused to show it to us
        view = ControllerView(label, error=refused_with(response.status_code, refusal))
        tracer.emit(ControllerAnswered(at_s=tracer.now_s(), view=view))
        return view
    answer = _json(response)
    records = _records(response.status_code, answer)
    if records is None:  # someone else's controller: it answered, but not with dialout's account
        view = ControllerView(label, no_account=f"GET /connections: {_answer(response)}")
        tracer.emit(ControllerAnswered(at_s=tracer.now_s(), view=view))
        return view
    query_on = tracer.connection_of(response.extensions.get("network_stream"))
    # When the controller started, on the run's clock: a connection of ours from before it is one it cannot know
    # of (it restarted), however the switch got over the restart. Its uptime is a duration: no clocks compared.
    uptime_s = _uptime_s(answer)
    forgets_before_s = math.inf if forgot_earlier else None
    if uptime_s is not None:
        forgets_before_s = tracer.now_s() - uptime_s
    # Only what went to this controller: after a failover the others' connections are not its to know.
    connections = [record for record in tracer.connections if record.controller in (None, controller_url)]
    asked_about = [ping for ping in pings if ping.controller in (None, controller_url)]
    on = query_on.number if query_on else None
    view = compare(label, connections, asked_about, records, on, forgets_before_s)
    tracer.emit(ControllerAnswered(at_s=tracer.now_s(), view=view))
    if view.records:
        view = dataclasses.replace(view, findings=await _ask_diagnosis(client, controller_url, view, tracer))
    return view


# What a controller's account says of a connection that its process left open when it was killed
# (controller/accounts/store.py): dialout's wire word, not an import (the switch stands on dialout alone).
CONTROLLER_GONE = "controller_gone"


def _json(response: httpx.Response) -> object:
    """The answer's JSON, read once (None if it is not JSON)."""
    try:
        return response.json()
    except ValueError:
        return None


def _uptime_s(answer: object) -> float | None:
    """How long the controller had been running when it answered (dialout's ``uptime_s``; None if not said)."""
    uptime = answer.get("uptime_s") if isinstance(answer, dict) else None
    return float(uptime) if isinstance(uptime, int | float) and not isinstance(uptime, bool) else None


async def _ask_diagnosis(
    client: httpx.AsyncClient, controller_url: str, view: ControllerView, tracer: Tracer
) -> tuple[ControllerFinding, ...] | None:
    """The controller's findings about exactly this run's connections, or None if it gives none (an older
    dialout, or it failed: the comparison of counts stands on its own)."""
    ids = ",".join(str(record["id"]) for record in view.records)
    url = f"{controller_url.rstrip('/')}/diagnosis"
    about = tuple(int(record["id"]) for record in view.records)
    tracer.emit(AskingController(at_s=tracer.now_s(), url=url, about_connections=about))
    try:
        response = await client.get(url, params={"connections": ids})
        if response.status_code != 200:
            tracer.emit(NoDiagnosis(at_s=tracer.now_s(), answer=_answer(response)))
            return None
        return tuple(
            ControllerFinding(str(f["kind"]), str(f["severity"]), tuple(f["connections"]), str(f["sentence"]))
            for diagnosis in response.json()["switches"]
            for f in diagnosis["findings"]
        )
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        tracer.emit(NoDiagnosis(at_s=tracer.now_s(), failure=classify(exc)))
        return None


def _refusal(response: httpx.Response) -> str | None:
    """What a dialout controller said when it refused the question (403 with ``refused``: not in its fleet, say)."""
    if response.status_code != 403:
        return None
    try:
        answer = response.json()
    except ValueError:
        return None
    if not isinstance(answer, dict) or "refused" not in answer:
        return None
    return str(answer.get("error") or answer["refused"])


def _records(status: int, answer: object) -> list[dict[str, Any]] | None:
    """The controller's connection records, or None when the answer is not dialout's account."""
    if status != 200 or not isinstance(answer, dict):
        return None
    records = answer.get("connections")
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and {"id", "peer", "streams"} <= r.keys() for r in records
    ):
        return None
    return records


def late_answers(connection: ConnectionRecord, pings: Sequence[PingResult], stream_times: object) -> list[LateAnswer]:
    """Each ping on ``connection`` whose answer took longer at the switch (request written to answer read) than at
    the controller (request arrived to answer sent) by more than ``LATE_ANSWER_S`` and the round trip. Clocks
    need not agree: each end measures a duration on its own. ``stream_times``: the controller's, by stream id
    (an older controller, or one behind a proxy, has none: nothing to check)."""
    if not isinstance(stream_times, list):
        return []
    answered_in = {
        entry["stream_id"]: (float(entry["answered_in_s"]), float(entry.get("loop_lag_s", 0.0)))
        for entry in stream_times
        if isinstance(entry, dict) and isinstance(entry.get("stream_id"), int)
    }
    bound_s = connection.crossing_s
    late = []
    for ping in pings:
        if ping.connection != connection.number or ping.stream_id is None or ping.stream_id not in answered_in:
            continue
        if ping.headers_sent_at_s is None or ping.finished_at_s is None:
            continue
        switch_s = ping.finished_at_s - ping.headers_sent_at_s
        controller_s, controller_lag_s = answered_in[ping.stream_id]
        if switch_s - controller_s > bound_s:
            late.append(
                LateAnswer(
                    connection.number,
                    connection.local_address,
                    ping.number,
                    ping.stream_id,
                    switch_s,
                    controller_s,
                    bound_s,
                    ping.loop_lag_s,
                    controller_lag_s,
                )
            )
    return late


def _answer(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{response.status_code} {response.reason_phrase}, {kind}"


def compare(
    switch_id: str,
    connections: Sequence[ConnectionRecord],
    pings: Sequence[PingResult],
    records: Sequence[dict[str, Any]],
    query_connection: int | None,
    forgets_before_s: float | None = None,
) -> ControllerView:
    """Match the controller's records to the switch's connections and list every number they disagree on.
    ``forgets_before_s``: when the controller started, on the run's clock (``math.inf``: it restarted, when is
    not known): a connection opened before it that it has no record of is counted as forgotten, not as a
    disagreement; so is one whose record an earlier life of the controller left when it was killed (its account
    closed it as ``controller_gone``: as it last wrote it, cut short where the switch's own went on)."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in sorted(records, key=lambda r: int(r["id"])):  # a port can be reused: the newest record wins
        latest[str(entry["peer"])] = entry
    disagreements: list[Disagreement] = []
    inconclusive: list[LateAnswer] = []
    matched: list[dict[str, Any]] = []
    streams = forgotten = 0
    for connection in connections:
        record = latest.get(connection.local_address)
        cut_short = record is not None and record.get("closed_for") == CONTROLLER_GONE
        if (record is None or cut_short) and forgets_before_s is not None and connection.opened_at_s < forgets_before_s:
            forgotten += 1
            continue
        if record is None:
            disagreements.append(NoRecord(connection.number, connection.local_address))
            continue
        matched.append(record)
        query = 1 if connection.number == query_connection else 0
        sent = sum(1 for ping in pings if ping.connection == connection.number and ping.status is not None) + query
        seen = int(record["streams"])
        streams += seen - query
        if sent != seen:
            disagreements.append(StreamCount(connection.number, connection.local_address, sent, seen))
        on_it = [ping for ping in pings if ping.connection == connection.number]
        switch_peak = peak_in_flight(on_it)
        controller_peak = int(record["peak_in_flight"])
        # Two pings that crossed on the wire (the first answered before the second arrived) were at once at the
        # switch only: the controller's one at a time is no disagreement unless the overlap was more than that.
        switch_sure = surely_in_flight(on_it, connection.crossing_s) >= 2
        if (switch_sure and controller_peak < 2) or (switch_peak < 2 and controller_peak >= 2):
            disagreements.append(Concurrency(connection.number, connection.local_address, switch_peak, controller_peak))
        for late in late_answers(connection, pings, record.get("stream_times")):
            (inconclusive if late.inconclusive else disagreements).append(late)
    return ControllerView(
        switch=switch_id,
        records=tuple(matched),
        streams=streams,
        peak_in_flight=max((int(record["peak_in_flight"]) for record in matched), default=0),
        unused=sum(1 for record in matched if int(record["streams"]) == 0),
        disagreements=tuple(disagreements),
        inconclusive=tuple(inconclusive),
        forgotten=forgotten,
    )
