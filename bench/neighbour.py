"""A neighbour that keeps a share of one core busy and does nothing else: what a client as busy as the sim-switch
costs this machine's other core, whoever the client is.

On this 2-core machine, a Python client at ~45% of a core beside a one-worker controller slows the controller's
requests by about a tenth, though it never takes the controller's core: h2load beside such a neighbour got 0.90x of
h2load alone (four rounds taking turns, 2026-12-07). h2load itself costs next to nothing, so measured beside a
neighbour as busy as the switch it is the reference that leaves only the switch's own doing in sim-switch / h2load.
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
