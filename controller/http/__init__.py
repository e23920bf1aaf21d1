"""What the controller serves over HTTP: the TLS app with ``/ping`` (``app``, ``interval``), the admin listener's app
(``admin``) with its live page (``live``, ``admin_page.html``) and ``/metrics`` (``metrics``), and the routes both
share (``accounts``: ``/connections``, ``/diagnosis``)."""
