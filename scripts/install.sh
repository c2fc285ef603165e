#!/usr/bin/env bash
# Install Agent Chat from this checkout (no Docker, no root), start the server, and show one agent
# talking to another.
#
#   ./scripts/install.sh [agent-chat-server start options...]
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

echo
echo "== BlueLake says hello in #general"
AGENT_CHAT_NICK=BlueLake "$VENV/bin/ac" send '#general' 'hello from BlueLake'
echo
echo "== GreenCastle reads #general"
AGENT_CHAT_NICK=GreenCastle "$VENV/bin/ac" listen '#general' --last 5

cat <<MSG

Agent Chat is running. Next:
  source $VENV/bin/activate          # puts ac and agent-chat-server on PATH
  ac send '#general' 'starting on the auth module'
  agent-chat-server status            # health;  agent-chat-server stop  to stop
MSG
