"""The finding kinds, from the diagnosis's own catalogue (``controller.diagnosis.findings``): each kind's name,
severity and meaning, with the sentence ``explain`` prints for an example of it (``sentences.sentence``, where
the likely cause and the fix are written once)."""

from __future__ import annotations

import inspect

from controller.diagnosis.findings import (
    ORDER,
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
)
from controller.diagnosis.sentences import sentence
from dialout.refusals import Refusal

# One of each kind, as a client that does it would show: the sentences are the code's own.
EXAMPLES: tuple[Finding, ...] = (
    Refused((1,), 3, Refusal.NOT_IN_FLEET, "switch-7", "switch-1"),
    Http1Only((1, 2, 3), (Alpn.NONE,), 3),
    DialRace((1, 2, 3), (1, 1, 1), 0.004, 0.012, 1),
    NoReuse((1, 2, 3), 3, 0),
    ReconnectStorm((1, 2, 3, 4, 5), 4, 0.2, 0.003),
    StreamLimit((1,), 100, (2,), 0),
    Idle((2, 3), 30.0, 2),
    Multiplexed((1,), 3, 3),
    Sequential((1,), 5),
)


def findings_reference() -> str:
    examples = {finding.kind: finding for finding in EXAMPLES}
    missing = [kind.value for kind in ORDER if kind not in examples]
    if missing:
        raise ValueError(f"no example of the finding kinds {', '.join(missing)} in {__file__}")
    parts = []
    for kind in ORDER:
        example = examples[kind]
        meaning = inspect.getdoc(type(example)) or ""
        parts.append(
            f"### `{kind.value}`\n\n*{example.severity.value}.* {' '.join(meaning.split())}\n\n"
            f"For example, `explain` says:\n\n> {sentence(example)}\n"
        )
    return "\n".join(parts)
