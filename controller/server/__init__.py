"""Serving: Hypercorn with our TLS context, listeners and shutdown (``serve``), and the patches of Hypercorn's and
asyncio's internals that serving needs, kept together so that an upgrade re-checks one folder:

- ``asgi_tls``: Hypercorn 0.18's ``TCPServer`` (the connection behind each request, the ASGI TLS extension) and its
  HTTP/2 ``HTTPStream`` (the wire's stream id);
- ``tls_alerts``: asyncio's SSL protocol, so a refused client certificate gets its TLS alert (CPython gh-98078);
- ``graceful``: Hypercorn's connections at shutdown (GOAWAY, then REFUSED_STREAM for new streams).

``tests/test_identity.py`` pins the names these replace.
"""
