"""What the references share of Markdown tables. (Not markdown.py: that is Python-Markdown's own name, which
MkDocs imports.)"""

from __future__ import annotations


def cell(text: str) -> str:
    """``text`` as a table cell: its pipes escaped."""
    return text.replace("|", "\\|")
