"""Property tests of the claims' globs and of the request body parser (issue 21, "Also"):

* the matcher agrees with pathspec's git wildmatch, and its work, counted in steps, is at most
  a small multiple of (path length + 1) x (pattern length + 1): linear in the path, whatever
  the stars (the backtracking regex it replaced took seconds on 40 characters);
* ``overlap`` is symmetric, agrees with ``matches`` on every generated witness path, and is
  exact against a plain path (a pattern without wildcards); the claims' index in /claims/check
  finds what trying every pair finds;
* the budget counts exactly: a budget of the steps a call took is enough, one less is not
  (with the caches warm);
* ``parse_json`` and the string fields answer a value or a one-line 400/413, never anything
  else, for generated bodies; and the real stack answers such bodies without a 500.

Bounded: each test sets ``max_examples``; the whole file runs in a few seconds (no stack but
the session's SQLite one for the last test).
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.error
import urllib.request

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

from agent_chat import globs
from agent_chat.globs import BadPattern, Budget, TooMuchWork, check, matches, overlap
from agent_chat_appservice.api.base import parse_json, string_field
from agent_chat_appservice.errors import ErrorAnswer
from helpers import Stack, register

# --- strategies --------------------------------------------------------------------------

_segment = (
    st.lists(
        st.sampled_from(["a", "b", ".", "*", "?", "[ab]", "[!a]", "[a-c]", "\\*", "[]a]"]),
        min_size=1,
        max_size=4,
    )
    .map("".join)
    .filter(lambda s: "**" not in s)
)
# (at most one ``**``: pathspec mistranslates some with two, e.g. ``**/*/**`` to ``^/.*$``)
_pattern = (
    st.lists(st.one_of(_segment, st.just("**")), min_size=1, max_size=4)
    .filter(lambda segs: segs.count("**") <= 1)
    .map("/".join)
)
_name = st.text(alphabet="abc.*", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
_path = st.lists(_name, min_size=1, max_size=5).map("/".join)


def _checked(pattern: str) -> str | None:
    try:
        return check(pattern)
    except BadPattern:
        return None


def _reference(pattern: str) -> re.Pattern[str]:
    """pathspec's git wildmatch, anchored at the root, without its directory matching."""
    import warnings

    from pathspec.patterns.gitwildmatch import GitWildMatchPattern

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regex, _ = GitWildMatchPattern.pattern_to_regex("/" + pattern)
    assert regex is not None
    regex = regex.replace("[^", "[^/")  # git: no set matches '/' (pathspec's [!a] does)
    tail = "(?:(?P<ps_d>/)|$)"
    regex = regex[: -len(tail)] + "$" if regex.endswith(tail) else regex + ".*$"
    return re.compile(regex, re.DOTALL)


def _steps(pattern: str, path: str) -> tuple[bool, int]:
    """(matches, steps it took), with the pattern compiled beforehand (compiling is counted
    once per pattern, not per path)."""
    globs.compile(pattern)
    budget = Budget(10**9)
    return matches(pattern, path, budget), budget.spent


# --- matching --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(_pattern, st.lists(_path, min_size=1, max_size=20))
def test_matches_agrees_with_pathspec_in_linear_steps(pattern: str, paths: list[str]) -> None:
    checked = _checked(pattern)
    if checked is None:
        return
    reference = _reference(checked)
    for path in paths:
        found, steps = _steps(checked, path)
        assert found == bool(reference.match(path)), (checked, path)
        assert steps <= 4 * (len(path) + 1) * (len(checked) + 1), (checked, path, steps)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["*", "a", "?", "[!b]", "*a*"]), min_size=2, max_size=40))
def test_steps_grow_linearly_with_the_path(tokens: list[str]) -> None:
    """Doubling the path at most doubles the steps (plus a constant), for stars anywhere:
    a backtracking matcher's work grows as a power of the path's length."""
    pattern = check("".join(tokens) + "b")
    counts = [_steps(pattern, "a" * n)[1] for n in (500, 1000, 2000, 4000)]
    for shorter, longer in itertools.pairwise(counts):
        assert longer <= 2 * shorter + 50, (pattern, counts)


def test_the_issue_pattern_is_linear() -> None:
    """The reproduction of issue 21: 6.5 s on 40 characters with the regex."""
    pattern = check("*a*a*a*a*a*a*a*a*a*b")
    counts = [_steps(pattern, "a" * n + "cb")[1] for n in (40, 400, 4000)]
    assert counts[1] <= 11 * counts[0] and counts[2] <= 11 * counts[1], counts
    assert _steps(pattern, "a" * 4000 + "cb")[0] and not _steps(pattern, "a" * 4000)[0]


@settings(max_examples=200, deadline=None)
@given(_pattern, _path)
def test_the_budget_counts_exactly(pattern: str, path: str) -> None:
    checked = _checked(pattern)
    if checked is None:
        return
    _steps(checked, path)  # warm: a segment remembers the characters it has seen
    found, steps = _steps(checked, path)
    assert matches(checked, path, Budget(steps)) == found
    with pytest.raises(TooMuchWork):
        matches(checked, path, Budget(steps - 1))


# --- overlap ---------------------------------------------------------------------------------


def _overlap(p: str, q: str) -> bool:
    """overlap() computed afresh (its cache would make symmetry trivially true)."""
    globs._OVERLAPS.clear()
    return overlap(p, q, Budget(10**9))


@settings(max_examples=300, deadline=None)
@given(_pattern, _pattern, st.lists(_path, min_size=1, max_size=20))
def test_overlap_is_symmetric_and_agrees_with_witnesses(p: str, q: str, paths: list[str]) -> None:
    p_checked, q_checked = _checked(p), _checked(q)
    if p_checked is None or q_checked is None:
        return
    both = _overlap(p_checked, q_checked)
    assert both == _overlap(q_checked, p_checked), (p_checked, q_checked)
    for path in paths:
        if matches(p_checked, path) and matches(q_checked, path):
            assert both, (p_checked, q_checked, path)  # a witness: they do overlap


@settings(max_examples=300, deadline=None)
@given(_pattern, st.lists(st.text(alphabet="abc.", min_size=1, max_size=4), min_size=1))
def test_overlap_with_a_plain_path_is_matching(pattern: str, names: list[str]) -> None:
    """A path with no wildcard is a pattern matching only itself: exact both ways."""
    checked = _checked(pattern)
    plain = _checked("/".join(names))
    if checked is None or plain is None:
        return
    assert _overlap(checked, plain) == matches(checked, plain), (checked, plain)


@settings(max_examples=100, deadline=None)
@given(_pattern)
def test_a_pattern_overlaps_itself(pattern: str) -> None:
    """Every pattern matches some path ([a-c] and friends are never empty here)."""
    checked = _checked(pattern)
    if checked is not None:
        assert _overlap(checked, checked), checked


@settings(max_examples=100, deadline=None)
@given(st.lists(_pattern, min_size=1, max_size=12), st.lists(_path, min_size=1, max_size=12))
def test_the_claims_index_misses_nothing(patterns: list[str], paths: list[str]) -> None:
    """/claims/check tries a path only against the claims its index offers: the same answer
    as trying every pair, in the same order."""
    from agent_chat_appservice.claims import covering
    from agent_chat_appservice.db import Claim

    claims = [
        Claim("p", "@a:x", c, True, None, 0, 1) for c in map(_checked, patterns) if c is not None
    ]
    expected = [(path, c) for path in paths for c in claims if matches(c.pattern, path)]
    assert covering(claims, paths, Budget(10**9)) == expected


# --- the request body parser -----------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(max_codepoint=0xE000, exclude_categories=()), max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=30,
)


def _nested(depth: int, leaf: str) -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


_bodies = st.one_of(
    _json_values.map(lambda v: json.dumps(v).encode()),
    _json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=64),
    st.builds(_nested, st.integers(0, 3000), st.sampled_from(["", "1", '"\\u0000"', '"\\ud800"'])),
    st.text(alphabet='[]{}":,\\u0 1ad', max_size=40).map(str.encode),
)


def _one_line_client_error(e: ErrorAnswer) -> None:
    assert e.status in (400, 413), (e.status, e.message)
    assert e.message and "\n" not in e.message, e.message


@settings(max_examples=400, deadline=None)
@given(_bodies)
def test_parse_json_answers_a_value_or_a_400(raw: bytes) -> None:
    try:
        data = parse_json(raw)
    except ErrorAnswer as e:
        _one_line_client_error(e)
        return
    # what it lets through holds no NUL, no lone surrogate, nothing nested past the limit
    text = json.dumps(data)
    assert "\\u0000" not in text
    json.dumps(data, ensure_ascii=False).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(_json_values, st.text(max_size=8))
def test_only_the_named_field_may_hold_nul(value: object, body: str) -> None:
    """``nul_ok=("body",)`` (a message): NUL passes in the body's string, nowhere else."""
    raw = json.dumps({"body": body + "\x00", "other": value}).encode()
    try:
        data = parse_json(raw, nul_ok=("body",))
    except ErrorAnswer as e:
        _one_line_client_error(e)
        assert "\\u0000" in json.dumps(value) or "surrogate" in e.message or "nests" in e.message
        return
    assert data["body"] == body + "\x00" and "\\u0000" not in json.dumps(data["other"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_string_fields_answer_a_value_or_a_400(value: str, text: bool) -> None:
    try:
        got = string_field({"f": value}, "f", max_len=30, text=text)
    except ErrorAnswer as e:
        _one_line_client_error(e)
        return
    assert got == value
    if not text:  # (NUL in free text is for parse_json to allow or not)
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", got)


def _post(url: str, raw: bytes, token: str | None) -> int:
    req = urllib.request.Request(url, data=raw, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
def test_the_stack_never_answers_500_to_a_body(stack: Stack, body: bytes) -> None:
    """Generated bodies to a public route and to a route that creates something."""
    agent = _agent(stack)
    assert _post(stack.api_base + "/register", body, None) < 500
    assert _post(stack.api_base + "/rooms", body, agent) < 500
    assert _post(stack.api_base + "/claims/check", body, agent) < 500


_AGENTS: dict[str, str] = {}


def _agent(stack: Stack) -> str:
    """One agent's token per stack (hypothesis calls the test many times)."""
    if stack.api_base not in _AGENTS:
        _AGENTS[stack.api_base] = register(stack).token
    return _AGENTS[stack.api_base]
