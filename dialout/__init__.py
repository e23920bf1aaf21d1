"""What both halves of the pair share: the one config file (its fields, schema and YAML loader), dialout's PKI and
the TLS files either half presents and trusts, the command line's habits, and a few words written alike on both
ends.

It imports neither Quart, Hypercorn nor httpx, and nothing of ``controller`` or ``sim_switch``: both import it,
and never each other (an import-linter contract in ``make lint`` holds that).
"""
