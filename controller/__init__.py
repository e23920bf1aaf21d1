"""The controller end of the dial-out pair: a Quart app served by Hypercorn over HTTP/2 with mutual TLS.

``controller.config`` and ``controller.pki`` are leaf modules that import nothing of Quart or Hypercorn; the
switch uses them. Keep this file free of imports so that importing them stays light.
"""
