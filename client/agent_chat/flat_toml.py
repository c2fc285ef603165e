"""config.toml's TOML: a tiny reader and writer for flat tables of strings.

The client writes config.toml with :func:`dump_toml` and reads it on every command, so the
reader is its own (``tomllib`` costs ~10 ms of imports): :func:`parse_flat_toml` takes the flat
tables of strings we write, and :func:`parse_toml` falls back to ``tomllib`` for anything a
person may have written by hand (comments after values, numbers, multi-line strings...).
"""

from __future__ import annotations

from .errors import ConfigFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_ESCAPES = {
    "\\": "\\",
    '"': '"',
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "e": "\x1b",
}


def _unescape_basic(s: str) -> str:
    out = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("dangling backslash")
            e = s[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e in "uU":
                width = 4 if e == "u" else 8
                out.append(chr(int(s[i + 2 : i + 2 + width], 16)))
                i += 2 + width
            else:
                raise ValueError("unknown escape")
        elif c == '"':
            raise ValueError("unescaped quote")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _bare(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_-" for c in name)


def parse_flat_toml(text: str) -> dict[str, object]:
    """Parse the flat tables of strings we write; raise ValueError on anything else."""
    data: dict[str, object] = {}
    table = data
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]") and not line.startswith("[["):
            name = line[1:-1].strip()
            if not _bare(name):
                raise ValueError("complex table name")
            existing = data.get(name)
            if existing is None:
                table = data[name] = {}
            elif isinstance(existing, dict):
                table = existing
            else:
                raise ValueError("a table named like a key")
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        value = value.strip()
        if not eq or not _bare(key):
            raise ValueError("complex key")
        if len(value) >= 2 and value[0] == value[-1] == '"' and not value.startswith('"""'):
            table[key] = _unescape_basic(value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'" and not value.startswith("'''"):
            table[key] = value[1:-1]
        else:
            raise ValueError("not a plain string")
    return data


def parse_toml(text: str, path: str = "config.toml") -> dict[str, object]:
    """Parse config.toml: the fast flat parser, else tomllib.

    Raises:
        ConfigFileError: the text is not valid TOML.
    """
    try:
        return parse_flat_toml(text)
    except (ValueError, IndexError):
        pass
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{path} is not valid TOML: {e}") from None


def _toml_string(value: str) -> str:
    out = ['"']
    for c in value:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def dump_toml(data: Mapping[str, object]) -> str:
    """Write flat tables of strings (``{"server": {"url": "..."}}``) as TOML.

    Values that are not tables are left out, and so are None values inside a table.
    """
    chunks = []
    for table, values in data.items():
        if not isinstance(values, dict):
            continue
        lines = [f"[{table}]"]
        for key, value in values.items():
            if value is None:
                continue
            lines.append(f"{key} = {_toml_string(str(value))}")
        chunks.append("\n".join(lines) + "\n")
    return "\n".join(chunks)
