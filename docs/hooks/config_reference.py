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
        if cls is Scenario:
            parts.append(
                "Each scenario is a name under `scenarios:` and gives exactly one of `pings`, `persistent` or "
                "`fleet`: what it runs.\n"
            )
            rows = [_kind_row(f"{path}.{key}", key) for key in KINDS]
            for key, kind in KINDS.items():
                rows += [_row(entry) for entry in documented(kind, f"{path}.{key}")] if kind else []
            rows += [_row(entry) for entry in documented(cls, path)]
        else:
            rows = [_row(entry) for entry in documented(cls, path)]
        parts.append("| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def _kind_row(path: str, key: str) -> str:
    what = "section" if KINDS[key] else "list of numbers, or `{count, interval_s}`"
    return f"| `{path}` | {what} | one of the three | {KIND_DOCS[key]} |"


def _row(entry: KeyDoc) -> str:
    kind = "section" if entry.reader is None else kind_of(entry.reader)
    return f"| `{entry.path}` | {kind} | {_default(entry)} | {entry.doc} |"


def _default(entry: KeyDoc) -> str:
    default = entry.default
    if default is dataclasses.MISSING:
        return "required" if entry.section is None else "none"
    if default is None:
        return "none"
    if entry.section is not None:
        return "as below"
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
