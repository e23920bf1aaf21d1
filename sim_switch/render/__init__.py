"""The only modules that write prose: the trace, the summary and ``--json`` (``report``), the fleet's (``fleet``),
and the HTML page (``html``). They read the run's data and decide nothing."""
