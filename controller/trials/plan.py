"""The trials a controller puts a switch's client through (``python -m controller trials``), as data: each one's
name (the CLI's and the JSON's), what the controller does, the rule the client is held to, and how long it may
take.

``PLAN`` runs in its order: h1-only last, since a client that falls back to HTTP/1.1 may stay there. A trial with
``through_proxy`` can be done to a switch behind a proxy (nginx's front): the rest act on the switch's own
connection (its frames, its TCP, its TLS), which ends at the proxy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# What most trials act on: a connection with a request in flight; and a client that dials again when it goes.
IN_FLIGHT = "keep at least one request in flight on an HTTP/2 connection (pings of a second or more, sent often)"
AND_REDIAL = f"{IN_FLIGHT}, and dial again when the connection goes"
# What keeps every trial fed, for --list and --help: the shipped switch's `trials` scenario does it.
TRAFFIC = (
    "a client must keep up, for the whole plan: requests of 1 s, 3 every 0.5 s (some 6 in flight) on one HTTP/2 "
    "connection, each a target of its own (/ping?interval=1&n=1, 2, ...), dialling again whenever its connection "
    "goes (`python -m sim_switch --scenario trials` does it)"
)
# reset and refuse call redials under 100 ms apart a storm: a lag of half that could make a storm look like waits
STORM_LAG_S = 0.05


class TrialName(enum.StrEnum):
    PING = "ping"
    REFUSED_STREAM = "refused-stream"
    GOAWAY_GRACEFUL = "goaway-graceful"
    GOAWAY_UNPROCESSED = "goaway-unprocessed"
    STREAM_LIMIT = "stream-limit"
    RETRY_AFTER = "retry-after"
    MAX_REQUESTS = "max-requests"
    RESET = "reset"
    SILENT = "silent"
    REFUSE = "refuse"
    SLOW_SETTINGS = "slow-settings"
    CERT_ROTATION = "cert-rotation"
    H1_ONLY = "h1-only"


@dataclass(frozen=True)
class TrialSpec:
    name: TrialName
    does: str  # what the controller does
    rule: str  # what the client is held to, and where the rule comes from
    deadline_s: float  # the trial ends by then, whatever the client does
    needs: str  # what the client must do for the trial to run at all (else it is "not exercised")
    through_proxy: bool = False  # can be done to a switch behind a proxy (only what the app answers can)
    # The controller's loop lag its verdict holds through: a lag past it could have made the verdict (a PING ACK
    # timed out, a redial taken for a wait), and the trial is inconclusive. The trials judge waits of seconds
    # (deadlines, backoffs, silences) but for two: a storm is redials under 100 ms apart.
    holds_through_lag_s: float = 0.5
    fail_holds_any_lag: bool = False  # a fail it finds is not made by lag (lag only lengthens the waits it times)


PLAN: tuple[TrialSpec, ...] = (
    TrialSpec(
        TrialName.PING,
        "sends a PING on the switch's connection",
        "a PING is ACKed at once (RFC 9113 section 6.7)",
        5.0,
        "keep an HTTP/2 connection to the controller open",
    ),
    TrialSpec(
        TrialName.REFUSED_STREAM,
        "answers the next request with RST_STREAM REFUSED_STREAM",
        "a refused request was not processed and may be sent again (RFC 9113 section 8.7)",
        15.0,
        "keep sending requests on an HTTP/2 connection",
    ),
    TrialSpec(
        TrialName.GOAWAY_GRACEFUL,
        "sends GOAWAY NO_ERROR naming the last stream it has, with requests in flight",
        "those requests are answered; new ones go on a new connection, none on the old (RFC 9113 section 6.8)",
        20.0,
        IN_FLIGHT,
    ),
    TrialSpec(
        TrialName.GOAWAY_UNPROCESSED,
        "sends GOAWAY naming a last stream below the requests in flight, and drops those",
        "requests above the GOAWAY's last stream were not processed and may be sent again (RFC 9113 section 6.8)",
        20.0,
        "keep at least two requests in flight at once on one HTTP/2 connection",
    ),
    TrialSpec(
        TrialName.STREAM_LIMIT,
        "lowers SETTINGS_MAX_CONCURRENT_STREAMS to 1 on the switch's connection",
        "once it has ACKed the SETTINGS, the client keeps at most 1 stream open there (RFC 9113 section 6.5.2)",
        15.0,
        "keep an HTTP/2 connection open, sending requests, two or more at once to test the limit",
    ),
    TrialSpec(
        TrialName.RETRY_AFTER,
        "answers the next request 503 with Retry-After: 2",
        "a client that retries waits as long as Retry-After says (RFC 9110 section 10.2.3)",
        10.0,
        "keep sending requests (through a proxy too), each a target of its own (?n=1, 2, ...)",
        through_proxy=True,
    ),
    TrialSpec(
        TrialName.MAX_REQUESTS,
        "sends GOAWAY after 3 more requests on the connection, as Hypercorn's keep_alive_max_requests does",
        "the client moves to a new connection without losing a request (RFC 9113 section 6.8)",
        20.0,
        "keep a request in flight on an HTTP/2 connection and send at least 3 more within the trial",
    ),
    TrialSpec(
        TrialName.SLOW_SETTINGS,
        "sends GOAWAY, then holds each new connection's SETTINGS 2 s",
        "the client waits for the connection it is dialling, and races no other (RFC 9113 section 9.1)",
        15.0,
        AND_REDIAL,
    ),
    TrialSpec(
        TrialName.RESET,
        "resets the switch's TCP connection (RST) with requests in flight, then each redial, 3 in a row",
        "the client redials with a backoff, not in a tight loop (gRPC's connection backoff: 1 s, x1.6)",
        20.0,
        AND_REDIAL,
        holds_through_lag_s=STORM_LAG_S,
        fail_holds_any_lag=True,
    ),
    TrialSpec(
        TrialName.SILENT,
        "stops reading and writing the switch's connection, and leaves it open",
        "the client notices a silent connection (a PING unanswered, its keepalive) and redials (RFC 9113 6.7)",
        30.0,
        AND_REDIAL,
    ),
    TrialSpec(
        TrialName.REFUSE,
        "resets the switch's connection, then every new one from its address for 6 s",
        "the client backs off, the waits growing, with jitter, to a cap (gRPC's connection backoff: 1 s, x1.6, "
        "jitter 0.2, up to 120 s), and comes back once let in",
        25.0,
        "keep an HTTP/2 connection open, and keep dialling when it is reset (a session, not one-shot)",
        holds_through_lag_s=STORM_LAG_S,
        fail_holds_any_lag=True,
    ),
    TrialSpec(
        TrialName.CERT_ROTATION,
        "presents a new certificate from the same CA on new handshakes, and sends GOAWAY",
        "the client trusts the CA, not one certificate, and carries on (RFC 9525: the chain and the name)",
        15.0,
        AND_REDIAL,
    ),
    TrialSpec(
        TrialName.H1_ONLY,
        "offers only http/1.1 in ALPN on new handshakes, and sends GOAWAY",
        "a client that offered http/1.1 and is given it speaks HTTP/1.1 (RFC 7301 section 3.2)",
        15.0,
        AND_REDIAL,
    ),
)


def trial(name: str) -> TrialSpec:
    return next(spec for spec in PLAN if spec.name == name)
