#!/bin/sh
# ac-hook.sh: Agent Chat unread counts for agent hooks and status lines.
#
#   ac-hook.sh [--json EVENT] [--status] [--wake] [--end] [--cli NAME] [--home DIR]
#
# Prints "[chat] #general(2) #alerts(1!) @BlueLake(1)": counts, urgency (!) and labels, never
# message bodies. Agent modes (the default, and --json EVENT for Claude Code / Codex
# PostToolUse and Gemini CLI hooks) speak only when the counts changed since the last line
# printed for this session; --status (tmux #(), Claude Code statusLine) prints the current line
# every time. Prints nothing on any error or when the server is down; curl --max-time 1 bounds
# the wait. The hot path starts one process (curl) and none while the cache is fresh: the
# server formats the line (GET /notify?format=oneline), the rest is shell builtins.
#
# --wake (Claude Code "asyncRewake" hooks on SessionStart and Stop, run in the background):
# waits on the home's wake hub (agent_chat/wake_hub.py: one Python for every idle session,
# this shell blocked on a FIFO meanwhile), or else becomes (exec) the light waiter itself:
# `ac wait --urgent --dm --session SESSION`'s rules in a Python that imports almost nothing
# (agent_chat/wake_waiter.py; `ac wait` itself when no credentials file is there yet, or with
# AGENT_CHAT_WAKE_WAITER=ac; the hub is off with AGENT_CHAT_WAKE_HUB=off or AGENT_CHAT_TOKEN).
# Either blocks in the server's long-poll (no polling) and exits 2 with one line on stderr
# ("[chat] @BlueLake(1) ...": labels and counts, never bodies) when a DM, mention or urgent
# message arrives, which wakes the idle session. Exits 0 when nothing is new, at the timeout (AGENT_CHAT_WAKE_TIMEOUT
# seconds, default 86000) and on any error: a broken server never wakes the agent, and the
# Stop hook re-arms only after a turn. The loop guard gives at most one wake per new event and
# one waiter per session, and the waiter ends with the agent CLI that started the hook
# (AGENT_CHAT_WAIT_WHILE_PID: our parent, or its parent when that is the `sh -c` the CLI ran
# us through).
#
# Delivery stages and presence: a line printed to a session is reported `shown` (POST /stages,
# by a curl in the background, so the printing path does not wait for it) with the positions
# the line covers (/notify?covers=true), the session id and the CLI (--cli NAME, else guessed
# from the environment and the stdin JSON: gemini, codex, claude). The notify request names
# the session, CLI, host and the working directory's name: the session's presence. --end (a
# SessionEnd hook) tells the server the session is gone.
#
# Files (under $AGENT_CHAT_HOME, default ~/.agent-chat, written by `ac` when it registers or
# logs in an identity, and by `ac setup`):
#   hook/<nick>.curl    curl config (0600): the notify URL and the Authorization header
#   hook/line.<nick>    cache: the clock reading, then the line ("!" after a failure)
#   hook/seen.<nick>.<session>   the last line spoken to that session
#   hook/ac-path        the `ac` executable, to bootstrap a missing hook/<nick>.curl
# <nick> is AGENT_CHAT_NICK's bytes, each outside [A-Za-z0-9_-] as "_" ("default" when unset or
# empty): the rule of agent_chat.files.file_part, which a test pins this script to.
# AGENT_CHAT_TOKEN with AGENT_CHAT_SERVER needs no files. AGENT_CHAT_HOOK_TTL: cache seconds
# (default 3). Portable sh (dash, bash, macOS): no stat, no jq, no GNU-only options.

json_event=""
status=""
wake=""
end=""
cli=""
home_arg=""
while [ $# -gt 0 ]; do
  case $1 in
    --json) json_event=$2; shift 2 || exit 0 ;;
    --status) status=1; shift ;;
    --wake) wake=1; shift ;;
    --end) end=1; shift ;;
    --cli) cli=$2; shift 2 || exit 0 ;;
    --home) home_arg=$2; shift 2 || exit 0 ;;
    *) shift ;;
  esac
done
case $json_event in *[!A-Za-z]*) exit 0 ;; esac

home=${AGENT_CHAT_HOME:-${home_arg:-$HOME/.agent-chat}}
dir=$home/hook
nick=${AGENT_CHAT_NICK:-default}
# The letters spelled out: a range like A-Z can match more than ASCII in some locales.
case $nick in
  *[!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-]*)
    nick=$(printf '%s' "$nick" | LC_ALL=C tr -c 'A-Za-z0-9_-' '_') ;;
esac

# Which session is asking: the hook's stdin JSON ("session_id"), else GEMINI_SESSION_ID.
sid=${GEMINI_SESSION_ID:-}
input=""
repo=""
if [ -z "$status" ] && [ ! -t 0 ]; then
  IFS= read -r input || true
  case $input in
    *'"session_id"'*)
      sid=${input#*\"session_id\"}
      sid=${sid#*\"}
      sid=${sid%%\"*} ;;
  esac
  case $input in
    *'"cwd"'*)
      repo=${input#*\"cwd\"}
      repo=${repo#*\"}
      repo=${repo%%\"*}
      repo=${repo%/}
      repo=${repo##*/} ;;
  esac
fi
case $sid in *[!A-Za-z0-9_-]*) sid=$(printf '%s' "$sid" | LC_ALL=C tr -c 'A-Za-z0-9_-' '_') ;; esac
sid=${sid:-default}
# Which CLI: --cli, else its traces (Gemini sets GEMINI_SESSION_ID; Codex keeps its transcripts
# under ~/.codex; Claude Code sets CLAUDE_PROJECT_DIR, which Gemini sets too, so it comes last).
if [ -z "$cli" ]; then
  if [ -n "${GEMINI_SESSION_ID:-}" ]; then cli=gemini
  else
    case $input in
      *'"transcript_path"'*'/.codex/'*) cli=codex ;;
      *) [ -n "${CLAUDE_PROJECT_DIR:-}${CLAUDECODE:-}" ] && cli=claude ;;
    esac
  fi
fi
case $cli in *[!A-Za-z0-9._-]*) cli="" ;; esac

# The API's base URL and the Authorization header as curl config lines, from the environment or
# hook/<nick>.curl (its url names /notify): for the requests beside /notify.
api_config() {
  if [ -n "$AGENT_CHAT_TOKEN" ] && [ -n "$AGENT_CHAT_SERVER" ]; then
    printf 'url = "%s/_agent_chat/v1/%s"\nheader = "Authorization: Bearer %s"\n' \
      "${AGENT_CHAT_SERVER%/}" "$1" "$AGENT_CHAT_TOKEN"
    [ -n "${AGENT_CHAT_CA_FILE:-}" ] && printf 'cacert = "%s"\n' "$AGENT_CHAT_CA_FILE"
    return 0
  fi
  [ -r "$dir/$nick.curl" ] || return 1
  while IFS= read -r cfg; do
    case $cfg in
      'url = '*/notify\") printf '%s/%s"\n' "${cfg%/notify\"}" "$1" ;;
      'header = '*|'cacert = '*) printf '%s\n' "$cfg" ;;
    esac
  done < "$dir/$nick.curl"
}

# POST JSON ($2) to the API's $1; no output, at most 2 s.
api_post() {
  api_config "$1" | curl -q -sf --max-time 2 -o /dev/null -K - -H 'Content-Type: application/json' \
    --data-binary "$2" 2>/dev/null
}

if [ -n "$end" ]; then
  [ "$sid" = default ] && exit 0
  api_post sessions/end "{\"session\":\"$sid\"}"
  exit 0
fi

if [ -n "$wake" ]; then
  # `claude -p` (entrypoint sdk-cli) cannot be woken, and it waits for background hooks before
  # it exits: a waiting wake hook would only hold it open.
  case ${CLAUDE_CODE_ENTRYPOINT:-} in sdk-*) exit 0 ;; esac
  ac=""
  [ -r "$dir/ac-path" ] && IFS= read -r ac < "$dir/ac-path"
  if [ -z "$ac" ] || [ ! -x "$ac" ]; then ac=$(command -v ac) || exit 0; fi
  timeout=${AGENT_CHAT_WAKE_TIMEOUT:-86000}
  case $timeout in ''|*[!0-9]*) timeout=86000 ;; esac
  watch=$PPID
  case $(ps -o comm= -p "$watch" 2>/dev/null) in
    sh|bash|dash|zsh|*/sh|*/bash) watch=$(ps -o ppid= -p "$watch" 2>/dev/null) ;;
  esac
  watch=${watch#"${watch%%[! ]*}"}
  case $watch in ''|*[!0-9]*) watch="" ;; esac
  # The light waiter (agent_chat.wake_waiter), in place of this shell: `ac`'s own Python (its
  # "#!" line), when the credentials are at hand (else `ac wait` below, which can register).
  py=""
  if [ "${AGENT_CHAT_WAKE_WAITER:-}" != ac ] \
    && { [ -n "$AGENT_CHAT_TOKEN" ] && [ -n "$AGENT_CHAT_SERVER" ] || [ -r "$dir/$nick.curl" ]; }; then
    IFS= read -r py < "$ac" 2>/dev/null || py=""
    case $py in '#!/'*python*) py=${py#??} ;; *) py="" ;; esac
    case $py in *[!A-Za-z0-9_./+-]*) py="" ;; esac  # options, "env python": not this form
  fi
  if [ -n "$py" ] && [ -x "$py" ]; then
    # The wake hub (agent_chat/wake_hub.py): one Python for every idle session of this home,
    # while this shell waits on a FIFO (~1.6 MiB, where a Python waiter is ~9). Only with a
    # credentials file (no token is written to a request); anything amiss: the light waiter.
    hub=$home/wake-hub
    base=$hub/$sid.$$
    if [ -z "${AGENT_CHAT_TOKEN:-}" ] && [ "${AGENT_CHAT_WAKE_HUB:-}" != off ] \
      && (umask 077 && { [ -d "$hub" ] || mkdir -p "$hub"; } && mkfifo "$base.fifo") 2>/dev/null
    then
      printf '%s\n' "$sid" "$timeout" "$dir/$nick.curl" "$watch" "$cli" end > "$base.req"
      pid=""
      [ -r "$hub/pid" ] && IFS= read -r pid < "$hub/pid"
      case $pid in ''|*[!0-9]*) pid="" ;; esac
      # Signalled only when that process is a hub (a pid can be reused), else one is started,
      # by one hook of those arming at once (mkdir is atomic): the home's, not this session's,
      # so with none of the session's environment.
      case ${pid:+$(ps -o args= -p "$pid" 2>/dev/null)} in
        *agent_chat.wake_hub*) kill -USR1 "$pid" 2>/dev/null ;;
        *) if mkdir "$hub/starting" 2>/dev/null; then
             env -i HOME="$HOME" PATH="$PATH" ${SSL_CERT_FILE:+"SSL_CERT_FILE=$SSL_CERT_FILE"} \
               ${SSL_CERT_DIR:+"SSL_CERT_DIR=$SSL_CERT_DIR"} \
               ${AGENT_CHAT_RELAY:+"AGENT_CHAT_RELAY=$AGENT_CHAT_RELAY"} \
               ${AGENT_CHAT_WAKE_HUB_IDLE:+"AGENT_CHAT_WAKE_HUB_IDLE=$AGENT_CHAT_WAKE_HUB_IDLE"} \
               "$py" -I -c 'from agent_chat.wake_hub import main; main()' "$hub" \
               </dev/null >/dev/null 2>&1 &
           fi ;;
      esac
      n=0
      while [ -e "$base.req" ] && [ "$n" -lt 60 ]; do sleep 0.05; n=$((n + 1)); done
      reply=""
      if [ ! -e "$base.req" ]; then
        IFS= read -r reply < "$base.fifo" || reply=""
      fi
      case $reply in  # the hub removed the FIFO after its answer
        W*) printf '%s\n' "${reply#W}" >&2; exit 2 ;;
        0) exit 0 ;;
      esac  # F, or no answer (no hub took it, or it ended): the light waiter
      [ -n "$reply" ] || rmdir "$hub/starting" 2>/dev/null  # a hub that never came
      rm -f "$base.req" "$base.fifo"
    fi
    export AGENT_CHAT_HOME="$home" AGENT_CHAT_WAIT_WHILE_PID="$watch" AGENT_CHAT_CLI="$cli"
    exec "$py" -I -c 'from agent_chat.wake_waiter import main; main()' --session "$sid" \
      --timeout "$timeout" --credentials "$dir/$nick.curl" </dev/null >/dev/null
  fi
  line=$(AGENT_CHAT_HOME=$home AGENT_CHAT_WAIT_WHILE_PID=$watch AGENT_CHAT_CLI=$cli "$ac" wait --urgent --dm --oneline --session "$sid" \
    --timeout "$timeout" </dev/null 2>/dev/null) || exit 0
  nl='
'
  line=${line%%"$nl"*}
  case $line in
    *[!A-Za-z0-9_.:#@!+\(\)\ -]*) line=$(printf '%s' "$line" | LC_ALL=C tr -cd 'A-Za-z0-9_.:#@!+() -') ;;
  esac
  [ -n "$line" ] || exit 0
  printf '[chat] %s: new direct or urgent message (read: ac listen --unread)\n' "$line" >&2
  exit 2
fi

# A clock in whole seconds without starting `date` where possible: Linux's /proc/uptime
# (monotonic), bash's EPOCHSECONDS, else date. Only differences are used (cache age, bootstrap
# interval), and a reading from another clock or boot is at worst one stale or missed cache.
now=""
if [ -r /proc/uptime ]; then
  read -r now _ < /proc/uptime
  now=${now%%.*}
fi
case $now in ''|*[!0-9]*) now=${EPOCHSECONDS:-$(date +%s)} ;; esac
ttl=${AGENT_CHAT_HOOK_TTL:-3}
case $ttl in ''|*[!0-9]*) ttl=3 ;; esac

# The line: from the cache while it is fresh, else from the server.
line=""
covers=""
fresh=""
if [ "$ttl" -gt 0 ] && [ -r "$dir/line.$nick" ]; then
  { IFS= read -r ts; IFS= read -r line; IFS= read -r covers; } < "$dir/line.$nick"
  case $ts in
    ''|*[!0-9]*) ;;
    *) [ $((now - ts)) -lt "$ttl" ] && [ $((now - ts)) -ge 0 ] && fresh=1 ;;
  esac
fi

if [ -z "$fresh" ]; then
  # GET /notify?format=oneline: "#general(2) #alerts(1!)\n", or an empty body when nothing is
  # unread; covers=true adds "covers SEQ:ROOM_ID ..." (what the line covers) as a second line.
  # The session, CLI, host and repository are its presence. curl -f: any HTTP error is a
  # failure; the token stays off the command line (-K).
  q="format=oneline&covers=true"
  if [ "$sid" != default ] && [ -z "$status" ]; then
    # Read here, not above: the cached path sends nothing, so it needs neither.
    case $repo in *[!A-Za-z0-9._-]*) repo=$(printf '%s' "$repo" | LC_ALL=C tr -c 'A-Za-z0-9._-' '_') ;; esac
    host=${HOSTNAME:-}
    [ -z "$host" ] && [ -r /etc/hostname ] && IFS= read -r host < /etc/hostname
    case $host in *[!A-Za-z0-9._-]*) host="" ;; esac
    q="$q&session=$sid&cli=$cli&host=$host&repo=$repo"
  fi
  cacert=""  # the CA `ac` verifies with, for the environment-only case (AGENT_CHAT_CA_FILE)
  [ -n "${AGENT_CHAT_CA_FILE:-}" ] && cacert="cacert = \"$AGENT_CHAT_CA_FILE\""
  if [ -n "$AGENT_CHAT_TOKEN" ] && [ -n "$AGENT_CHAT_SERVER" ]; then
    line=$(curl -q -sf --max-time 1 --max-filesize 65536 -G -d "$q" -K - 2>/dev/null <<CURL
url = "${AGENT_CHAT_SERVER%/}/_agent_chat/v1/notify"
header = "Authorization: Bearer $AGENT_CHAT_TOKEN"
$cacert
CURL
) || line="!"
  elif [ -r "$dir/$nick.curl" ]; then
    line=$(curl -q -sf --max-time 1 --max-filesize 65536 -G -d "$q" \
      -K "$dir/$nick.curl" 2>/dev/null) || line="!"
  else
    # No credentials for this nick yet (an identity from before `ac` wrote them, or a new
    # AGENT_CHAT_NICK that has not run `ac` yet): let `ac` write them, in the background, at
    # most once a minute.
    [ -r "$dir/ac-path" ] || exit 0
    boot=""
    [ -r "$dir/boot.$nick" ] && IFS= read -r boot < "$dir/boot.$nick"
    case $boot in ''|*[!0-9]*) ;; *) [ $((now - boot)) -lt 60 ] && [ $((now - boot)) -ge 0 ] && exit 0 ;; esac
    IFS= read -r ac < "$dir/ac-path" || exit 0
    printf '%s\n' "$now" > "$dir/boot.$nick" 2>/dev/null || exit 0
    ("$ac" setup hook --quiet </dev/null >/dev/null 2>&1 &) 2>/dev/null
    exit 0
  fi
  # Trust nothing: one line, ending in ")" as every "label(count)" does (not JSON from an older
  # server, not an HTML page); anything outside the labels' safe set is stripped.
  nl='
'
  covers=""
  case $line in *"${nl}covers "*) covers=${line#*"${nl}covers "}; covers=${covers%%"$nl"*} ;; esac
  case $covers in *[!A-Za-z0-9_.:!\ -]*) covers="" ;; esac
  line=${line%%"$nl"*}
  case $line in
    '!'|'') ;;
    *')')
      case $line in
        *[!A-Za-z0-9_.:#@!+\(\)\ -]*) line=$(printf '%s' "$line" | LC_ALL=C tr -cd 'A-Za-z0-9_.:#@!+() -') ;;
      esac
      line="[chat] $line" ;;
    *) line="!" ;;
  esac
  # One small write (no temp file + mv: that would be another process on the hot path).
  if [ -d "$dir" ] || mkdir -m 700 "$dir" 2>/dev/null; then
    printf '%s\n%s\n%s\n' "$now" "$line" "$covers" > "$dir/line.$nick" 2>/dev/null
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
# The line counts as seen only once it was printed: a failed write (the CLI closed the pipe,
# or the hook was killed at its timeout) leaves it unseen, so the next hook call retries.
if [ -n "$line" ]; then
  out="$line (read: ac listen --unread)"
  if [ -n "$json_event" ]; then
    # JSON for Codex (its UserPromptSubmit parses stdout starting with "[" as JSON and fails),
    # Gemini CLI (JSON only) and PostToolUse everywhere. The line has no quote or backslash.
    printf '{"hookSpecificOutput":{"hookEventName":"%s","additionalContext":"%s"}}\n' \
      "$json_event" "$out" || exit 0
  else
    printf '%s\n' "$out" || exit 0
  fi
  # Printed: report it shown, in the background (the CLI does not wait for it: no output).
  if [ -n "$covers" ] && [ "$sid" != default ]; then
    api_post stages "{\"stage\":\"shown\",\"session\":\"$sid\",\"cli\":\"${cli:-unknown}\",\"covers\":\"$covers\",\"chars\":${#out}}" \
      </dev/null >/dev/null 2>&1 &
  fi
fi
printf '%s\n' "$line" > "$seen" 2>/dev/null
exit 0
