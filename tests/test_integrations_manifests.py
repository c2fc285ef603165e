"""Every shipped skill (SKILL.md) and Gemini command (TOML) parses, description whole.

An unquoted YAML description is cut at the first `` #`` (``... "[chat] #room(N)"`` became
``... "[chat]``) in all three agent CLIs; each description must be quoted, and what a YAML or
TOML parser reads must be the whole text written in the file.
"""

from __future__ import annotations

from pathlib import Path
import json
import tomllib

import pytest
import yaml

from agent_chat.setup import integrations_dir

ROOT = Path(integrations_dir())
SKILLS = sorted(ROOT.rglob("SKILL.md"))
TOMLS = sorted(ROOT.rglob("*.toml"))


def raw_value(text: str, prefix: str) -> str:
    """The text after ``prefix`` on the one line that starts with it."""
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, lines)
    return lines[0][len(prefix) :]


def test_something_is_shipped() -> None:
    assert len(SKILLS) >= 3 and len(TOMLS) >= 3


@pytest.mark.parametrize("path", SKILLS, ids=lambda p: p.parent.name)
def test_skill_frontmatter_parses_whole(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = text.split("---\n", 2)[1]
    data = yaml.safe_load(front)
    assert data["name"] == path.parent.name
    raw = raw_value(front, "description: ")
    assert raw.startswith('"') and raw.endswith('"'), "quote the description"
    # A JSON string is a YAML double-quoted scalar: decoded independently, the same text.
    whole = json.loads(raw)
    assert data["description"] == whole
    assert len(whole) > 80 and whole.endswith(".")
    for key, value in data.items():
        assert isinstance(value, str | bool), (key, value)
        if isinstance(value, str) and key != "description":
            # Nothing else was cut at a comment either.
            assert raw_value(front, key + ": ").strip("\"'") == value


def test_chat_skill_keeps_the_hook_example() -> None:
    text = (ROOT / "skills" / "chat" / "SKILL.md").read_text(encoding="utf-8")
    data = yaml.safe_load(text.split("---\n", 2)[1])
    assert '"[chat] #room(N)" unread counts.' in data["description"]


@pytest.mark.parametrize("path", TOMLS, ids=lambda p: p.stem)
def test_gemini_command_toml_parses_whole(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    raw = raw_value(text, "description = ")
    assert raw.startswith('"') and raw.endswith('"')
    assert data["description"] == json.loads(raw)
    assert data["prompt"].strip()
