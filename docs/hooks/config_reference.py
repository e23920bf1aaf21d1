"""config.yaml's reference, from the schema itself (``dialout.config_schema``): every key, its type, its default
and its meaning, in the order config.yaml shows them."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

from dialout.config import KIND_DOCS, ControllerConfig, Fleet, Scenario, Schedule, SwitchConfig
from dialout.config_fields import kind_of
from dialout.config_schema import KeyDoc, documented

SECTIONS: tuple[tuple[str, str, type[Any]], ...] = (
    ("controller", "controller", ControllerConfig),
    ("switch", "switch", SwitchConfig),
    ("scenarios", "scenarios.NAME", Scenario),
)
KINDS: dict[str, type[Any] | None] = {"pings": None, "persistent": Schedule, "fleet": Fleet}


def config_reference() -> str:
    parts: list[str] = []
    for title, path, cls in SECTIONS:
        parts.append(f"## `{title}`\n")
        entries = documented(cls, path)
        if cls is Scenario:
            parts.append(
                "Each scenario is a name under `scenarios:` and gives exactly one of `pings`, `persistent` or "
                "`fleet`: what it runs.\n"
            )
            parts.append(_table([_kind_row(key) for key in KINDS] + _rows(entries, path)))
            for key, kind in KINDS.items():
                if kind is not None:
                    parts.append(f"### `{path}.{key}`\n\n{KIND_DOCS[key]}\n")
                    parts.append(_table(_rows(documented(kind, f"{path}.{key}"), f"{path}.{key}")))
        else:
            parts.append(_table(_rows(entries, path)))
        for section in (entry for entry in entries if entry.section is not None):
            parts.append(f"### `{section.path}`\n\n{section.doc}\n")
            parts.append(_table(_rows(entries, section.path)))
    return "\n".join(parts)


def _rows(entries: list[KeyDoc], parent: str) -> list[str]:
    """The rows of the keys directly under ``parent``: a nested section is a row too, its keys under its own
    heading."""
    return [_row(entry) for entry in entries if entry.path.rsplit(".", 1)[0] == parent]


def _table(rows: list[str]) -> str:
    return "| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def _kind_row(key: str) -> str:
    what = "section" if KINDS[key] else "list of numbers, or `{count, interval_s}`"
    return f"| `{key}` | {what} | one of the three | {KIND_DOCS[key]} |"


def _row(entry: KeyDoc) -> str:
    kind = "section" if entry.reader is None else kind_of(entry.reader)
    key = entry.path.rsplit(".", 1)[-1]
    return f"| `{key}` | {kind} | {_default(entry)} | {entry.doc} |"


def _default(entry: KeyDoc) -> str:
    default = entry.default
    if default is dataclasses.MISSING:
        return "required" if entry.section is None else "none"
    if default is None:
        return "none"
    if entry.section is not None:
        return "its keys' own"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, enum.Enum):
        return f"`{default.value}`"
    if isinstance(default, tuple):
        return "`[" + ", ".join(_scalar(item) for item in default) + "]`" if default else "`[]`"
    if isinstance(default, Path):
        return f"`{default}`"
    return f"`{_scalar(default)}`"


def _scalar(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ": ".join(str(item) for item in value)
    return str(value)
