"""Git-style path globs for claims: checking, matching, and deciding whether two overlap.

A pattern is relative to the repository root and matches whole paths: ``*`` any run of
characters within one segment, ``?`` one character, ``[a-z]``/``[!a-z]`` one of (not one of) a
set, ``\\`` escapes the next character, and ``**`` as a whole segment any number of segments
(``a/**/b`` matches ``a/b`` and ``a/x/y/b``; a trailing ``/**`` at least one; a lone ``**``
every path). Nothing matches ``/``. ``docs/*`` does not match ``docs/a/b.md``.

:func:`overlap` decides exactly whether some path matches both patterns, by walking the two
patterns' segments (and within a segment, their characters) together, memoized: no path is
enumerated. Standard library only: the client and the appservice share it.
"""

from __future__ import annotations

from functools import lru_cache
import re

#: A pattern's length, in characters.
MAX_PATTERN = 1024
#: Patterns in one request.
MAX_PATTERNS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SLASH = ord("/")
_TOP = 0x10FFFF

# A character token: ("lit", c) | ("any",) | ("set", negated, ((lo, hi), ...)) | ("star",)
Token = tuple[object, ...]
_STAR: Token = ("star",)
_ANY: Token = ("any",)
_GLOBSTAR = "**"
Segment = tuple[Token, ...] | str  # tokens, or _GLOBSTAR


class BadPattern(ValueError):
    """A pattern that is not a relative path glob (one line, shown as is)."""


def check(pattern: str) -> str:
    """The pattern, normalised (``./`` prefix dropped, a trailing ``/`` means ``/**``), or
    :class:`BadPattern` saying what is wrong with it."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise BadPattern("an empty pattern claims nothing: name paths such as 'src/api/**'")
    if len(pattern) > MAX_PATTERN:
        raise BadPattern(f"a pattern is at most {MAX_PATTERN} characters")
    if _CONTROL.search(pattern):
        raise BadPattern("a pattern may not contain control or bidirectional characters")
    if pattern.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", pattern):
        raise BadPattern(f"{pattern!r} is absolute: patterns are relative to the repository root")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if pattern.endswith("/"):
        pattern = pattern.rstrip("/") + "/**"
    parts = pattern.split("/")
    if any(p in ("..", ".") for p in parts):
        raise BadPattern(f"{pattern!r} has a '.' or '..' segment: name paths inside the repo")
    if any(not p for p in parts):
        raise BadPattern(f"{pattern!r} has an empty segment ('//')")
    return pattern


def check_all(patterns: list[str], limit: int = MAX_PATTERNS) -> list[str]:
    """Every pattern checked and normalised (duplicates dropped), or :class:`BadPattern`."""
    if not patterns:
        raise BadPattern("name at least one pattern")
    if len(patterns) > limit:
        raise BadPattern(f"{len(patterns):,} patterns: at most {limit} at a time")
    return list(dict.fromkeys(check(p) for p in patterns))


def _parse_set(seg: str, i: int) -> tuple[Token, int] | None:
    """The ``[...]`` set starting at ``seg[i]``, and the index after it; None if unclosed."""
    j = i + 1
    negated = j < len(seg) and seg[j] in "!^"
    if negated:
        j += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while j < len(seg):
        c = seg[j]
        if c == "]" and not first:
            return ("set", negated, tuple(ranges)), j + 1
        first = False
        if c == "\\" and j + 1 < len(seg):
            j += 1
            c = seg[j]
        lo = ord(c)
        if j + 2 < len(seg) and seg[j + 1] == "-" and seg[j + 2] != "]":
            j += 2
            hi_c = seg[j]
            if hi_c == "\\" and j + 1 < len(seg):
                j += 1
                hi_c = seg[j]
            ranges.append((lo, ord(hi_c)))
        else:
            ranges.append((lo, lo))
        j += 1
    return None


def _tokens(seg: str) -> tuple[Token, ...]:
    out: list[Token] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            if not out or out[-1] != _STAR:
                out.append(_STAR)
            i += 1
        elif c == "?":
            out.append(_ANY)
            i += 1
        elif c == "[" and (found := _parse_set(seg, i)) is not None:
            out.append(found[0])
            i = found[1]
        else:
            if c == "\\" and i + 1 < len(seg):
                i += 1
                c = seg[i]
            out.append(("lit", c))
            i += 1
    return tuple(out)


@lru_cache(maxsize=4096)
def parse(pattern: str) -> tuple[Segment, ...]:
    """A checked pattern as segments; a trailing ``**`` becomes ``*`` then ``**`` (at least
    one segment), and consecutive ``**`` collapse."""
    segs: list[Segment] = []
    for part in pattern.split("/"):
        if part == "**":
            if not segs or segs[-1] != _GLOBSTAR:
                segs.append(_GLOBSTAR)
        else:
            segs.append(_tokens(part))
    if segs and segs[-1] == _GLOBSTAR:
        segs.insert(len(segs) - 1, (_STAR,))
    return tuple(segs)


# --- matching ------------------------------------------------------------------------------


def _set_regex(token: Token) -> str:
    ranges = token[2]
    assert isinstance(ranges, tuple)
    body = "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        for lo, hi in ranges
    )
    if token[1]:
        return f"[^/{body}]"
    return f"(?!/)[{body}]" if body else "(?!)"


def _segment_regex(tokens: tuple[Token, ...]) -> str:
    parts = []
    for t in tokens:
        if t[0] == "star":
            parts.append("[^/]*")
        elif t[0] == "any":
            parts.append("[^/]")
        elif t[0] == "set":
            parts.append(_set_regex(t))
        else:
            parts.append(re.escape(str(t[1])))
    return "".join(parts)


@lru_cache(maxsize=8192)
def compile(pattern: str) -> re.Pattern[str]:
    """A regular expression matching exactly the paths the (checked) pattern matches."""
    out, need_sep = "", False
    for seg in parse(pattern):
        if seg == _GLOBSTAR:
            out += "(?:/[^/]+)*" if need_sep else "(?:[^/]+/)*"
        else:
            assert isinstance(seg, tuple)
            out += ("/" if need_sep else "") + _segment_regex(seg)
            need_sep = True
    return re.compile(out, re.DOTALL)


def matches(pattern: str, path: str) -> bool:
    """Whether the (checked) pattern matches the path (relative to the repository root)."""
    return compile(pattern).fullmatch(path) is not None


# --- overlap -------------------------------------------------------------------------------


def _contains(token: Token, code: int) -> bool:
    if code == _SLASH:
        return False
    kind = token[0]
    if kind == "any":
        return True
    if kind == "lit":
        return ord(str(token[1])) == code
    ranges = token[2]
    assert isinstance(ranges, tuple)
    inside = any(lo <= code <= hi for lo, hi in ranges)
    return inside != bool(token[1])


def _candidates(token: Token) -> list[int]:
    """Characters among which any non-empty intersection with this token has a member."""
    kind = token[0]
    if kind == "lit":
        return [ord(str(token[1]))]
    if kind == "any":
        return [ord("a"), ord("0")]
    ranges = token[2]
    assert isinstance(ranges, tuple)
    out = [0x21, ord("a"), _TOP]
    for lo, hi in ranges:
        out += [lo, lo + 1, hi, hi + 1, max(lo - 1, 0)]
    return out


def _common_char(a: Token, b: Token) -> bool:
    for code in _candidates(a) + _candidates(b):
        if 0 <= code <= _TOP and _contains(a, code) and _contains(b, code):
            return True
    return False


def _segments_overlap(a: tuple[Token, ...], b: tuple[Token, ...]) -> bool:
    """Whether some non-empty segment (no ``/``) matches both segment globs."""
    seen: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in seen:
            return seen[key]
        seen[key] = False  # cycles (star against star) add nothing
        if i == len(a):
            result = all(t == _STAR for t in b[j:])
        elif j == len(b):
            result = all(t == _STAR for t in a[i:])
        elif a[i] == _STAR:
            result = go(i + 1, j) or (b[j] != _STAR and _satisfiable(b[j]) and go(i, j + 1))
            result = result or (b[j] == _STAR and go(i, j + 1))
        elif b[j] == _STAR:
            result = go(i, j + 1) or (_satisfiable(a[i]) and go(i + 1, j))
        else:
            result = _common_char(a[i], b[j]) and go(i + 1, j + 1)
        seen[key] = result
        return result

    if not go(0, 0):
        return False
    if a and b and all(t == _STAR for t in a) and all(t == _STAR for t in b):
        return True  # both match any non-empty segment
    return True


def _satisfiable(token: Token) -> bool:
    return any(_contains(token, c) for c in _candidates(token))


@lru_cache(maxsize=65536)
def overlap(p: str, q: str) -> bool:
    """Whether some path matches both (checked) patterns."""
    a, b = parse(p), parse(q)
    seen: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in seen:
            return seen[key]
        seen[key] = False
        if i == len(a):
            result = all(s == _GLOBSTAR for s in b[j:])
        elif j == len(b):
            result = all(s == _GLOBSTAR for s in a[i:])
        elif a[i] == _GLOBSTAR:
            # zero segments, or one more segment (that b[j] matches, or b's ** skips)
            result = go(i + 1, j) or go(i, j + 1)
        elif b[j] == _GLOBSTAR:
            result = go(i, j + 1) or go(i + 1, j)
        else:
            sa, sb = a[i], b[j]
            assert isinstance(sa, tuple) and isinstance(sb, tuple)
            result = _segments_overlap(sa, sb) and go(i + 1, j + 1)
        seen[key] = result
        return result

    return go(0, 0)
