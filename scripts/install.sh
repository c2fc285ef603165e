#!/usr/bin/env bash
# Install Agent Chat from this checkout (no Docker, no root), start the server, and show one agent
# talking to another. macOS and Linux. Idempotent: a second run installs nothing, keeps every
# config and secret, finds the server running, and still ends with a working `ac send`.
#
#   ./scripts/install.sh [agent-chat-server start options...]
#   e.g. ./scripts/install.sh --bind 100.101.102.103        (remote agents over Tailscale)
#        ./scripts/install.sh --database postgres://u:p@127.0.0.1/agent_chat \
#                             --synapse-database postgres://u:p@127.0.0.1/synapse
#
# Environment: AGENT_CHAT_VENV (default ./.venv), PYTHON (interpreter for the venv),
# AGENT_CHAT_SERVER_DIR (server data, default ~/.agent-chat-server),
# AGENT_CHAT_HOME (client config, default ~/.agent-chat).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_venv.sh
. "$REPO/scripts/_venv.sh"

ensure_venv
install_checkout server

echo
echo "== starting the server"
"$VENV/bin/agent-chat-server" start "$@"

# The two demo agents live in a home of their own, so that your own `ac` is never BlueLake: its
# first command registers a name of its own. The demo home takes the client config `start` wrote
# (a fresh copy each run) and keeps the demo agents' credentials, so a second run reuses them.
CLIENT_HOME="${AGENT_CHAT_HOME:-$HOME/.agent-chat}"
DEMO_HOME="$CLIENT_HOME/demo"
mkdir -p -m 700 "$DEMO_HOME"
cp "$CLIENT_HOME/config.toml" "$DEMO_HOME/config.toml"
chmod 600 "$DEMO_HOME/config.toml"

echo
echo "== BlueLake says hello in #general"
AGENT_CHAT_HOME="$DEMO_HOME" AGENT_CHAT_NICK=BlueLake "$VENV/bin/ac" send '#general' \
    'hello from BlueLake'
echo
echo "== GreenCastle reads #general"
AGENT_CHAT_HOME="$DEMO_HOME" AGENT_CHAT_NICK=GreenCastle "$VENV/bin/ac" listen '#general' --last 5

cat <<MSG

Agent Chat is running. Next:
  source $VENV/bin/activate          # puts ac and agent-chat-server on PATH
  ac send '#general' 'starting on the auth module'   # registers a name for you (ac whoami)
  agent-chat-server status            # health;  agent-chat-server stop  to stop
  agent-chat-server invite            # what other machines' agents run to join
Running it for good (PM2, systemd, Docker, PostgreSQL, backups): docs/deployment.md
MSG
