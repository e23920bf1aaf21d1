"""A config section is its dataclass: the fields that config.yaml may set say so with ``setting`` (how to read the
value, under which key) or ``subsection`` (a nested section), and ``build`` reads a YAML mapping into the class.

So a section's allowed keys, their readers and their defaults are written once, on the field; adding a key is one
edit. Fields without either (``client_certs_optional``, a scenario's ``name``) are not config keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dialout.config_fields import mapping
from dialout.errors import ConfigError

T = TypeVar("T")
Reader = Callable[[object, str], Any]

_READ = "dialout.read"
_KEY = "dialout.key"
_RELATIVE = "dialout.relative"
_SECTION = "dialout.section"
_DOC = "dialout.doc"
_IN_FILE = "dialout.in_file"


def setting(
    read: Reader,
    default: Any = dataclasses.MISSING,  # noqa: ANN401 - any field's default
    *,
    doc: str,
    key: str | None = None,
    relative: bool = False,
    in_file: Path | None = None,
) -> Any:  # noqa: ANN401 - stands where the field's default would
    """A field config.yaml may set under ``key`` (default: the field's name), read by ``read(value, key_path)``.
    ``doc``: what it means, for the configuration reference (docs/reference/config.md, made from it).
    ``relative``: the value is a path that resolves against config.yaml's directory. No default: required.
    ``in_file``: the default of a config read from a file, a path beside it (``default`` is then a config built in
    code's: a test's, which has no directory of its own to write in)."""
    metadata = {_READ: read, _KEY: key, _RELATIVE: relative, _DOC: doc, _IN_FILE: in_file}
    return dataclasses.field(default=default, metadata=metadata)


def subsection(cls: type[Any], default: Any = dataclasses.MISSING, *, doc: str) -> Any:  # noqa: ANN401
    """A field that is a nested section under the field's name, itself a dataclass of settings."""
    return dataclasses.field(default=default, metadata={_SECTION: cls, _DOC: doc})


def keys_of(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """config.yaml's keys for section ``cls``, each with its field."""
    return {
        field.metadata.get(_KEY) or field.name: field
        for field in dataclasses.fields(cls)
        if _READ in field.metadata or _SECTION in field.metadata
    }


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One key of config.yaml as the reference shows it."""

    path: str  # controller.admin.port
    reader: Reader | None  # None: a section of its own
    default: object  # dataclasses.MISSING: required
    doc: str
    section: type[Any] | None  # the nested section's class


def documented(cls: type[Any], path: str) -> list[KeyDoc]:
    """Every key of section ``cls`` under ``path``, nested sections' keys after their own, in the fields' order.
    A key without a meaning is a ``ValueError``: the reference is never built with a hole in it."""
    keys: list[KeyDoc] = []
    for key, field in keys_of(cls).items():
        child = f"{path}.{key}" if path else key
        doc = field.metadata.get(_DOC, "").strip()
        if not doc:
            raise ValueError(f"config key {child} has no meaning (doc=) in {cls.__module__}.{cls.__qualname__}")
        nested = field.metadata.get(_SECTION)
        default = field.metadata.get(_IN_FILE) or field.default
        keys.append(KeyDoc(child, field.metadata.get(_READ), default, doc, nested))
        if nested is not None:
            keys += documented(nested, child)
    return keys


def read_settings(
    cls: type[Any], data: object, path: str, base_dir: Path, *, also: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The field values that ``data`` (a YAML mapping) sets for section ``cls``, keyed by field name. ``also``
    names further keys the caller reads itself. A required key that is missing, an
    unknown key and a bad value are each a ``ConfigError`` naming the key path."""
    keys = keys_of(cls)
    section = mapping(data, path, set(keys) | also)
    values: dict[str, Any] = {}
    for key, field in keys.items():
        child = f"{path}.{key}" if path else key
        if key not in section:
            if field.default is dataclasses.MISSING:
                raise ConfigError(child, "missing")
            default = field.metadata.get(_IN_FILE) or field.default
            if field.metadata.get(_RELATIVE) and default is not None:
                # A default path is as relative as a written one: config.yaml's directory, not the working one.
                values[field.name] = base_dir / default
            continue
        nested = field.metadata.get(_SECTION)
        if nested is not None:
            values[field.name] = build(nested, section[key], child, base_dir)
            continue
        value = field.metadata[_READ](section[key], child)
        values[field.name] = base_dir / value if field.metadata[_RELATIVE] and isinstance(value, Path) else value
    return values


def build(cls: type[T], data: object, path: str, base_dir: Path) -> T:
    """Section ``cls`` as ``data`` sets it, every other field at its default."""
    return cls(**read_settings(cls, data, path, base_dir))
