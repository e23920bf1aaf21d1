"""The controller end of the dial-out pair: a Quart app served by Hypercorn over HTTP/2 with mutual TLS.

It imports ``dialout`` (the config, the PKI) and nothing of ``sim_switch``. Keep this file free of imports.
"""
