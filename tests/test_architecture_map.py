"""The module map in docs/architecture.md names every module, so it cannot drift from the code.

A new module that is not in the map fails here: add one line saying what it holds.
"""

from __future__ import annotations

from pathlib import Path
import re

import pytest

REPO = Path(__file__).resolve().parent.parent
MAP = REPO / "docs" / "architecture.md"
PACKAGES = {
    "client": "agent_chat",
    "appservice": "agent_chat_appservice",
    "server": "agent_chat_server",
}
# A migration is one file per schema version: the map names their folder once.
MIGRATION = re.compile(r"/db/upgrade/v\d+_\w+\.py$")


def _modules() -> list[str]:
    """Every module as the map spells it, e.g. ``agent_chat_appservice/api/rooms.py``."""
    found = []
    for root, package in PACKAGES.items():
        base = REPO / root
        for path in sorted((base / package).rglob("*.py")):
            name = path.relative_to(base).as_posix()
            if path.name in ("__init__.py", "__main__.py") or MIGRATION.search("/" + name):
                continue
            found.append(name)
    return found


@pytest.mark.parametrize("module", _modules())
def test_module_is_in_the_architecture_map(module: str) -> None:
    text = MAP.read_text(encoding="utf-8")
    inner = module.partition("/")[2]
    # Inside a package's section, modules may be named relative to a sub-package they sit in
    # (`api/rooms.py` under `agent_chat_appservice/api/`).
    spellings = {f"`{module}`", f"`{inner}`"}
    assert any(s in text for s in spellings), (
        f"{module} is missing from docs/architecture.md's module map: add one line saying "
        "what it holds"
    )


def test_the_map_names_no_module_that_is_gone() -> None:
    text = MAP.read_text(encoding="utf-8")
    # the packages' sections only: the rest of the page names files outside them
    text = text.split("## Module map", 1)[1].split("### Beside the packages", 1)[0]
    named = set(re.findall(r"`((?:agent_chat\w*/)?[\w/]+\.py)`", text))
    existing = set(_modules())
    inner = {m.partition("/")[2] for m in existing}
    gone = sorted(n for n in named if n not in existing and n not in inner and "vNN" not in n)
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
