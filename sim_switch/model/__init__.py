"""What a run produced, as data, importing nothing else of the switch: each ping and connection (``results``), the
trace's events (``events``), why a ping failed (``failures``) and the judgement (``verdict``)."""
