"""``ac setup TARGET``: run one target's installer, apply (or show) its plan, then write the
hook's credential files."""

from __future__ import annotations

from .. import hook_files
from ..errors import AcError, ConfigFileError, UsageError
from . import claude, codex, gemini, tmux
from .installer import Installer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..context import Context

#: Each target's installer; ``hook`` writes only the hook's credentials (the others do too).
INSTALLERS: dict[str, Callable[[Installer], None] | None] = {
    "claude": claude.install,
    "codex": codex.install,
    "gemini": gemini.install,
    "tmux": tmux.install,
    "hook": None,
}
TARGETS = tuple(INSTALLERS)


def _write_hook_files(ctx: Context) -> tuple[str, str] | None:
    """Resolve (registering if needed) the identity and write its hook files.

    Returns (path of the curl config, the identity's label), or None with AGENT_CHAT_TOKEN
    (the hook then reads the token from the environment).
    """
    if not ctx.settings.writes_files:
        return None
    identity = ctx.identity()
    return hook_files.write_files(ctx.settings, identity), identity.label()


def run(
    ctx: Context,
    target: str,
    *,
    scope: str | None,
    dry_run: bool,
    uninstall: bool,
    quiet: bool = False,
    mcp: bool = True,
    wake: bool = True,
) -> int:
    """``ac setup TARGET``: return the exit code."""
    from ..context import out as print_line

    out: Callable[[str], None] = (lambda text: None) if quiet else print_line
    if target not in TARGETS:
        raise UsageError(
            "unknown setup target {!r}: use one of {}".format(target, ", ".join(TARGETS))
        )
    installer = Installer(ctx, scope or "user", uninstall, out, mcp, wake)
    install = INSTALLERS[target]
    if install is not None:
        install(installer)
    installer.plan.apply(dry_run, out)
    if target == "hook" and uninstall:
        if dry_run:
            out(f"would remove {hook_files.hook_dir(ctx.settings.home)}")
        else:
            for path in hook_files.remove(ctx.settings.home):
                out(f"removed {path}")
        return 0
    if uninstall:
        return 0
    if dry_run:
        out(f"would write the hook's credentials under {hook_files.hook_dir(ctx.settings.home)}")
        return 0
    try:
        written = _write_hook_files(ctx)
    except (AcError, ConfigFileError, OSError) as e:  # server down...: the hook makes them later
        if target == "hook":
            raise
        why = e.message if isinstance(e, AcError) else e
        out(f"note: hook credentials not written yet ({why}); the hook writes them on first use")
        return 0
    if written is None:
        out("hook: uses AGENT_CHAT_TOKEN and AGENT_CHAT_SERVER from the environment")
    else:
        out(f"hook credentials for {written[1]}: {written[0]}")
    return 0
