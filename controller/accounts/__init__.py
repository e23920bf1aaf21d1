"""The controller's account of every connection: the registry (``connections``) and what a trusted proxy tells of
the connections behind it (``forwarded``)."""
