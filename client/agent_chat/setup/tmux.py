"""``ac setup tmux``: a marked block in ``~/.tmux.conf`` appending the unread line to
``status-right``."""

from __future__ import annotations

import os

from ..errors import UsageError
from .installer import TMUX_END, hook_script, strip_block
from .plan import SetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .installer import Installer

TMUX_BEGIN = "# >>> agent-chat: added by `ac setup tmux`; `ac setup tmux --uninstall` removes it"


def install(inst: Installer) -> None:
    if inst.scope == "project":
        raise UsageError("tmux has no project settings: use 'ac setup tmux' (--user)")
    path = os.path.join(inst.user_home, ".tmux.conf")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = None
    stripped = strip_block(text or "", TMUX_BEGIN)
    if inst.uninstall:
        new = stripped
    else:
        script = hook_script("ac-tmux.sh")
        words = [script]
        home = inst.ctx.settings.home
        if home != os.path.join(inst.user_home, ".agent-chat"):
            words += ["--home", home]
        if any(c in w for w in words for c in "'\"\\$`\n"):
            raise SetupError(f"cannot quote {words!r} for ~/.tmux.conf")
        command = "sh " + " ".join(f'"{w}"' if w != "--home" else w for w in words)
        block = f"{TMUX_BEGIN}\nset -ag status-right ' #({command})'\n{TMUX_END}\n"
        new = stripped + ("\n" if stripped and not stripped.endswith("\n") else "") + block
    if inst.apply_block_edit(path, text, stripped, new):
        inst.plan.note("reload a running tmux: tmux source-file ~/.tmux.conf")
