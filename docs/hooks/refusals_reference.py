"""Every refusal the controller names, from its one catalogue (``dialout.refusals``): what the client did, as the
controller saw it, and what to change. The controller's log, ``/diagnosis``, ``explain`` and a refused switch say
the same words."""

from __future__ import annotations

from tables import cell

from dialout.refusals import Refusal, words


def refusals_reference() -> str:
    rows = ["| refusal | what the client did | what to change |", "|---|---|---|"]
    for refusal in Refusal:
        said = words(refusal)
        rows.append(f"| `{refusal.value}` | {cell(said.what)} | {cell(said.fix)} |")
    return "\n".join(rows) + "\n"
