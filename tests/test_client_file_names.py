"""One rule names an agent's files: agent_chat.files.file_part, and ac-hook.sh follows it.

The hook (a shell script) and ``ac`` (Python) must name the same agent the same way, or the
hook reads a curl config ``ac`` never wrote. This runs the real script, under every shell at
hand, over a table of nicks, and checks that the file it looks for is the one Python names.
"""

from __future__ import annotations

from pathlib import Path
import os
import shutil
import subprocess

import pytest

from agent_chat import config, hook_files, state
from agent_chat.files import file_part
from agent_chat.setup import hook_script

#: Environment values as the shell gets them (bytes: some are not UTF-8).
NICKS: list[bytes] = [
    b"BlueLake",
    b"bluelake",
    b"Agent7",
    b"42",
    b"under_score-dash",
    b"-leading-dash",
    b"a b",
    b" padded ",
    b"tab\there",
    b"new\nline",
    b"dot.ted",
    b"../etc/passwd",
    b"x/y",
    b"semi;colon",
    b"$HOME",
    b"*",
    b"[a-z]",
    b"quote'single",
    b'quote"double',
    b"back\\slash",
    "é".encode(),
    "Ünïcödé".encode(),
    "İstanbul".encode(),
    "日本".encode(),
    "emoji😀".encode(),
    b"\xff\xfe latin-1 bytes",
    b"default",
    b"",
]

EXPECTED = {
    b"BlueLake": "BlueLake",
    b"a b": "a_b",
    b" padded ": "_padded_",
    "é".encode(): "__",
    "日本".encode(): "______",
    b"": "default",
}

SHELLS = [s for s in ("sh", "dash", "bash", "busybox") if shutil.which(s)]


def shell_command(shell: str) -> list[str]:
    return [shell, "sh"] if shell == "busybox" else [shell]


def test_python_rule() -> None:
    for raw, want in EXPECTED.items():
        assert file_part(os.fsdecode(raw)) == want
    assert file_part(None) == "default"


def test_settings_and_every_file_use_the_rule(tmp_path: Path) -> None:
    for raw in NICKS:
        env = {"AGENT_CHAT_HOME": str(tmp_path), "AGENT_CHAT_NICK": os.fsdecode(raw)}
        s = config.Settings(env)
        part = file_part(os.fsdecode(raw))
        assert s.file_part == part
        assert hook_files.curl_path(s) == str(tmp_path / "hook" / (part + ".curl"))
        if s.env_nick:
            assert state.unread_line_path(s) == str(tmp_path / f"unread.{part}.line")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_hook_script_names_files_by_the_rule(shell: str, locale: str, tmp_path: Path) -> None:
    """Without a curl config the hook bootstraps: it stamps ``hook/boot.<nick>`` and runs
    ``ac-path`` (here ``true``) in the background. That stamp shows the name it used."""
    true = shutil.which("true")
    assert true
    for i, raw in enumerate(NICKS):
        home = tmp_path / str(i)
        (home / "hook").mkdir(parents=True)
        (home / "hook" / "ac-path").write_text(true + "\n")
        env: dict[bytes, bytes] = {
            os.fsencode(k): os.fsencode(v)
            for k, v in os.environ.items()
            if not k.startswith("AGENT_CHAT_") and not k.startswith("LC_")
        }
        env[b"AGENT_CHAT_HOME"] = os.fsencode(home)
        env[b"AGENT_CHAT_NICK"] = raw
        env[b"LC_ALL"] = locale.encode()
        p = subprocess.run(
            [*shell_command(shell), hook_script(), "--status"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        assert p.returncode == 0, (raw, p.stderr)
        stamps = [n for n in os.listdir(home / "hook") if n.startswith("boot.")]
        assert stamps == ["boot." + file_part(os.fsdecode(raw))], (shell, locale, raw)
