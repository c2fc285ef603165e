#!/bin/sh
# ac-tmux.sh: the Agent Chat unread line for a tmux status bar (`ac setup tmux` adds
#   set -ag status-right ' #(/path/to/ac-tmux.sh)'
# to ~/.tmux.conf). Prints "[chat] #general(2) #alerts(1!)" or nothing; see ac-hook.sh.
exec /bin/sh "${0%/*}/ac-hook.sh" --status "$@"
