"""The documentation's pages that ``--help`` and error messages point to, named once. Each is a file in the
checkout (``docs/...``), readable as it is, and a page of the site ``make docs`` serves; ``tests/test_docs.py``
holds every one to exist and to be in the site's navigation."""

from __future__ import annotations

import enum

__all__ = ["Page", "read_more"]


class Page(enum.StrEnum):
    GETTING_STARTED = "docs/getting-started.md"
    READING_A_RUN = "docs/reading-a-run.md"
    YOUR_OWN_CLIENT = "docs/your-own-client.md"
    EXPLAIN = "docs/explain.md"
    TRIALS = "docs/trials.md"
    NGINX = "docs/nginx.md"
    PKI = "docs/pki.md"
    FOREIGN_CONTROLLER = "docs/foreign-controller.md"
    SESSIONS = "docs/sessions.md"
    FLEETS = "docs/fleets.md"
    ADMIN = "docs/admin.md"
    ACCOUNT = "docs/account.md"
    TROUBLESHOOTING = "docs/troubleshooting.md"
    CONFIG = "docs/reference/config.md"
    CLI = "docs/reference/cli.md"


def read_more(page: Page) -> str:
    return f"read more: {page}"
