"""Reading a user's YAML file (a sweep) safely: bounded, strict, and numbers as people write them.

PyYAML's ``safe_load`` constructs no Python objects, but it still trusts the document's shape:

- aliases are shared, not copied, so a 600-byte "billion laughs" file loads instantly and then
  expands when anything walks it (``str()``, a grid product, JSON): the expanded size of the
  document is bounded here, before anything is constructed;
- a key given twice silently keeps the last value: here it is an error naming the key and line;
- YAML 1.1 reads ``1e-4`` (no dot) as a string: here it is a float, like ``1.0e-4`` and ``0.0001``;
- a non-UTF-8 file or a very large one fails with one line naming the file.

Every error is an ``MlbenchError`` naming the file (and the line where there is one).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from metalora.errors import MlbenchError

MAX_YAML_BYTES = 1 << 20  # a sweep file is a few hundred bytes; 1 MiB leaves room for any real one
MAX_YAML_NODES = 100_000  # scalars + collections after expanding every alias
MAX_YAML_DEPTH = 64  # nesting deeper than this is never a configuration


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting, refuses duplicated keys and reads ``1e-4`` as a float."""

    depth = 0

    def compose_node(self, parent, index):
        # Bounded here, while composing (PyYAML recurses per level), not by a RecursionError later.
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" then overriding a merged key is the point of merging
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key (a list): the base class says so with its line
                    continue
        return super().construct_mapping(node, deep=deep)


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first: int):
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


# YAML 1.2's float syntax for what YAML 1.1 leaves a string: exponent without a dot (1e-4, 2E-4).
# Added after the built-in resolvers, so integers and 1.1 floats keep their usual meaning.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def load_yaml_file(path: str | Path, what: str = "YAML file") -> object:
    """The document in ``path`` as plain data (dicts, lists, str, int, float, bool, None, dates)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise MlbenchError(f"{what} {path} is {size:,} bytes; a {what} is at most {MAX_YAML_BYTES:,} bytes")
        raw = path.read_bytes()
    except OSError as error:
        raise MlbenchError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise MlbenchError(f"{what} {path} is not UTF-8 text (line {line}); save it as UTF-8") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> object:
    """Parse YAML text from ``source`` (named in errors) with the bounds above."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, source)
        return loader.construct_document(node)
    except _DuplicateKey as error:
        lines = f"line {error.first}" if error.first == error.line else f"lines {error.first} and {error.line}"
        raise MlbenchError(f"{source}: key {error.key!r} is given twice ({lines}); keep one of them") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise MlbenchError(f"malformed YAML in {source}{where}: {problem}") from None
    except _TooDeep as error:
        raise MlbenchError(f"{source} is nested more than {MAX_YAML_DEPTH} levels deep (line {error.line})") from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, source: str) -> None:
    """Refuse documents whose alias-expanded size is out of bounds, in time linear in the number of
    distinct nodes (an alias is the same node object as its anchor, so sizes memoise)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise MlbenchError(f"{source}: an alias refers to its own anchor (line {node.start_mark.line + 1})")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            for child in children:
                total += size(child)
                if total > MAX_YAML_NODES:
                    raise MlbenchError(
                        f"{source} expands to more than {MAX_YAML_NODES:,} values once its aliases (*name) are "
                        f"resolved (line {node.start_mark.line + 1}); write the values out instead"
                    )
            active.discard(key)
        sizes[key] = total
        return total

    size(root)
