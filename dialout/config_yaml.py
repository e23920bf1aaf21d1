"""Reading config.yaml with the line of every key, so an error can say ``file:line: key.path: message``.

``load_yaml`` returns the document as plain Python data and a map from each key path (``scenarios.seed.pings[2]``)
to its 1-based line; ``line_of`` finds the line of a path, or of its nearest ancestor in the file. Duplicate keys,
which PyYAML would let the last one win silently, are rejected here.

A config file is input like any other: bytes that are not UTF-8, nesting deep enough to exhaust Python's stack and
aliases that expand a few lines into billions of nodes ("billion laughs") are each one ``ConfigError`` naming the
file, found before the tree is walked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from dialout.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_NODES", "line_of", "load_yaml"]

# Far deeper than dialout's schema (scenarios.NAME.request.headers is 4) and far shallower than Python's recursion
# limit, which PyYAML's composer reaches at about 330 levels.
MAX_DEPTH = 64
# Nodes in the tree once aliases are expanded: a 100,000-switch config written out is well below this, and walking
# this many takes about a tenth of a second. An alias bomb of 9 lines reaches 10**9.
MAX_NODES = 1_000_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than ``MAX_DEPTH`` before its recursion goes there."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]  # untyped in the stubs
                raise _TooDeep(line)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def load_yaml(path: Path) -> tuple[object, dict[str, int]]:
    """The document at ``path`` (``None`` for an empty file) and the line of every key path in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config: {exc.strerror or exc}", location=str(path)) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            "",
            f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} cannot start a character",
            location=f"{path}:{line}",
        ) from None
    loader = _BoundedLoader(text)
    try:
        # What yaml.safe_load does, in two steps: the node tree carries the line numbers, and is measured before
        # anything (construction included) walks it.
        root = loader.get_single_node()
        if root is not None:
            _check_size(root, path)
        data = loader.construct_document(root) if root is not None else None
    except _TooDeep as exc:
        raise ConfigError("", f"nested more than {MAX_DEPTH} levels deep", location=f"{path}:{exc.line}") from None
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


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse a tree whose aliases expand it past ``MAX_NODES``. Each distinct node is sized once (an alias is the
    same node object again), so this costs the size of the file, not of the expansion."""
    sizes: dict[int, int] = {}
    # Depth-first without recursion, children before their parent: a node is sized once all of its children are.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        size = 1 + sum(sizes[id(child)] for child in children)
        if size > MAX_NODES:
            line = node.start_mark.line + 1
            raise ConfigError(
                "",
                f"expands to more than {MAX_NODES:,} values through its aliases (&anchor and "
                "*alias); write the repeated part out, or less of it",
                location=f"{path}:{line}",
            )
        sizes[id(node)] = size


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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
