"""Serving: Hypercorn with our TLS context, listeners and a shutdown bounded in time (``serve``). Where serving
bends its libraries, one module each, so that an upgrade re-checks one place:

- ``hypercorn_seam``: every Hypercorn class we put in its place, the Hypercorn bugs mended on the way, our typed
  ``Config``; checked at start against the Hypercorn and h2 series it was written for;
- ``dialout.asyncio_seam`` (shared with the switch): asyncio's SSL protocol, so a refused client certificate gets
  its TLS alert (CPython gh-98078), handshakes are paced, and a connection's read buffer is 32 KiB, not 256;
- ``dialout.h2_seam`` (shared with the switch): h2's state machine, opened again after a GOAWAY.

``accepting`` gives the listening sockets (ours) a subclass, so that asyncio's accept() counts pending handshakes:
no library's internals are touched there.

What the replaced classes do is in ``asgi_tls`` (the connection behind each request, the ASGI TLS extension),
``h2_actions`` (a trial's levers), ``h2_limits`` (the abuse limits) and ``graceful`` (GOAWAY, then
REFUSED_STREAM, at shutdown). ``tests/test_seams.py`` pins the names these replace.
"""
