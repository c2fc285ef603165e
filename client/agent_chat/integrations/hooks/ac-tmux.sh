#!/bin/sh
# ac-tmux.sh: the Agent Chat unread line for a tmux status bar (`ac setup tmux` adds
#   set -ag status-right ' #(sh "/path/to/ac-tmux.sh")'
# to ~/.tmux.conf). Prints "[chat] #general(2) #alerts(1!)" or nothing: ac-hook.sh --status
# (GET /notify?format=oneline with a cache), read into this shell rather than started anew.
case $0 in */*) ac_dir=${0%/*} ;; *) ac_dir=. ;; esac
set -- --status "$@"
. "$ac_dir/ac-hook.sh"
