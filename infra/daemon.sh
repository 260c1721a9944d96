# Sourced by the infra scripts: start a long-running process in a session and process group of its own, with a
# pid file, and stop exactly that group later. A pid file is trusted only while the process it names still runs
# the command we started (its command line matches), so a reused pid never makes `stop` kill a stranger.
#
#   daemon_pid PIDFILE PATTERN               print the pid if that process is alive and its command line has PATTERN
#   daemon_start PIDFILE LOG CMD...          start CMD under setsid, record its pid (= its group id) in PIDFILE
#   daemon_stop PIDFILE PATTERN NAME         TERM the group, wait up to 10 s, then KILL; remove PIDFILE

daemon_pid() {
  local pidfile=$1 pattern=$2 pid
  [[ -f $pidfile ]] || return 1
  pid=$(head -n1 "$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
  echo "$pid"
}

daemon_start() {
  local pidfile=$1 log=$2
  shift 2
  rm -f "$pidfile"
  # The shell records its own pid, which is the new group's id, and then becomes the command.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$@" >"$log" 2>&1 </dev/null &
  for _ in $(seq 1 50); do [[ -s $pidfile ]] && return 0; sleep 0.1; done
  echo "could not start $* (log: $log)" >&2
  return 1
}

daemon_stop() {
  local pidfile=$1 pattern=$2 name=$3 pid
  if ! pid=$(daemon_pid "$pidfile" "$pattern"); then
    rm -f "$pidfile"
    echo "$name not running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "$name stopped (pid $pid)"
}

wait_until() {  # wait_until SECONDS PID DESCRIPTION CMD...: poll CMD each second while PID lives
  local timeout=$1 pid=$2 what=$3 waited=0
  shift 3
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what exited during start" >&2
      return 1
    fi
    if ((waited >= timeout)); then
      echo "$what did not become ready within ${timeout} s" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}
