"""What a run produced, as data: each ping and connection (``results``) and the judgement (``verdict``)."""
