"""The trials' reference, from their own catalogue (``controller.trials.plan.PLAN``), in the order they run."""

from __future__ import annotations

from tables import cell

from controller.trials.plan import PLAN, TRAFFIC


def trials_reference() -> str:
    total = sum(spec.deadline_s for spec in PLAN)
    parts = [
        f"{len(PLAN)} trials, run in this order, {total:g} s at most in all. Traffic: {TRAFFIC}.\n",
        "| trial | what the controller does | what passes | needs | at most |",
        "|---|---|---|---|---|",
    ]
    for spec in PLAN:
        proxy = " Also behind a proxy." if spec.through_proxy else ""
        parts.append(
            f"| `{spec.name}` | {cell(spec.does)} | {cell(spec.rule)}{proxy} | {cell(spec.needs)} "
            f"| {spec.deadline_s:g} s |"
        )
    return "\n".join(parts) + "\n"
