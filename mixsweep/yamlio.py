"""Reading YAML configs with one-line errors that name the file and where it broke.

Loading stays safe (yaml.SafeLoader: plain data, no Python objects) and is stricter than PyYAML's default: a
key given twice in one mapping is an error (PyYAML keeps the last one silently, so a second `grid:` would
replace the first), and a scalar that looks like a date or carries a tag but is not one (`2001-13-45`,
`!!int abc`) is a YAML error with its line, not a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, SequenceNode

from mixsweep.errors import MixsweepError

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.YAMLError):
    """A mapping gives the same key twice: `path` leads to it from the document's top, `mark` is where it is
    given again and `first` where it was given first."""

    def __init__(self, path: tuple[Any, ...], mark: Mark, first: Mark):
        where = ".".join(map(str, path))
        super().__init__(f"{where}: duplicate key at line {mark.line + 1}, column {mark.column + 1} "
                         f"(first at line {first.line + 1}, column {first.column + 1})")
        self.path, self.mark, self.first = path, mark, first


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises DuplicateKey for a key given twice in one mapping.

    Merge keys (`<<: *base`) are not duplicates: a key beside them overrides the merged one, as YAML means.
    """

    def __init__(self, stream: Any):
        super().__init__(stream)
        # Each mapping node's key path, noted by its parent before the parent's values are constructed
        # (PyYAML builds nested mappings after their parent), so a duplicate can name its full key path.
        self._paths: dict[Node, tuple[Any, ...]] = {}

    def _note_path(self, node: Node, path: tuple[Any, ...]) -> None:
        if node in self._paths or not isinstance(node, (MappingNode, SequenceNode)):
            return  # seen first elsewhere (an alias; `&a [*a]` even contains itself), or a scalar
        self._paths[node] = path
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self._note_path(item, path + (i,))

    def construct_document(self, node: Node) -> Any:
        self._note_path(node, ())
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        path = self._paths.get(node, ())
        first: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it below
            if seen:
                raise DuplicateKey(path + (key,), key_node.start_mark, first[key])
            first[key] = key_node.start_mark
            self._note_path(value_node, path + (key,))
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # A date-like or tagged scalar that is not valid (month 13, `!!int abc`) raises ValueError from
        # datetime/int; report it as YAML, at its line.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:
            what = f"{node.value!r} is not a valid" if isinstance(node.value, str) else "not a valid"
            raise ConstructorError(None, None, f"{what} {node.tag.rsplit(':', 1)[-1]} ({e})", node.start_mark) from None


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def read_yaml(path: Path | str, what: str = "config file") -> Any:
    """The parsed content of a YAML file; a missing, unreadable or binary file, bad YAML or a duplicate key is
    one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MixsweepError(f"{path}: {what} not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MixsweepError(f"{path}: cannot read the {what}: {_one_line(e.strerror or e)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MixsweepError(f"{path}: not a {what}: binary content (byte {e.start} is not UTF-8 text)") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKey as e:
        raise MixsweepError(f"{path}: {e}") from None
    except yaml.reader.ReaderError as e:  # a control character: its str() spans lines
        raise MixsweepError(f"{path}: not a {what}: character #x{e.character:04x} at position {e.position} is "
                            "not allowed in YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MixsweepError(f"{path}: malformed YAML{where}: {_one_line(getattr(e, 'problem', None) or e)}") from None
    except RecursionError:
        raise MixsweepError(f"{path}: malformed YAML: nested too deeply") from None
