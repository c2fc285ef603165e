#!/bin/sh
# ac-tmux.sh: the Agent Chat unread line for a tmux status bar (`ac setup tmux` adds
#   set -ag status-right ' #(sh "/path/to/ac-tmux.sh")'
# to ~/.tmux.conf). Prints "[chat] ##general(2) ##alerts(1!)" or nothing: ac-hook.sh --status
# (GET /notify?format=oneline with a cache), read into this shell (a subshell: no new program).
# tmux expands #(command), #{format}, #[style] and #X in what #() prints, so every "#" is
# doubled ("##" shows as "#"): no label can run a command or restyle the bar.
case $0 in */*) ac_dir=${0%/*} ;; *) ac_dir=. ;; esac
set -- --status "$@"
line=$(. "$ac_dir/ac-hook.sh")
out=""
while :; do
  case $line in
    *'#'*) out="$out${line%%#*}##"; line=${line#*#} ;;
    *) break ;;
  esac
done
out="$out$line"
[ -n "$out" ] && printf '%s\n' "$out"
exit 0
