#!/usr/bin/env bash
# A real MLflow tracking + registry server on 127.0.0.1, from the project's venv, for local use and tests.
#
#   infra/mlflow-server.sh start|stop|status      (make mlflow-server / make mlflow-server-stop)
#
# Environment (all optional):
#   MLFLOW_SERVER_PORT         port (default 5001; 5000 is `make mlflow-ui`)
#   MLFLOW_SERVER_BACKEND_URI  database for runs and the registry (default sqlite:///<state>/mlflow-server/mlflow.db;
#                              a postgresql://user:pass@host/db URI works once a driver, psycopg2, is installed).
#                              Handed to the server through its environment, never on a command line (`ps`).
#   MLFLOW_SERVER_WORKERS      server worker processes (default 1: the machine is small)
#   FLIGHTLINE_STATE_DIR       state folder (default <repo>/.state); the server keeps everything under
#                              <state>/mlflow-server/: artifacts/, server.pid, server.log
#
# The server is started in a process group of its own; `stop` ends that group only, and only if the pid file
# still names a live `mlflow server` process, so it never touches anything it did not start (infra/daemon.sh).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/infra/daemon.sh"
STATE=${FLIGHTLINE_STATE_DIR:-$REPO_ROOT/.state}
DIR=$STATE/mlflow-server
PORT=${MLFLOW_SERVER_PORT:-5001}
BACKEND=${MLFLOW_SERVER_BACKEND_URI:-sqlite:///$DIR/mlflow.db}
WORKERS=${MLFLOW_SERVER_WORKERS:-1}
START_TIMEOUT=${MLFLOW_SERVER_START_TIMEOUT:-90}
PIDFILE=$DIR/server.pid
LOG=$DIR/server.log
# The server's job runner (GenAI scorers, eight worker processes) is not needed for tracking and the registry.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
PY=$REPO_ROOT/.venv/bin/python
MLFLOW=$REPO_ROOT/.venv/bin/mlflow

healthy() {  # healthy <port>: /health answers within 2 s
  "$PY" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
EOF
}

our_pid() { daemon_pid "$PIDFILE" "mlflow server"; }  # the pid, if that process is still the server we started

our_port() { sed -n 2p "$PIDFILE"; }

start() {
  local pid
  if pid=$(our_pid); then
    echo "mlflow server already running: pid $pid, http://127.0.0.1:$(our_port) (state $DIR)"
    return 0
  fi
  if healthy "$PORT"; then
    echo "port $PORT already answers /health, but not from a server this script started; set MLFLOW_SERVER_PORT" >&2
    return 1
  fi
  if [[ $BACKEND == postgresql* ]] && ! "$PY" -c "import psycopg2" 2>/dev/null; then
    echo "MLFLOW_SERVER_BACKEND_URI is a PostgreSQL URI, but the venv has no driver: add psycopg2-binary" >&2
    return 1
  fi
  [[ -x $MLFLOW ]] || { echo "$MLFLOW not found: run 'make install' first" >&2; return 1; }
  mkdir -p "$DIR/artifacts"
  # setsid: a session and process group of its own, so `stop` ends the server and its workers together.
  # The shell records its own pid (= the group id) and then becomes the server.
  rm -f "$PIDFILE"
  # The back-end store URI goes through the environment (MLFLOW_BACKEND_STORE_URI, the envvar of mlflow server's
  # --backend-store-uri), never argv: a PostgreSQL URI holds the password, and any user sees argv in `ps`.
  # `export` is a shell builtin, so no process ever has it on its command line.
  export MLFLOW_BACKEND_STORE_URI=$BACKEND
  setsid bash -c 'printf "%s\n%s\n" $$ "$1" >"$2"; shift 2; exec "$@"' _ "$PORT" "$PIDFILE" \
    "$MLFLOW" server --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
    --serve-artifacts --artifacts-destination "$DIR/artifacts" \
    >"$LOG" 2>&1 </dev/null &
  local waited=0
  for _ in $(seq 1 50); do [[ -s $PIDFILE ]] && break; sleep 0.1; done
  pid=$(head -n1 "$PIDFILE" 2>/dev/null) || { echo "mlflow server did not start (log: $LOG)" >&2; return 1; }
  until healthy "$PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "mlflow server exited during start; the end of $LOG:" >&2
      tail -n 20 "$LOG" >&2
      rm -f "$PIDFILE"
      return 1
    fi
    if ((waited >= START_TIMEOUT)); then
      echo "mlflow server did not answer /health within ${START_TIMEOUT} s; stopping it (log: $LOG)" >&2
      stop >/dev/null
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "mlflow server running: pid $pid, http://127.0.0.1:$PORT, backend ${BACKEND%%://*}, artifacts $DIR/artifacts"
}

stop() { daemon_stop "$PIDFILE" "mlflow server" "mlflow server"; }

status() {
  local pid
  if pid=$(our_pid); then
    if healthy "$(our_port)"; then
      echo "mlflow server running: pid $pid, http://127.0.0.1:$(our_port)"
    else
      echo "mlflow server process $pid is up but http://127.0.0.1:$(our_port)/health does not answer (log: $LOG)"
      return 1
    fi
  else
    echo "mlflow server not running (state $DIR)"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
