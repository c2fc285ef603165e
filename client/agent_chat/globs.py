"""Git-style path globs for claims: checking, matching, and deciding whether two overlap.

A pattern is relative to the repository root and matches whole paths: ``*`` any run of
characters within one segment, ``?`` one character, ``[a-z]``/``[!a-z]`` one of (not one of) a
set, ``\\`` escapes the next character, and ``**`` as a whole segment any number of segments
(``a/**/b`` matches ``a/b`` and ``a/x/y/b``; a trailing ``/**`` at least one; a lone ``**``
every path). Nothing matches ``/``. ``docs/*`` does not match ``docs/a/b.md``.

No regular expression and no recursion: an agent chooses both the patterns and the paths, and
a backtracking matcher let one request take seconds. :func:`matches` runs two small
nondeterministic automata as sets of states, one over a path's segments (where ``**`` loops)
and, per segment, one over its characters (bit-parallel, where ``*`` loops), so its work is at
most (path length + 1) x (pattern length + 1) steps, whatever the stars. :func:`overlap`
decides exactly whether some path matches both patterns by searching the pairs of positions
in the two patterns (segments, and within two segments their characters) with an explicit
stack: no path is enumerated, and its work is at most about the product of the two patterns'
lengths. Both count their steps in a :class:`Budget` and raise :class:`TooMuchWork` when it
runs out, so a caller bounds the work of a whole request. Standard library only: the client and
the appservice share it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
import re

#: A pattern's length, in characters.
MAX_PATTERN = 1024
#: Patterns in one request.
MAX_PATTERNS = 256
#: Steps one request may spend matching and comparing patterns (about half a second of one
#: core in the worst case; a commit's check against a thousand claims takes a few thousand).
MAX_STEPS = 2_000_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SLASH = ord("/")
_TOP = 0x10FFFF

# A character token: a literal character (str), the code points a ``?`` or a set accepts as
# sorted disjoint (lo, hi) ranges without "/" (tuple), or a ``*`` (None).
Token = str | tuple[tuple[int, int], ...] | None
_ANY: tuple[tuple[int, int], ...] = ((0, _SLASH - 1), (_SLASH + 1, _TOP))


class BadPattern(ValueError):
    """A pattern that is not a relative path glob (one line, shown as is)."""


class TooMuchWork(Exception):
    """A :class:`Budget` ran out: the request asks for more matching than one may do."""


def _nothing() -> None:
    return None


class Budget:
    """Steps left for one request's matching; :meth:`spend` raises :class:`TooMuchWork`.

    ``pause``, if given, is called every ``every`` steps: a worker thread passes
    ``time.sleep(0)`` there, so the event loop's thread gets the interpreter at once rather
    than after the interpreter's switch interval (5 ms, several times per request)."""

    __slots__ = ("every", "left", "limit", "next_pause", "pause")

    def __init__(
        self, limit: int = MAX_STEPS, pause: Callable[[], object] | None = None, every: int = 0
    ) -> None:
        self.limit = limit
        self.left = limit
        self.pause = pause or _nothing
        self.every = every if pause is not None and every > 0 else limit + 1
        self.next_pause = max(limit - self.every, 0)

    @property
    def spent(self) -> int:
        return self.limit - self.left

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < self.next_pause:
            if self.left < 0:
                raise TooMuchWork(f"more than {self.limit:,} steps of glob matching")
            self.next_pause = max(self.left - self.every, 0)
            self.pause()


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


# --- parsing -------------------------------------------------------------------------------


def _ranges(pairs: list[tuple[int, int]], negated: bool) -> tuple[tuple[int, int], ...]:
    """A set's code points as sorted disjoint ranges, complemented if negated, without "/"
    (a backwards range such as ``z-a`` holds nothing)."""
    merged: list[list[int]] = []
    for lo, hi in sorted(p for p in pairs if p[0] <= p[1]):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if negated:
        gaps, at = [], 0
        for lo, hi in merged:
            if lo > at:
                gaps.append([at, lo - 1])
            at = hi + 1
        if at <= _TOP:
            gaps.append([at, _TOP])
        merged = gaps
    out: list[tuple[int, int]] = []
    for lo, hi in merged:
        if lo <= _SLASH <= hi:
            out += [(lo, _SLASH - 1)] if lo < _SLASH else []
            out += [(_SLASH + 1, hi)] if hi > _SLASH else []
        else:
            out.append((lo, hi))
    return tuple(out)


def _parse_set(seg: str, i: int) -> tuple[Token, int] | None:
    """The ``[...]`` set starting at ``seg[i]``, and the index after it; None if unclosed."""
    j = i + 1
    negated = j < len(seg) and seg[j] in "!^"
    if negated:
        j += 1
    pairs: list[tuple[int, int]] = []
    first = True
    while j < len(seg):
        c = seg[j]
        if c == "]" and not first:
            return _ranges(pairs, negated), j + 1
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
            pairs.append((lo, ord(hi_c)))
        else:
            pairs.append((lo, lo))
        j += 1
    return None


def _tokens(seg: str) -> tuple[Token, ...]:
    """A segment's tokens; consecutive stars are one."""
    out: list[Token] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            if not out or out[-1] is not None:
                out.append(None)
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
            out.append(c)
            i += 1
    return tuple(out)


def _contains(ranges: tuple[tuple[int, int], ...], code: int) -> bool:
    k = bisect_right(ranges, (code, _TOP + 1)) - 1
    return k >= 0 and code <= ranges[k][1]


def _meet(t: Token, u: Token, budget: Budget) -> bool:
    """Whether two character tokens (not stars) accept a common character."""
    if isinstance(t, str):
        return t == u if isinstance(u, str) else _contains(u or (), ord(t))
    if isinstance(u, str):
        return _contains(t or (), ord(u))
    a, b = t or (), u or ()
    budget.spend(len(a) + len(b))
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


class Segment:
    """One segment's tokens, compiled for matching a path segment (which holds no "/")."""

    __slots__ = (
        "final",
        "head",
        "literal",
        "lits",
        "masks",
        "satisfiable",
        "sets",
        "star",
        "start",
        "tail",
        "tokens",
        "words",
    )

    def __init__(self, tokens: tuple[Token, ...]) -> None:
        self.tokens = tokens
        chars = [t for t in tokens if t is not None]
        self.satisfiable = all(isinstance(t, str) or t for t in chars)
        plain = all(isinstance(t, str) for t in chars)
        stars = len(tokens) - len(chars)
        #: the segment itself when it has no wildcard; head and tail around its only star
        self.literal: str | None = "".join(chars) if plain and not stars else None  # type: ignore[arg-type]
        self.head: str | None = None
        self.tail = ""
        if plain and stars == 1:
            k = tokens.index(None)
            self.head, self.tail = "".join(tokens[:k]), "".join(tokens[k + 1 :])  # type: ignore[arg-type]
        # the bit-parallel automaton: state j = the first j tokens matched
        self.star = sum(1 << j for j, t in enumerate(tokens) if t is None)
        self.final = 1 << len(tokens)
        self.start = 1 | ((1 & self.star) << 1)
        self.lits: dict[str, int] = {}
        self.sets: list[tuple[int, tuple[tuple[int, int], ...]]] = []
        for j, t in enumerate(tokens):
            if isinstance(t, str):
                self.lits[t] = self.lits.get(t, 0) | 1 << j
            elif t is not None:
                self.sets.append((1 << j, t))
        self.masks: dict[str, int] = {}
        self.words = len(tokens) // 60 + 1

    def _mask(self, ch: str, budget: Budget) -> int:
        """The tokens (not stars) that accept ``ch``, as bits; remembered per character."""
        budget.spend(3 * len(self.sets) + 1)
        mask, code = self.lits.get(ch, 0), ord(ch)
        for bit, ranges in self.sets:
            if _contains(ranges, code):
                mask |= bit
        if len(self.masks) >= 4096:
            self.masks.clear()
        self.masks[ch] = mask
        return mask

    def match(self, s: str, budget: Budget) -> bool:
        """Whether the path segment ``s`` matches: at most len(s) x (tokens / 60 + 1) steps."""
        if self.literal is not None:
            budget.spend(1)
            return s == self.literal
        if self.head is not None:
            budget.spend(1)
            head, tail = self.head, self.tail
            return len(s) >= len(head) + len(tail) and s.startswith(head) and s.endswith(tail)
        budget.spend(len(s) * self.words + 1)
        state, star, masks = self.start, self.star, self.masks
        for ch in s:
            mask = masks.get(ch)
            if mask is None:
                mask = self._mask(ch, budget)
            state = ((state & mask) << 1) | (state & star)
            state |= (state & star) << 1
            if not state:
                return False
        return bool(state & self.final)


class Glob:
    """A checked pattern compiled: its segments (None for ``**``), and the literal text every
    path it matches starts and ends with (a cheap first test)."""

    __slots__ = (
        "exact",
        "final",
        "globstars",
        "items",
        "pattern",
        "prefix",
        "start",
        "suffix",
        "tokens",
    )

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        interned: dict[tuple[Token, ...], Segment] = {}
        items: list[Segment | None] = []
        for part in pattern.split("/"):
            if part == "**":
                if not items or items[-1] is not None:
                    items.append(None)
            else:
                tokens = _tokens(part)
                items.append(interned.setdefault(tokens, Segment(tokens)))
        if items and items[-1] is None:  # a trailing ** is at least one segment
            star = (None,)
            items.insert(len(items) - 1, interned.setdefault(star, Segment(star)))
        self.items = tuple(items)
        self.globstars = sum(1 << j for j, it in enumerate(items) if it is None)
        self.final = 1 << len(items)
        self.start = 1 | ((1 & self.globstars) << 1)
        self.tokens = sum(len(it.tokens) for it in items if it is not None) + len(items)
        literals = [it.literal if it is not None else None for it in items]
        plain = all(lit is not None for lit in literals)
        self.exact = "/".join(literals) if plain else None  # type: ignore[arg-type]
        prefix = []
        for i, it in enumerate(items):
            if it is None:
                break
            if it.literal is None:
                prefix.append("".join(_lead(it.tokens)))
                break
            prefix.append(it.literal + ("/" if i + 1 < len(items) else ""))
        suffix = []
        for i in range(len(items) - 1, -1, -1):
            it = items[i]
            if it is None:
                break
            if it.literal is None:
                suffix.append("".join(reversed(_lead(it.tokens[::-1]))))
                break
            slash = i > 0 and not (i == 1 and items[0] is None)
            suffix.append(("/" if slash else "") + it.literal)
        self.prefix, self.suffix = "".join(prefix), "".join(reversed(suffix))

    def match(self, path: str, budget: Budget) -> bool:
        """Whether ``path`` matches: at most (len(path) + 1) x (pattern length + 1) steps."""
        budget.spend(1)
        if not path.startswith(self.prefix) or not path.endswith(self.suffix):
            return False
        if self.exact is not None:
            return path == self.exact
        segs = path.split("/")
        items = self.items
        if not self.globstars:
            if len(segs) != len(items):
                return False
            return all(it.match(s, budget) for s, it in zip(segs, items, strict=True))  # type: ignore[union-attr]
        # the automaton over segments: state j = the first j items matched; ** loops on
        # non-empty segments
        state, globstars = self.start, self.globstars
        for s in segs:
            todo, found = state & ~globstars & (self.final - 1), 0
            budget.spend(1 + 3 * todo.bit_count())
            seen: dict[Segment, bool] = {}
            while todo:
                low = todo & -todo
                todo ^= low
                it = items[low.bit_length() - 1]
                assert it is not None
                hit = seen.get(it)
                if hit is None:
                    hit = seen[it] = it.match(s, budget)
                if hit:
                    found |= low
            state = (found << 1) | (state & globstars if s else 0)
            state |= (state & globstars) << 1
            if not state:
                return False
        return bool(state & self.final)


def _lead(tokens: tuple[Token, ...]) -> list[str]:
    """The literal characters a token list starts with."""
    out = []
    for t in tokens:
        if not isinstance(t, str):
            break
        out.append(t)
    return out


_COMPILED: dict[str, Glob] = {}


def compile(pattern: str, budget: Budget | None = None) -> Glob:
    """A (checked) pattern, compiled once (three steps a character, the first time)."""
    found = _COMPILED.get(pattern)
    if found is None:
        if budget is not None:
            budget.spend(3 * len(pattern) + 1)
        found = Glob(pattern)
        if len(_COMPILED) >= 8192:
            _COMPILED.clear()
        _COMPILED[pattern] = found
    return found


def matches(pattern: str, path: str, budget: Budget | None = None) -> bool:
    """Whether the (checked) pattern matches the path (relative to the repository root)."""
    budget = budget or Budget()
    return compile(pattern, budget).match(path, budget)


# --- overlap -------------------------------------------------------------------------------


def _segments_overlap(x: Segment, y: Segment, budget: Budget) -> bool:
    """Whether some segment (no ``/``) matches both: a search over pairs of positions."""
    if x.literal is not None and y.literal is not None:
        budget.spend(1)
        return x.literal == y.literal
    if x.literal is not None:
        return y.match(x.literal, budget)
    if y.literal is not None:
        return x.match(y.literal, budget)
    a, b = x.tokens, y.tokens
    na, nb = len(a), len(b)
    width = nb + 1
    seen = {0}
    stack = [0]
    while stack:
        state = stack.pop()
        budget.spend(_STATE)
        i, j = divmod(state, width)
        if i == na and j == nb:
            return True
        nxt = []
        if i < na and a[i] is None:  # a star may match nothing
            nxt.append(state + width)
        if j < nb and b[j] is None:
            nxt.append(state + 1)
        if i < na and j < nb:
            t, u = a[i], b[j]
            if t is None:  # a's star takes b's character (or both stars: nothing new)
                if u is not None and u:
                    nxt.append(state + 1)
            elif u is None:
                if t:
                    nxt.append(state + width)
            elif _meet(t, u, budget):
                nxt.append(state + width + 1)
        for n in nxt:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return False


_OVERLAPS: dict[tuple[str, str], bool] = {}
#: Steps one state of the overlap searches counts for (each costs about eight steps of
#: matching: a step is a fifth of a microsecond or less)
_STATE = 8


def _compatible(a: Glob, b: Glob) -> bool:
    """Whether a path could start with both literal prefixes and end with both suffixes."""
    return (a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)) and (
        a.suffix.endswith(b.suffix) or b.suffix.endswith(a.suffix)
    )


def overlap(p: str, q: str, budget: Budget | None = None) -> bool:
    """Whether some path matches both (checked) patterns: a search over pairs of positions
    in their segments, where ``**`` takes any number of non-empty segments."""
    key = (p, q) if p <= q else (q, p)
    known = _OVERLAPS.get(key)
    if known is not None:
        return known
    budget = budget or Budget()
    budget.spend(1)
    ga, gb = compile(key[0], budget), compile(key[1], budget)
    if not _compatible(ga, gb):  # most pairs of claims: different folders or extensions
        return False
    if ga.exact is not None:
        return gb.match(ga.exact, budget)
    if gb.exact is not None:
        return ga.match(gb.exact, budget)
    a, b = ga.items, gb.items
    na, nb = len(a), len(b)
    width = nb + 1
    pairs: dict[tuple[Segment, Segment], bool] = {}
    seen = {0}
    stack = [0]
    result = False
    while stack:
        state = stack.pop()
        budget.spend(_STATE)
        i, j = divmod(state, width)
        if i == na and j == nb:
            result = True
            break
        nxt = []
        if i < na and a[i] is None:  # ** may take no segment
            nxt.append(state + width)
        if j < nb and b[j] is None:
            nxt.append(state + 1)
        if i < na and j < nb:
            x, y = a[i], b[j]
            if x is None:  # a's ** takes the segment b's matches (or both **: nothing new)
                if y is not None and y.satisfiable:
                    nxt.append(state + 1)
            elif y is None:
                if x.satisfiable:
                    nxt.append(state + width)
            else:
                hit = pairs.get((x, y))
                if hit is None:
                    hit = pairs[(x, y)] = _segments_overlap(x, y, budget)
                if hit:
                    nxt.append(state + width + 1)
        for n in nxt:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    if len(_OVERLAPS) >= 65536:
        _OVERLAPS.clear()
    _OVERLAPS[key] = result
    return result
