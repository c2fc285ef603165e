# Shared by install.sh and test.sh (sourced): find Python >= 3.11, create/reuse the venv, pip.
# Expects: REPO (the checkout). Sets: VENV, VPY.

VENV="${AGENT_CHAT_VENV:-$REPO/.venv}"

find_python() {
    local c
    for c in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        local py
        py="$(find_python)" || {
            echo "error: Python 3.11 or newer is needed (macOS: brew install python@3.12;" \
                "Debian/Ubuntu: apt install python3.11-venv; or set PYTHON=/path/to/python3.X)" >&2
            return 1
        }
        echo "creating venv $VENV with $py"
        "$py" -m venv "$VENV"
    fi
    VPY="$VENV/bin/python"
}

# pip install, quiet: on success say nothing (pip and setuptools warnings are noise here); on
# failure show everything but the "Location ... is ignored" lines, and keep pip's exit status.
pip_install() {
    local log status=0
    log="$(mktemp)"
    "$VPY" -m pip install -q "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        grep -v -e 'is ignored' "$log" >&2 || true
        echo "error: pip install failed (status $status)" >&2
    fi
    rm -f "$log"
    return "$status"
}

# True if the stamp (STAMP_TEXT: "extras cksum") records this pyproject.toml (SUM) installed with
# at least the EXTRAS wanted: a venv set up by test.sh ("server,test") serves install.sh ("server").
stamp_covers() {
    local extras="$1" stamp_text="$2" sum="$3" have e
    have="${stamp_text%% *}"
    [ "${stamp_text#* }" = "$sum" ] || return 1
    for e in ${extras//,/ }; do
        case ",$have," in *",$e,"*) ;; *) return 1 ;; esac
    done
}

# Install the checkout (editable, with EXTRAS) unless pyproject.toml is unchanged since last time.
install_checkout() {
    local extras="$1" stamp="$VENV/.agent-chat-installed" want sum
    sum="$(cksum <"$REPO/pyproject.toml")"
    want="$extras $sum"
    if [ -f "$stamp" ] && stamp_covers "$extras" "$(cat "$stamp")" "$sum"; then
        plain_editable_paths
        return 0
    fi
    echo "installing agent-chat[$extras] into $VENV (the first time: a few minutes on a small machine)"
    pip_install -e "$REPO[$extras]"
    plain_editable_paths
    echo "$want" >"$stamp"
}

# setuptools serves an editable install spread over several roots (client/, appservice/,
# server/) through an import hook, whose import costs every `ac` process ~5 ms (13% of
# `ac --version` here). Those roots hold no Python but our packages, so plain path
# entries in the same .pth file import the same code, new modules included, without the hook.
plain_editable_paths() {
    local pth
    for pth in "$VENV"/lib/python3*/site-packages/__editable__.agent_chat-*.pth; do
        [ -f "$pth" ] || continue
        printf '%s\n' "$REPO/client" "$REPO/appservice" "$REPO/server" >"$pth"
    done
}

# The venv the tests and the checks run in (server and test extras), and cd to the checkout.
dev_venv() {
    ensure_venv
    install_checkout server,test
    cd "$REPO"
}
