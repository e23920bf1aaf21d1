"""What one half tells the other beyond HTTP, as both read it: the debug data of the controller's GOAWAY.

RFC 9113 section 6.8 lets a GOAWAY carry opaque debug data. When ``python -m controller trials`` has run its
plan it sends every connection a GOAWAY saying ``TRIALS_OVER``: a switch running ``--scenario trials`` ends its
session then, instead of redialling a controller that has stopped on purpose. Any other client reads a graceful
GOAWAY (NO_ERROR) and may ignore the words.
"""

from __future__ import annotations

TRIALS_OVER = b"dialout: the trials are over"
