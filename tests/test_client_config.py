"""agent_chat.config and agent_chat.identity: files, precedence, separate identities."""

from __future__ import annotations

from pathlib import Path
import json
import os
import stat
import subprocess
import sys

import pytest

from agent_chat import config, flat_toml, identity, state
from agent_chat.errors import ConfigFileError


def test_flat_toml_roundtrip() -> None:
    data = {
        "server": {"url": "http://h:1", "registration_token": 'a"b\\c\n\x01'},
        "identity": {"nick": "Blue Lake"},
    }
    text = flat_toml.dump_toml(data)
    assert flat_toml.parse_flat_toml(text) == data
    import tomllib

    assert tomllib.loads(text) == data


def test_toml_fallback_to_tomllib() -> None:
    text = '[server]\nurl = "http://h"  # comment\nport = 5\n[identity]\nnick = """x"""\n'
    assert flat_toml.parse_toml(text) == {
        "server": {"url": "http://h", "port": 5},
        "identity": {"nick": "x"},
    }
    with pytest.raises(ConfigFileError):
        flat_toml.parse_toml("[server\nurl=")


def test_ensure_client_config(agent_home: Path) -> None:
    assert config.ensure_client_config("http://127.0.0.1:8009/_agent_chat/v1/", "sekrit")
    path = agent_home / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load_config(str(agent_home)) == {
        "server": {"url": "http://127.0.0.1:8009", "registration_token": "sekrit"}
    }
    assert not config.ensure_client_config("http://other:1", "other")
    assert "other" not in path.read_text()


def test_settings_precedence(agent_home: Path) -> None:
    config.save_config(
        str(agent_home), {"server": {"url": "http://cfg:1"}, "identity": {"nick": "CfgNick"}}
    )
    s = config.Settings({"AGENT_CHAT_HOME": str(agent_home)})
    assert (s.server_url, s.server_source, s.nick) == ("http://cfg:1", "config.toml", "CfgNick")
    s = config.Settings(
        {
            "AGENT_CHAT_HOME": str(agent_home),
            "AGENT_CHAT_SERVER": "http://e:2/",
            "AGENT_CHAT_NICK": "EnvNick",
            "AGENT_CHAT_TOKEN": "t",
        }
    )
    assert (s.server_url, s.nick, s.env_token, s.writes_files) == (
        "http://e:2",
        "EnvNick",
        "t",
        False,
    )
    s = config.Settings({"AGENT_CHAT_HOME": str(agent_home / "none")})
    assert (s.server_url, s.server_source, s.nick) == (config.DEFAULT_SERVER, "default", None)


def test_credentials_keyed_by_server_and_nick(agent_home: Path) -> None:
    home = str(agent_home)
    data = identity.load_credentials(home)
    a = {"user_id": "@_ac_x2:s", "nick": "X2", "kind": "agent", "token": "tx"}
    b = {"user_id": "@_ac_y:s", "nick": "Y", "kind": "agent", "token": "ty"}
    identity.store_identity(data, "http://s1", "x", a)
    identity.store_identity(data, "http://s1", "y", b)
    identity.save_credentials(home, data)
    path = agent_home / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = identity.load_credentials(home)
    assert identity.stored_identity(data, "http://s1", "X").token == "tx"  # asked-for nick
    assert identity.stored_identity(data, "http://s1", "y").token == "ty"
    assert identity.stored_identity(data, "http://s1").token == "tx"  # first = default
    assert identity.stored_identity(data, "http://s2", "X") is None
    assert identity.stored_identity(data, "http://s1", "z") is None
    assert not [p for p in os.listdir(home) if p.endswith(".tmp")]


def test_broken_credentials_file(agent_home: Path) -> None:
    (agent_home / "credentials.json").write_text("{nope")
    with pytest.raises(ConfigFileError):
        identity.load_credentials(str(agent_home))


def test_write_caches_and_token_mode(agent_home: Path) -> None:
    s = config.Settings({"AGENT_CHAT_HOME": str(agent_home)})
    state.write_caches(s, "k", unread_line="#a(1)", unread={"#a": {"count": 1}})
    assert (agent_home / "unread.line").read_text() == "#a(1)\n"
    assert json.loads((agent_home / "state.json").read_text())["identities"]["k"]["unread"]
    s = config.Settings({"AGENT_CHAT_HOME": str(agent_home), "AGENT_CHAT_NICK": "Bo b"})
    assert state.unread_line_path(s).endswith("unread.Bo_b.line")
    other = agent_home / "token-only"
    s = config.Settings({"AGENT_CHAT_HOME": str(other), "AGENT_CHAT_TOKEN": "t"})
    state.write_caches(s, "k", unread_line="x")
    assert not other.exists()


def test_write_caches_drops_only_the_expected_errors(
    agent_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = config.Settings({"AGENT_CHAT_HOME": str(agent_home)})
    (agent_home / "state.json").write_text("{nope")  # not JSON: started again
    state.write_caches(s, "k", last_event="$e")
    assert json.loads((agent_home / "state.json").read_text())["identities"]["k"]["last_event"]
    (agent_home / "state.json").unlink()
    (agent_home / "state.json").mkdir()  # unreadable and unwritable: OSError, dropped
    state.write_caches(s, "k", unread_line="#a(1)")
    (agent_home / "state.json").rmdir()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(state, "atomic_write", broken)
    with pytest.raises(RuntimeError):  # a bug is not hidden
        state.write_caches(s, "k", last_event="$e")


def test_identity_and_hook_files_are_independent(agent_home: Path) -> None:
    # No import cycle: neither module loads the other.
    code = "import sys; import agent_chat.{0}; print('agent_chat.{1}' in sys.modules)"
    for a, b in (("identity", "hook_files"), ("hook_files", "identity")):
        p = subprocess.run(
            [sys.executable, "-c", code.format(a, b)], capture_output=True, text=True, check=True
        )
        assert p.stdout.strip() == "False", (a, b)
    # No hidden side effect: storing credentials writes only credentials.json.
    data = identity.load_credentials(str(agent_home))
    answer = {"user_id": "@_ac_x:s", "nick": "X", "kind": "agent", "token": "tx"}
    identity.store_identity(data, "http://s1", "x", answer)
    identity.save_credentials(str(agent_home), data)
    assert sorted(p.name for p in agent_home.iterdir()) == ["credentials.json"]
