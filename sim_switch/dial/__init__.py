"""Dialling the controller: the one-shot run (``client``) and the persistent session (``session``), the stream pool
(``streams``), keepalive, where to dial next (``destinations``), TLS, the trace (``tracing``), failures classified
once (``failures``), and asking the controller what it saw (``controller_view``)."""
