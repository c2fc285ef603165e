"""Safe file writes: temp file then rename, secrets with mode 0600."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any
import os

from ruamel.yaml import YAML


def dump_yaml(data: Any) -> str:
    """YAML text for plain data (dicts, lists, str, int, bool), ending with a newline."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    # ruamel initialises this flag to None ("default: sort"), so its inferred type is None.
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    out = StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def load_yaml(path: Path) -> Any:
    """Parse a YAML file (errors propagate: callers turn them into one line)."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_temp(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write ``text`` next to ``path`` in a temp file with ``mode``; return the temp path."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` in one rename."""
    os.replace(write_temp(path, text, mode), path)
