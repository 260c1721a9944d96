#!/usr/bin/env bash
# A private PostgreSQL cluster on 127.0.0.1, from Debian's packages, for the Dagster instance and the MLflow server.
# It has its own data folder, port and socket folder, so it never touches a system cluster.
#
#   infra/postgres.sh start|stop|status|url DATABASE
#
# Environment (all optional):
#   FLIGHTLINE_PG_PORT       port (default 55432, away from a system cluster's 5432)
#   FLIGHTLINE_PG_USER       the role the databases belong to (default flightline)
#   FLIGHTLINE_PG_PASSWORD   its password; default: generated at the first start and kept in <state>/postgres.password
#   FLIGHTLINE_PG_DATABASES  databases created at start when missing (default "dagster mlflow")
#   FLIGHTLINE_STATE_DIR     state folder (default <repo>/.state): the cluster is <state>/postgres/ (data/, server.log)
#
# `start` installs Debian's `postgresql` when it is missing and it runs as root. PostgreSQL refuses to run as root,
# so as root the cluster runs as the `postgres` system user (it owns the data folder); otherwise as the caller.
# `stop` stops this data folder's server only (pg_ctl -D); it is idempotent like `start`.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${FLIGHTLINE_STATE_DIR:-$REPO_ROOT/.state}
DIR=$STATE/postgres
DATA=$DIR/data
LOG=$DIR/server.log
PORT=${FLIGHTLINE_PG_PORT:-55432}
PGUSER_NAME=${FLIGHTLINE_PG_USER:-flightline}
DATABASES=${FLIGHTLINE_PG_DATABASES:-dagster mlflow}
PASSWORD_FILE=$STATE/postgres.password

pg_bin() {  # the newest installed server's bin folder
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [[ -n $dir && -x $dir/pg_ctl ]] && echo "$dir"
}

ensure_installed() {
  pg_bin >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "PostgreSQL not found: installing Debian's postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pg_bin >/dev/null && return 0
  fi
  echo "error: PostgreSQL's server (/usr/lib/postgresql/<version>/bin/pg_ctl) was not found; install Debian's" \
    "postgresql package (apt-get install -y postgresql) or run this script as root to install it" >&2
  return 1
}

as_owner() {  # run a server command as the data folder's owner: `postgres` when we are root
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

password() {
  if [[ -n ${FLIGHTLINE_PG_PASSWORD:-} ]]; then echo "$FLIGHTLINE_PG_PASSWORD"; return; fi
  if [[ ! -s $PASSWORD_FILE ]]; then
    mkdir -p "$STATE"
    # umask 077 before the file exists: it is 0600 from its creation, never readable by others for an instant.
    (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$PASSWORD_FILE")
  fi
  chmod 600 "$PASSWORD_FILE" 2>/dev/null || true  # one written by an older version of this script: 0600 too
  cat "$PASSWORD_FILE"
}

running() { [[ -f $DATA/PG_VERSION ]] && as_owner "$(pg_bin)/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

init_cluster() {
  mkdir -p "$DIR"
  if [[ $(id -u) == 0 ]]; then
    chown postgres: "$DIR"
    # Every folder above the data must be searchable by `postgres`, or initdb fails with a bare "permission denied".
    if ! runuser -u postgres -- test -x "$DIR"; then
      echo "error: the postgres user cannot reach $DIR (a parent folder is private, e.g. mode 700);" \
        "set FLIGHTLINE_STATE_DIR to a folder under a world-searchable path" >&2
      return 1
    fi
  fi
  local pwfile
  # 0600 from its creation (mktemp under umask 077) and for its whole life: as root, initdb runs as `postgres`, so
  # the file is given to `postgres` rather than opened to everyone. It is deleted right after initdb.
  pwfile=$(umask 077 && mktemp)
  if [[ $(id -u) == 0 ]]; then chown postgres: "$pwfile"; fi
  password >"$pwfile"
  as_owner "$(pg_bin)/initdb" -D "$DATA" -U "$PGUSER_NAME" --pwfile="$pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$DIR/initdb.log" >&2; return 1; }
  rm -f "$pwfile"
}

psql_cmd() { PGPASSWORD=$(password) "$(pg_bin)/psql" -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" -v ON_ERROR_STOP=1 -qtA "$@"; }

create_databases() {
  local db
  for db in $DATABASES; do
    if [[ -z $(psql_cmd -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
      psql_cmd -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
    fi
  done
}

start() {
  ensure_installed
  if running; then
    echo "postgres already running: 127.0.0.1:$(port_of_running) (data $DATA)"
    return 0
  fi
  [[ -f $DATA/PG_VERSION ]] || init_cluster
  # Listen on 127.0.0.1 only; the socket goes in the data folder, not in the system's /var/run/postgresql.
  if ! as_owner "$(pg_bin)/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
      -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DATA" start >/dev/null; then
    echo "postgres did not start; the end of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    return 1
  fi
  echo "$PORT" >"$DIR/port"
  create_databases
  echo "postgres running: 127.0.0.1:$PORT, user $PGUSER_NAME, databases: $DATABASES (data $DATA)"
}

port_of_running() { cat "$DIR/port" 2>/dev/null || echo "$PORT"; }

stop() {
  if ! pg_bin >/dev/null || ! running; then
    echo "postgres not running (data $DATA)"
    return 0
  fi
  as_owner "$(pg_bin)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  echo "postgres stopped (data $DATA)"
}

status() {
  if pg_bin >/dev/null && running; then
    echo "postgres running: 127.0.0.1:$(port_of_running) (data $DATA)"
  else
    echo "postgres not running (data $DATA)"
    return 3
  fi
}

url() {  # url DATABASE: the SQLAlchemy URL clients use (psycopg2 named: SQLAlchemy 2.1 would pick psycopg 3)
  echo "postgresql+psycopg2://$PGUSER_NAME:$(password)@127.0.0.1:$(port_of_running)/${1:?usage: $0 url DATABASE}"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|url DATABASE" >&2; exit 2 ;;
esac
