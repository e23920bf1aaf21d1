"""Reading config.yaml with the line of every key, so an error can say ``file:line: key.path: message``.

``load_yaml`` returns the document as plain Python data and a map from each key path (``scenarios.seed.pings[2]``)
to its 1-based line; ``line_of`` finds the line of a path, or of its nearest ancestor in the file. Duplicate keys,
which PyYAML would let the last one win silently, are rejected here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from controller.config_fields import ConfigError

__all__ = ["line_of", "load_yaml"]


def load_yaml(path: Path) -> tuple[object, dict[str, int]]:
    """The document at ``path`` (``None`` for an empty file) and the line of every key path in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config: {exc.strerror or exc}", location=str(path)) from exc
    loader = yaml.SafeLoader(text)
    try:
        # What yaml.safe_load does, in two steps: the node tree carries the line numbers.
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"not valid YAML: {problem}", location=where) from exc
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if root is not None:
        try:
            _record_lines(root, "", lines)
        except ConfigError as exc:
            exc.location = f"{path}:{lines.get(exc.path, '?')}"
            raise
    return data, lines


def _record_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            if child in lines:
                lines[child] = key_node.start_mark.line + 1
                raise ConfigError(child, "duplicate key")
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{path}[{index}]"
            lines[child] = item.start_mark.line + 1
            _record_lines(item, child, lines)


def line_of(path: str, lines: Mapping[str, int]) -> int:
    """The line of ``path``, or of its nearest ancestor that is in the file (a missing key is reported on the
    line of the mapping that should hold it)."""
    while path:
        if path in lines:
            return lines[path]
        path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
    return 1
