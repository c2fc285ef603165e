#!/bin/sh
# ac-hook.sh: Agent Chat unread counts for agent hooks and status lines.
#
#   ac-hook.sh [--json EVENT] [--status] [--home DIR]
#
# Prints "[chat] #general(2) #alerts(1!) @BlueLake(1)": counts, urgency (!) and labels, never
# message bodies. Agent modes (the default, and --json EVENT for Claude Code / Codex
# PostToolUse and Gemini CLI hooks) speak only when the counts changed since the last line
# printed for this session; --status (tmux #(), Claude Code statusLine) prints the current line
# every time. Prints nothing on any error or when the server is down; curl --max-time 1 bounds
# the wait. The hot path starts no Python: curl with a short cache of the formatted line.
#
# Files (under $AGENT_CHAT_HOME, default ~/.agent-chat, written by `ac setup`):
#   hook/<nick>.curl    curl config (0600): the notify URL and the Authorization header
#   hook/line.<nick>    cache: "<epoch>" then the formatted line ("!" after a failure)
#   hook/seen.<nick>.<session>   the last line spoken to that session
#   hook/ac-path        the `ac` executable, to bootstrap a missing hook/<nick>.curl
# <nick> is AGENT_CHAT_NICK with bytes outside [A-Za-z0-9_-] as "_" ("default" without it).
# AGENT_CHAT_TOKEN with AGENT_CHAT_SERVER needs no files. AGENT_CHAT_HOOK_TTL: cache seconds
# (default 3). Portable sh (dash, bash, macOS): no stat, no jq, no GNU-only options.

json_event=""
status=""
home_arg=""
while [ $# -gt 0 ]; do
  case $1 in
    --json) json_event=$2; shift 2 || exit 0 ;;
    --status) status=1; shift ;;
    --home) home_arg=$2; shift 2 || exit 0 ;;
    *) shift ;;
  esac
done
case $json_event in *[!A-Za-z]*) exit 0 ;; esac

home=${AGENT_CHAT_HOME:-${home_arg:-$HOME/.agent-chat}}
dir=$home/hook
nick=${AGENT_CHAT_NICK:-default}
case $nick in *[!A-Za-z0-9_-]*) nick=$(printf '%s' "$nick" | LC_ALL=C tr -c 'A-Za-z0-9_-' '_') ;; esac

# Which session is asking: the hook's stdin JSON ("session_id"), else GEMINI_SESSION_ID.
sid=${GEMINI_SESSION_ID:-}
if [ -z "$status" ] && [ ! -t 0 ]; then
  IFS= read -r input || true
  case $input in
    *'"session_id"'*)
      sid=${input#*\"session_id\"}
      sid=${sid#*\"}
      sid=${sid%%\"*} ;;
  esac
fi
case $sid in *[!A-Za-z0-9_-]*) sid=$(printf '%s' "$sid" | tr -c 'A-Za-z0-9_-' '_') ;; esac
sid=${sid:-default}

# The formatted line: from the cache while it is fresh, else from the server.
now=${EPOCHSECONDS:-$(date +%s)}
ttl=${AGENT_CHAT_HOOK_TTL:-3}
case $ttl in ''|*[!0-9]*) ttl=3 ;; esac
line=""
fresh=""
if [ -r "$dir/line.$nick" ]; then
  { IFS= read -r ts; IFS= read -r line; } < "$dir/line.$nick"
  case $ts in
    ''|*[!0-9]*) ;;
    *) [ $((now - ts)) -lt "$ttl" ] && [ $((now - ts)) -ge 0 ] && fresh=1 ;;
  esac
fi

if [ -z "$fresh" ]; then
  # {"unread":[{"room":"#general","count":2,"urgent":false,...},...]} -> "#general(2) ..."
  # by a small JSON walker (strings with escapes, nesting depth; no jq); labels keep only
  # [A-Za-z0-9_.:#@!+-]. No answer, an HTTP error or anything else -> "!".
  parse='
    { s = s $0 }
    END {
      n = length(s); i = 1; depth = 0; key = ""; out = ""; ok = 0
      while (i <= n) {
        c = substr(s, i, 1)
        if (c == "\"") {
          str = ""; j = i + 1
          while (j <= n) {
            d = substr(s, j, 1)
            if (d == "\\") { e = substr(s, j + 1, 1); str = str (e ~ /[unrtbf]/ ? "_" : e); j += (e == "u") ? 6 : 2; continue }
            if (d == "\"") break
            str = str d; j++
          }
          i = j + 1
          while (i <= n && substr(s, i, 1) ~ /[ \t\r\n]/) i++
          if (substr(s, i, 1) == ":") { key = str; i++; if (depth == 1 && key == "unread") ok = 1; continue }
          if (depth == 3 && key == "room") room = str
          continue
        }
        if (c == "{" || c == "[") { depth++; if (depth == 3) { room = ""; count = 0; urgent = "" } }
        else if (c == "}" || c == "]") {
          if (depth == 3 && c == "}" && room != "" && count > 0) {
            gsub(/[^A-Za-z0-9_.:#@!+-]+/, "_", room)
            out = out (out == "" ? "" : " ") substr(room, 1, 48) "(" count urgent ")"
          }
          depth--
        }
        else if (depth == 3 && key == "count" && c ~ /[0-9]/) {
          j = i; while (j <= n && substr(s, j, 1) ~ /[0-9]/) j++
          count = substr(s, i, j - i) + 0; i = j; continue
        }
        else if (depth == 3 && key == "urgent" && substr(s, i, 4) == "true") { urgent = "!"; i += 4; continue }
        i++
      }
      if (!ok) { print "!"; exit }
      print (out == "" ? "" : "[chat] " out)
    }'
  awk=awk
  command -v mawk >/dev/null 2>&1 && awk=mawk
  if [ -n "$AGENT_CHAT_TOKEN" ] && [ -n "$AGENT_CHAT_SERVER" ]; then
    line=$(printf 'url = "%s/_agent_chat/v1/notify"\nheader = "Authorization: Bearer %s"\n' \
      "${AGENT_CHAT_SERVER%/}" "$AGENT_CHAT_TOKEN" |
      curl -q -sf --max-time 1 -K - 2>/dev/null | LC_ALL=C $awk "$parse" 2>/dev/null)
  elif [ -r "$dir/$nick.curl" ]; then
    line=$(curl -q -sf --max-time 1 -K "$dir/$nick.curl" 2>/dev/null |
      LC_ALL=C $awk "$parse" 2>/dev/null)
  else
    # No credentials for this nick yet: let `ac` write them, in the background, once a minute.
    [ -r "$dir/ac-path" ] || exit 0
    boot=0
    [ -r "$dir/boot.$nick" ] && IFS= read -r boot < "$dir/boot.$nick"
    case $boot in ''|*[!0-9]*) boot=0 ;; esac
    [ $((now - boot)) -lt 60 ] && exit 0
    IFS= read -r ac < "$dir/ac-path" || exit 0
    printf '%s\n' "$now" > "$dir/boot.$nick" 2>/dev/null || exit 0
    ("$ac" setup hook --quiet </dev/null >/dev/null 2>&1 &) 2>/dev/null
    exit 0
  fi
  # One small write (no temp file + mv: that would be another process on the hot path).
  if [ -d "$dir" ] || mkdir -m 700 "$dir" 2>/dev/null; then
    printf '%s\n%s\n' "$now" "$line" > "$dir/line.$nick" 2>/dev/null
  fi
fi

[ "$line" = "!" ] && exit 0

if [ -n "$status" ]; then
  [ -n "$line" ] && printf '%s\n' "$line"
  exit 0
fi

# Agent modes: speak only when the line changed since this session last saw it.
seen="$dir/seen.$nick.$sid"
last=""
[ -r "$seen" ] && IFS= read -r last < "$seen"
[ "$line" = "$last" ] && exit 0
printf '%s\n' "$line" > "$seen" 2>/dev/null || exit 0
[ -z "$line" ] && exit 0
line="$line (read: ac listen --unread)"
if [ -n "$json_event" ]; then
  printf '{"hookSpecificOutput":{"hookEventName":"%s","additionalContext":"%s"}}\n' \
    "$json_event" "$line"
else
  printf '%s\n' "$line"
fi
exit 0
