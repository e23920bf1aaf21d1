"""Commands that are not serving: ``explain`` (ask a running controller) and ``nginx_conf`` (the proxy in front)."""
