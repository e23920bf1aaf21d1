"""``python -m controller account``: what the controller's account holds (``show``), all of it as JSON
(``export``), and retention applied now (``prune``). It reads the store beside a running controller as well as a
stopped one's: SQLite in WAL mode lets a reader in while the controller writes."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from controller.accounts.store import Store
from dialout.config import ControllerConfig, Retention
from dialout.errors import ConfigError
from dialout.text import plural

ACTIONS = {
    "show": "where the account is, how big, what it holds, and what it keeps (the default)",
    "export": "every record as JSON, to standard output or --output FILE",
    "prune": "drop now what retention would drop as the controller writes (controller.retention)",
}


def location(cfg: ControllerConfig) -> Path | str:
    if cfg.account is None:
        raise ConfigError(
            "controller.account", "is null: the account is kept in the controller's memory only, with nothing to show"
        )
    return cfg.account


def show(cfg: ControllerConfig) -> str:
    db = Store(location(cfg), create=False)
    try:
        size = db.size()
    finally:
        db.close()
    kept = f"{plural(size.connections, 'connection')}, {plural(size.streams, 'stream')}"
    span = f"; opened {_when(size.oldest)} to {_when(size.newest)}" if size.oldest is not None else ""
    return "\n".join(
        [
            f"account: {size.location} (schema {size.schema}, {size.bytes_on_disk / 1e6:.1f} MB on disk)",
            f"  holds {kept} of {size.lives} controller {'life' if size.lives == 1 else 'lives'}{span}",
            f"  keeps {describe(cfg.retention)} (controller.retention)",
        ]
    )


def describe(retention: Retention) -> str:
    return (
        f"{_duration(retention.max_age_s)}, at most {retention.max_connections:,} closed connections and "
        f"{retention.max_streams:,} streams"
    )


def prune(cfg: ControllerConfig) -> str:
    db = Store(location(cfg), create=False)
    try:
        dropped = db.prune(cfg.retention)
    finally:
        db.close()
    return f"account: {db.location}: dropped {plural(dropped, 'row')}, keeping {describe(cfg.retention)}"


def export(cfg: ControllerConfig, output: Path | None) -> str | None:
    """Write every record as one JSON document; the line to say after it (to stderr), if any. ``output``: a new
    file (one that exists is refused: it may be the user's)."""
    if output is not None and output.exists():
        raise ConfigError("--output", f"{output} exists; name a new file (dialout never overwrites one)")
    db = Store(location(cfg), create=False)
    try:
        if output is None:
            _write(db.export(), sys.stdout)
            return None
        with output.open("x", encoding="utf-8") as file:
            _write(db.export(), file)
    finally:
        db.close()
    return f"account: {db.location} written to {output}"


def _write(parts: Iterator[str], file: TextIO) -> None:
    for part in parts:
        file.write(part)
    file.write("\n")


def _when(wall: float | None) -> str:
    if wall is None:
        return "-"
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
