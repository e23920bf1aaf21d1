"""Findings in words: one plain sentence each, with the likely cause and the fix where one is known; and the
JSON of ``GET /diagnosis``. Decides nothing: every number comes from the finding."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from controller.accounts.refusals import RefusedClient
from controller.diagnosis.findings import (
    JUDGED_FROM_TIMES,
    Alpn,
    DialRace,
    Finding,
    Http1Only,
    Idle,
    Multiplexed,
    NoReuse,
    ReconnectStorm,
    Refused,
    Sequential,
    StreamLimit,
    SwitchDiagnosis,
    holds_through,
    inconclusive,
)
from dialout.refusals import explained
from dialout.text import plural

MAX_LISTED = 8  # connection ids named in a sentence; JSON has them all

_CAUSES = {
    Alpn.NONE: (
        "the client offered no ALPN at all, so it never asked for HTTP/2 (not even http/1.1: its TLS config sets "
        "no protocols). Go's http.Transport does this when it is given its own TLSClientConfig: before Go 1.13 "
        "always (golang/go#25761, #14275), since then unless ForceAttemptHTTP2 is set. Fix: "
        "`ForceAttemptHTTP2: true` or `http2.ConfigureTransport(transport)`; elsewhere, offer ALPN h2"
    ),
    Alpn.HTTP11: (
        "the client offered http/1.1 but not h2 in ALPN: its HTTP/2 is switched off (curl --http1.1, httpx "
        "without http2=True, a Go Transport whose TLSNextProto is an empty map). Fix: turn HTTP/2 on in the client"
    ),
    Alpn.CLEARTEXT: (
        "on the cleartext listener the client spoke HTTP/1.1: h2c needs the client to start with the HTTP/2 "
        "preface (prior knowledge: curl --http2-prior-knowledge, httpx with http1=False and http2=True)"
    ),
}


def sentence(finding: Finding) -> str:  # noqa: C901 - one case per kind of finding, each its own sentence
    match finding:
        case Refused(connections, requests, refusal, name, mean):
            guess = f" Did you mean {mean}?" if mean else ""
            return (
                f"{_conns(connections)}: {plural(requests, 'request')} refused with 403 ({refusal}), as {name}: "
                f"{explained(refusal)}.{guess} Its requests are not judged as traffic."
            )
        case Http1Only(connections, offered, most_at_once):
            causes = "; and ".join(_CAUSES[alpn] for alpn in offered)
            return (
                f"{_conns(connections)} carried requests that overlapped in time (up to {most_at_once} at once), "
                f"each on its own HTTP/1.1 connection: {causes}."
            )
        case DialRace(connections, streams, within_s, handshake_s, races):
            handshake = f" (its handshake took {_ms(handshake_s)})" if handshake_s is not None else ""
            times = f" {races} times" if races > 1 else ""
            carried = ", ".join(str(count) for _, count in sorted(zip(connections, streams, strict=True)))
            return (
                f"{_conns(connections)} were dialled within {_ms(within_s)} of each other{times}, while the first "
                f"was still in its handshake{handshake}, and carried {carried} requests: the client dials a "
                "connection per request instead of waiting for the one in progress, as Go's http.Transport does "
                "with ForceAttemptHTTP2 for requests that start together, and curl with --parallel-immediate. "
                "The extras are waste: make the client wait for the dial in progress (Go: Transport.MaxConnsPerHost "
                "= 1; curl: --parallel without --parallel-immediate)."
            )
        case NoReuse(connections, closed_after_one, left_open):
            how = []
            if closed_after_one:
                how.append(f"closed {closed_after_one} of them after their one request")
            if left_open:
                how.append(f"did not send on {left_open} it still had open")
            return (
                f"{_conns(connections)} each carried one request: the client {' and '.join(how)}, and dialled "
                "anew for the next, paying a TCP and TLS handshake per request. Fix: keep one client (one "
                "connection pool) for the switch's lifetime, without `Connection: close`."
            )
        case ReconnectStorm(connections, redials, within_s, longest_gap_s):
            return (
                f"{_conns(connections)}: the client redialled {redials} times within {_duration(within_s)}, never "
                f"waiting more than {_ms(longest_gap_s)} after a connection closed: no backoff. Fix: wait before "
                "each redial, doubling the wait with random jitter (dialout's switch.reconnect: 0.1 s doubling to "
                "5 s, +/-20%), so a fleet does not redial in step."
            )
        case StreamLimit(connections, limit, spilled_to, queued):
            then = []
            if spilled_to:
                then.append(f"opened more connections for the rest ({_conns(spilled_to)})")
            if queued:
                then.append(f"queued {plural(queued, 'request')} until a stream was free")
            after = f"; the client {' and '.join(then)}" if then else ""
            return (
                f"{_conns(connections)} held {limit} streams at once, the limit this controller announces "
                f"(SETTINGS_MAX_CONCURRENT_STREAMS, controller.max_concurrent_streams){after}. Raise the limit if "
                "one connection should carry more."
            )
        case Idle(connections, longest_open_s, still_open):
            still = f", {still_open} still open" if still_open else ""
            return (
                f"{_conns(connections)} carried no request at all (open for up to {_duration(longest_open_s)}"
                f"{still}): connections dialled and never used, typically the losers of a dial race."
            )
        case Multiplexed(connections, most_at_once, streams):
            return (
                f"{_conns(connections)} carried {plural(streams, 'request')}, up to {most_at_once} at once on one "
                "connection: multiplexed."
            )
        case Sequential(connections, streams):
            return (
                f"{plural(streams, 'request')} on {_conns(connections)}, never two at once: nothing needed "
                "multiplexing."
            )


def headline(diagnosis: SwitchDiagnosis) -> str:
    """The main finding in a few words: for the controller's summary line at shutdown."""
    main = diagnosis.main
    if main is None:
        return "no requests" if not diagnosis.streams else "no finding"
    apart = f"; {len(diagnosis.runs)} runs apart, each judged alone" if len(diagnosis.runs) > 1 else ""
    return f"{main.kind} ({_conns(main.connections)}){apart}"


def diagnosis_json(diagnosis: SwitchDiagnosis) -> dict[str, Any]:
    """``GET /diagnosis``: per switch. Scripts rely on these names: add fields, never rename or remove them."""
    return {
        "switch": diagnosis.switch,
        "connections": diagnosis.connections,
        "streams": diagnosis.streams,
        "ok": diagnosis.ok,
        "inconclusive": diagnosis.any_inconclusive,
        "main": diagnosis.main.kind.value if diagnosis.main else None,
        "findings": [finding_json(finding) for finding in diagnosis.findings],
        "runs": [
            {
                "connections": list(run.connections),
                "streams": run.streams,
                "ok": run.ok,
                "main": run.main.kind.value if run.main else None,
            }
            for run in diagnosis.runs
        ],
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    evidence = {name: _plain(getattr(finding, name)) for name in _evidence(finding)}
    return {
        "kind": finding.kind.value,
        "severity": finding.severity.value,
        "connections": list(finding.connections),
        "evidence": evidence,
        "inconclusive": inconclusive(finding),
        "sentence": inconclusive_sentence(finding),
    }


def _evidence(finding: Finding) -> tuple[str, ...]:
    """A finding's fields but its connections: its evidence (its kind's fields walked once)."""
    names = _EVIDENCE.get(type(finding))
    if names is None:
        names = _EVIDENCE[type(finding)] = tuple(f.name for f in dataclasses.fields(finding) if f.name != "connections")
    return names


_EVIDENCE: dict[type, tuple[str, ...]] = {}


def inconclusive_sentence(finding: Finding) -> str:
    """The finding's sentence, said as inconclusive where the controller's own loop lag could have made it."""
    if not isinstance(finding, JUDGED_FROM_TIMES) or not inconclusive(finding):
        return sentence(finding)
    return (
        f"inconclusive: the controller's own loop lagged {_ms(finding.lag_s)} over the times this finding compares, "
        f"more than it holds through ({_ms(holds_through(finding))}); it would have said: {sentence(finding)}"
    )


def refused_handshake_json(refused: RefusedClient, now: float) -> dict[str, Any]:
    """``GET /diagnosis``'s ``refused_handshakes``: one client address and reason. Names as ``diagnosis_json``'s."""
    ago = now - refused.last
    return {
        "address": refused.host,
        "refusal": refused.refusal.value,
        "count": refused.count,
        "first_at": refused.first_at,
        "last_at": refused.last_at,
        "last_s_ago": round(ago, 3),
        "detail": refused.detail,
        "sentence": (
            f"{plural(refused.count, 'TLS handshake')} refused, the last {_ago(ago)}: {explained(refused.refusal)} "
            f"(OpenSSL: {refused.detail})."
        ),
    }


def _ago(seconds: float) -> str:
    """``just now``, ``5 s ago``, ``3 min ago``."""
    if seconds < 1:
        return "just now"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _plain(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _conns(ids: Sequence[int]) -> str:
    """``conn #5``, ``conns #5, #6 and #7``: in the order they were numbered (opened), whatever order the finding
    keeps them in (a race's: its handshakes')."""
    ids = sorted(ids)
    if len(ids) == 1:
        return f"conn #{ids[0]}"
    shown = [f"#{id_}" for id_ in ids[:MAX_LISTED]]
    if len(ids) > MAX_LISTED:
        return f"conns {', '.join(shown)}, ... ({len(ids)} in all)"
    return f"conns {', '.join(shown[:-1])} and {shown[-1]}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return _ms(seconds)
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
