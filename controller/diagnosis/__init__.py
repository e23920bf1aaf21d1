"""What a switch's HTTP client did, from the account: the analysis (``analysis``), its findings as data
(``findings``) and those findings in words (``sentences``)."""
