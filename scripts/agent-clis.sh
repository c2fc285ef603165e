#!/usr/bin/env bash
# Install the real agent CLIs the tests drive (tests/test_agent_clis.py), at pinned versions,
# from the npm registry into a cached prefix. Idempotent: quick when they are already there.
#
#   ./scripts/agent-clis.sh            # install (or check) the pinned versions
#   . <(./scripts/agent-clis.sh --env) # print: export AGENT_CHAT_CLI_PREFIX=...
#   AGENT_CHAT_CLI_LATEST=1 ./scripts/agent-clis.sh   # the current releases (npm view), in
#                                      # their own prefix; then run the tests with the same
#                                      # variable: AGENT_CHAT_CLI_LATEST=1 ./scripts/test.sh \
#                                      #   -m agent_cli tests/test_agent_clis.py
#
# Environment: AGENT_CHAT_CLI_PREFIX (default <repo>/.cache/agent-clis, git-ignored; with
# AGENT_CHAT_CLI_LATEST=1 <repo>/.cache/agent-clis-latest).
# Exit 0 with a message when npm is not available (the tests then skip with a reason); exit 1
# when npm is there but the install fails.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LATEST="${AGENT_CHAT_CLI_LATEST:-}"
if [ -n "$LATEST" ]; then
  PREFIX="${AGENT_CHAT_CLI_PREFIX:-$REPO/.cache/agent-clis-latest}"
else
  PREFIX="${AGENT_CHAT_CLI_PREFIX:-$REPO/.cache/agent-clis}"
fi

# Pinned: the versions the integration facts were verified with (bump deliberately, then run
# tests/test_agent_clis.py). npm view PACKAGE version, 2026-12-07.
PACKAGES=(
  "@anthropic-ai/claude-code@2.1.337"
  "@openai/codex@0.171.0"
  "@google/gemini-cli@0.61.0"
)

if [ "${1:-}" = "--env" ]; then
  printf 'export AGENT_CHAT_CLI_PREFIX=%q\n' "$PREFIX"
  exit 0
fi

# tmux: the interactive Claude Code wake test runs the CLI under it. Best effort (root with
# apt-get, e.g. CI containers); without it that one test skips, saying so.
if ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "agent-clis: installing tmux (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux; } \
      >/dev/null 2>&1 || echo "agent-clis: could not install tmux; the wake test will skip"
  else
    echo "agent-clis: tmux not found; the interactive wake test will skip"
  fi
fi

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "agent-clis: npm/node not found; the real-CLI tests (tests/test_agent_clis.py) will skip"
  exit 0
fi

if [ -n "$LATEST" ]; then # the registry's current release of each, instead of the pins
  for i in "${!PACKAGES[@]}"; do
    name=${PACKAGES[$i]%@*}
    version=$(NPM_CONFIG_UPDATE_NOTIFIER=false npm view "$name" version) || {
      echo "agent-clis: npm view $name failed" >&2
      exit 1
    }
    PACKAGES[$i]="$name@$version"
  done
fi

installed_version() { # PACKAGE -> the version in the prefix, or nothing
  local manifest="$PREFIX/lib/node_modules/$1/package.json"
  [ -r "$manifest" ] || return 0
  node -e 'process.stdout.write(require(process.argv[1]).version || "")' "$manifest" 2>/dev/null \
    || true
}

missing=()
for spec in "${PACKAGES[@]}"; do
  name=${spec%@*}
  want=${spec##*@}
  [ "$(installed_version "$name")" = "$want" ] || missing+=("$spec")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "agent-clis: up to date in $PREFIX (${PACKAGES[*]})"
  exit 0
fi

echo "agent-clis: installing ${missing[*]} into $PREFIX"
mkdir -p "$PREFIX"
# --global with a prefix: bin/ and lib/node_modules/ under it. No audit, no funding, no update
# check; the registry is the only network access.
NPM_CONFIG_UPDATE_NOTIFIER=false npm install --global --prefix "$PREFIX" \
  --no-audit --no-fund --loglevel=error "${missing[@]}"

for spec in "${PACKAGES[@]}"; do
  name=${spec%@*}
  want=${spec##*@}
  got=$(installed_version "$name")
  if [ "$got" != "$want" ]; then
    echo "agent-clis: $name is ${got:-missing} after install, wanted $want" >&2
    exit 1
  fi
done
echo "agent-clis: installed in $PREFIX/bin: claude codex gemini"
