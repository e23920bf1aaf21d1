"""Many switches at once: the run (``run``), over worker processes (``workers``), reduced to a mergeable tally
(``tally``, ``histograms``), and which side was the bottleneck (``bottleneck``)."""
