"""A neighbour that keeps a share of one core busy and does nothing else: what a client as busy as the sim-switch
costs this machine's other core, whoever the client is.

On this 2-core machine a client keeps ~45% of the core beside a one-worker controller's. h2load (which costs next to
nothing) beside a neighbour that busy, taking turns with h2load alone (2026-12-07): 0.90x over 4 rounds, 0.95x
over 8, 1.06x in one bench run; the machine's own speed drifted by a third within those minutes. A few percent,
then, of what separates a Python client from h2load, measured in the same run so that it can be read off beside
sim-switch / h2load on any machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

BUSY_S = 0.001  # one busy stretch; then a sleep that makes the share

# Busy for BUSY_S, asleep for the rest of the share's cycle, until killed. Work (not a spin on the clock alone) so
# that it uses the core's caches and memory as a client's Python would.
_BURN = """
import sys, time
busy, idle = float(sys.argv[1]), float(sys.argv[2])
while True:
    began = time.perf_counter()
    while time.perf_counter() - began < busy:
        [n * n for n in range(200)]
    time.sleep(idle)
"""


@contextmanager
def busy_neighbour(share: float) -> Iterator[None]:
    """A process beside this one keeping ``share`` (0 to 1) of one core busy, while the block runs."""
    share = min(max(share, 0.01), 1.0)
    idle_s = BUSY_S * (1 - share) / share
    process = subprocess.Popen([sys.executable, "-c", _BURN, str(BUSY_S), str(idle_s)])
    try:
        yield
    finally:
        process.kill()
        process.wait()
