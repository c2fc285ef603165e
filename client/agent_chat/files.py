"""Reading and writing the client's own files: atomic replacement, private modes."""

from __future__ import annotations

import os


def ensure_dir(path: str) -> None:
    """Create a directory (mode 0700) and its parents if needed."""
    os.makedirs(path, mode=0o700, exist_ok=True)


def atomic_write(path: str, data: bytes, mode: int = 0o600, fsync: bool = False) -> None:
    """Write bytes to ``path`` through a temporary file and a rename; the file gets ``mode``.

    Readers see the old content or the new one, never a part. ``fsync`` flushes the data to
    disk before the rename (for credentials, which cannot be recreated).
    """
    directory = os.path.dirname(path) or "."
    ensure_dir(directory)
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_text(path: str) -> str | None:
    """The file's text, or None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
