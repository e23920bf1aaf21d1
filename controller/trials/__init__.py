"""Trials: what real controllers do to a client, done on purpose and judged (``python -m controller trials``)."""
