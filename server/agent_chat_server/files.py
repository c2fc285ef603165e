"""Safe file writes: temp file then rename, secrets with mode 0600; a private data dir.

Everything in a data dir is private to its owner (files 0600, folders 0700): homeserver.db
holds humans' Matrix access tokens, appservice.db every message and webhook secret.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import IO, Any
import os
import stat

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


#: The umask of the supervisor and everything it starts: new files 0600, new folders 0700.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as a 0700 folder, or take group and other
    permissions off an existing one."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


def open_private_append(path: Path) -> IO[bytes]:
    """``path`` opened for appending (a log), created 0600 and made 0600 if it was not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & 0o700)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def tighten_tree(root: Path) -> list[str]:
    """Take group and other permissions off ``root`` and everything under it; return the paths
    changed. Symbolic links are neither changed nor followed (nothing outside ``root`` is
    touched, even through a link swapped in meanwhile); files we may not change are skipped."""
    changed: list[str] = []
    try:
        top = root.resolve(strict=True)
    except OSError:
        return changed
    for dirpath, _dirs, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        _tighten_fd(dirfd, dirpath, changed)
        for name in filenames:  # folders: fwalk visits each with its own descriptor
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o077:
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
            except OSError:
                continue
            try:
                _tighten_fd(fd, os.path.join(dirpath, name), changed)
            finally:
                os.close(fd)
    return changed


def _tighten_fd(fd: int, where: str, changed: list[str]) -> None:
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & 0o700)
            changed.append(where)
    except OSError:
        pass
