"""Every error dialout says to a person, in one line, and the exit code it means (0 ok, 1 the run failed, 2 usage,
config or certificate error). Each ``__main__`` catches ``DialoutError`` alone, prints it and exits with its code;
anything else that escapes is a bug (``dialout.command_line.run_guarded``: exit 70).

    DialoutError                        2 unless said
    ├── ConfigError                     config.yaml or an option: ``file:line key.path: message``
    ├── PKIError                        a certificate or key missing, unusable, or not to be made
    ├── h2_seam.H2SeamError             an h2 of a series dialout was not written for
    ├── controller.server.hypercorn_seam.SeamError  a Hypercorn or h2 of a series the controller was not written for
    ├── controller.server.serve.ServerError       cannot listen: 1 when the machine refuses (a port taken),
    │                                             2 when the command line asked for what is not allowed
    ├── controller.commands.explain.ExplainError  the controller could not be asked, or saw no such switch
    ├── sim_switch.render.html.ReportFileError    --html cannot go there (a file of the user's is never overwritten)
    ├── sim_switch.fleet.tally.MergeError         shards that are not one fleet's, or not a fleet's at all
    └── sim_switch.fleet.workers.WorkerError      a fleet's worker process died: 1

The halves' own errors live beside the code that raises them; this tree is where they are all drawn.
"""

from __future__ import annotations

from typing import ClassVar

from dialout.pages import Page, read_more

__all__ = ["ConfigError", "DialoutError", "PKIError"]


class DialoutError(Exception):
    """An error a person can act on, said in one line (``str(error)``)."""

    exit_code: ClassVar[int] = 2
    page: Page | None = None  # the documentation's page that explains it at length, if one does

    @property
    def code(self) -> int:
        """The exit code this error means (an instance may know better than its class)."""
        return self.exit_code

    def told(self) -> str:
        """The one line a person reads: the error, then where to read more when a page explains it."""
        return f"{self} ({read_more(self.page)})" if self.page else str(self)


class ConfigError(DialoutError):
    """The config is unusable. ``path`` is the YAML key path (``scenarios.seed.pings[2]``); ``location`` is
    ``file:line`` once the loader knows it."""

    def __init__(self, path: str, message: str, location: str | None = None) -> None:
        super().__init__(path, message, location)
        self.path = path
        self.message = message
        self.location = location
        # An option's error (--port) points to --help; config.yaml's, to its reference.
        self.page = None if path.startswith("-") else Page.CONFIG

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        key = f"{self.path}: " if self.path else ""
        return f"{prefix}{key}{self.message}"


class PKIError(DialoutError):
    """Certificates are missing, unusable, or cannot be made."""

    page = Page.PKI
