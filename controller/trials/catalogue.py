"""Each trial of the plan by name, and how one is run: to its deadline, and a connection lost in the middle of
the controller's action (an OSError, h2's protocol error) is a failed trial, not the end of the run."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import h2.exceptions

from controller.trials import dials, handshakes, streams
from controller.trials.bench import Bench, Outcome
from controller.trials.plan import TrialName, TrialSpec
from controller.trials.results import TrialResult, Verdict
from dialout.loop_lag import Lag

logger = logging.getLogger(__name__)

TRIALS: dict[TrialName, Callable[[Bench, float], Awaitable[Outcome]]] = {
    TrialName.PING: streams.ping,
    TrialName.REFUSED_STREAM: streams.refused_stream,
    TrialName.GOAWAY_GRACEFUL: streams.goaway_graceful,
    TrialName.GOAWAY_UNPROCESSED: streams.goaway_unprocessed,
    TrialName.STREAM_LIMIT: streams.stream_limit,
    TrialName.RETRY_AFTER: streams.retry_after,
    TrialName.MAX_REQUESTS: streams.max_requests,
    TrialName.SLOW_SETTINGS: dials.slow_settings,
    TrialName.RESET: dials.reset,
    TrialName.SILENT: dials.silent,
    TrialName.REFUSE: dials.refuse,
    TrialName.CERT_ROTATION: handshakes.cert_rotation,
    TrialName.H1_ONLY: handshakes.h1_only,
}


async def run(bench: Bench, spec: TrialSpec) -> TrialResult:
    started = time.monotonic()
    if bench.proxy and not spec.through_proxy:
        sentence = (
            f"not possible through a proxy: the switch's connection ends at {bench.proxy}, and this trial acts on "
            "that connection's own frames, TCP or TLS"
        )
        return TrialResult(spec.name.value, Verdict.NOTE, sentence, (), bench.at(started), bench.at(started))
    try:
        verdict, sentence, steps = await TRIALS[spec.name](bench, started + spec.deadline_s)
    except (OSError, h2.exceptions.ProtocolError) as exc:  # the connection went mid-action: a failed trial
        verdict, sentence, steps = Verdict.FAIL, f"the trial could not finish: {exc or type(exc).__name__}", []
    except Exception as exc:  # a bug of ours: the run goes on, and its report is not lost with it
        logger.exception("trial %s: the trial itself broke", spec.name.value)
        verdict, sentence, steps = Verdict.FAIL, f"the trial itself broke (dialout's bug, see the log): {exc!r}", []
    if verdict is Verdict.NOT_EXERCISED:
        sentence = f"not exercised: {sentence}; for it to run, the client must {spec.needs}"
    lag = bench.lag.worst(started)
    if _lag_could_have_made(verdict, lag, spec):
        sentence = (
            f"inconclusive: the controller's loop lagged {lag} while it judged (this trial's verdict holds through "
            f"{spec.holds_through_lag_s * 1000:.0f} ms); it would have said: {verdict.value}: {sentence}"
        )
        verdict = Verdict.INCONCLUSIVE
    return TrialResult(spec.name.value, verdict, sentence, tuple(steps), bench.at(started), bench.at(time.monotonic()))


def _lag_could_have_made(verdict: Verdict, lag: Lag, spec: TrialSpec) -> bool:
    # An inconclusive verdict already says what it could not tell, and why (a redial's own slow handshake): the
    # loop's lag cannot make it less conclusive, and "it would have said: inconclusive" says nothing more.
    undecided = (Verdict.NOTE, Verdict.NOT_EXERCISED, Verdict.INCONCLUSIVE)
    if verdict in undecided or lag.worst_s <= spec.holds_through_lag_s:
        return False
    return not (verdict is Verdict.FAIL and spec.fail_holds_any_lag)
