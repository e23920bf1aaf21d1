"""The switch end of the dial-out pair: dials the controller with httpx and shows, like Go's httptrace, every
connection event and whether its concurrent pings were multiplexed over one HTTP/2 connection.

It imports ``dialout`` (the config, the PKI) and nothing of ``controller``: a switch does not carry Quart or
Hypercorn.
"""
