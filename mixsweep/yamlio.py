"""Reading YAML configs with one-line errors that name the file and where it broke."""

from __future__ import annotations

from pathlib import Path

import yaml

from mixsweep.errors import MixsweepError


def read_yaml(path: Path | str, what: str = "config file"):
    """The parsed content of a YAML file; a missing file or bad YAML is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MixsweepError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MixsweepError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
