#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1: one master and N workers, started from the Spark that pyspark ships
# (its bin/spark-class), so the cluster runs exactly the driver's Spark version.
#
#   infra/spark-cluster.sh start|stop|status
#
# Environment (all optional):
#   FLIGHTLINE_SPARK_MASTER_PORT     master RPC port (default 7077): the driver's master URL is spark://127.0.0.1:<port>
#   FLIGHTLINE_SPARK_MASTER_UI_PORT  master web UI and its /json status (default 8090; 8080 is left to other servers)
#   FLIGHTLINE_SPARK_WORKERS         workers (default 2), each with
#   FLIGHTLINE_SPARK_WORKER_CORES    cores (default 1) and
#   FLIGHTLINE_SPARK_WORKER_MEMORY   memory for its executors (default 2g)
#   FLIGHTLINE_STATE_DIR             state folder (default <repo>/.state); everything is under <state>/spark-cluster/:
#                                    pid files, logs, and each worker's work dir (executor logs, the jars it fetched)
#
# Each process has a session and process group of its own; `stop` ends those groups only (see infra/daemon.sh).
# Executors fetch the driver's --packages jars (Delta's) from the driver, so nothing is installed on the workers.
# Their Python workers (the per-segment pandas functions) import this repository's `ml`: the workers run with the
# repository on PYTHONPATH, set here and not inherited from the caller. A cluster on other machines needs the project
# installed on its nodes (a wheel, as a Databricks cluster library).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/infra/daemon.sh"
source "$REPO_ROOT/infra/java-env.sh"
STATE=${FLIGHTLINE_STATE_DIR:-$REPO_ROOT/.state}
DIR=$STATE/spark-cluster
PORT=${FLIGHTLINE_SPARK_MASTER_PORT:-7077}
UI_PORT=${FLIGHTLINE_SPARK_MASTER_UI_PORT:-8090}
WORKERS=${FLIGHTLINE_SPARK_WORKERS:-2}
CORES=${FLIGHTLINE_SPARK_WORKER_CORES:-1}
MEMORY=${FLIGHTLINE_SPARK_WORKER_MEMORY:-2g}
START_TIMEOUT=${FLIGHTLINE_SPARK_START_TIMEOUT:-120}
PY=$REPO_ROOT/.venv/bin/python
[[ -x $PY ]] || { echo "$PY not found: run 'make install' first" >&2; exit 1; }
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_DIRS=$DIR/local SPARK_LOG_DIR=$DIR PYTHONPATH=$REPO_ROOT
MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker

master_pidfile() { echo "$DIR/master.pid"; }
worker_pidfile() { echo "$DIR/worker-$1.pid"; }
master_url() { echo "spark://127.0.0.1:$(sed -n 2p "$DIR/ports")"; }
ui_url() { echo "http://127.0.0.1:$(sed -n 3p "$DIR/ports")"; }

alive_workers() {  # alive_workers UI_URL: how many workers the master lists as ALIVE
  "$PY" - "$1" <<'EOF' 2>/dev/null
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(sys.argv[1] + "/json/", timeout=2))
print(sum(1 for w in status["workers"] if w["state"] == "ALIVE"))
EOF
}

all_workers_alive() { [[ $(alive_workers "http://127.0.0.1:$UI_PORT") == "$WORKERS" ]]; }

start() {
  local pid
  if pid=$(daemon_pid "$(master_pidfile)" "$MASTER_CLASS"); then
    echo "spark cluster already running: master pid $pid, $(master_url), UI $(ui_url) (state $DIR)"
    return 0
  fi
  stop >/dev/null  # workers left behind by a master that died
  mkdir -p "$DIR/local"
  printf '%s\n%s\n%s\n' "$WORKERS" "$PORT" "$UI_PORT" >"$DIR/ports"
  daemon_start "$(master_pidfile)" "$DIR/master.log" "$SPARK_HOME/bin/spark-class" "$MASTER_CLASS" \
    --host 127.0.0.1 --port "$PORT" --webui-port "$UI_PORT"
  for i in $(seq 1 "$WORKERS"); do
    mkdir -p "$DIR/work-$i"
    daemon_start "$(worker_pidfile "$i")" "$DIR/worker-$i.log" "$SPARK_HOME/bin/spark-class" "$WORKER_CLASS" \
      --host 127.0.0.1 --webui-port 0 --cores "$CORES" --memory "$MEMORY" --work-dir "$DIR/work-$i" \
      "spark://127.0.0.1:$PORT"
  done
  pid=$(head -n1 "$(master_pidfile)")
  if ! wait_until "$START_TIMEOUT" "$pid" "spark master" all_workers_alive; then
    echo "the end of $DIR/master.log:" >&2
    tail -n 20 "$DIR/master.log" >&2
    stop >/dev/null
    return 1
  fi
  echo "spark cluster running: master pid $pid, spark://127.0.0.1:$PORT, $WORKERS workers x $CORES core(s) x $MEMORY," \
    "UI http://127.0.0.1:$UI_PORT"
}

stop() {
  local n=${WORKERS}
  [[ -f $DIR/ports ]] && n=$(sed -n 1p "$DIR/ports")
  for i in $(seq 1 "$n"); do daemon_stop "$(worker_pidfile "$i")" "$WORKER_CLASS" "spark worker $i"; done
  daemon_stop "$(master_pidfile)" "$MASTER_CLASS" "spark master"
}

status() {
  local pid
  if ! pid=$(daemon_pid "$(master_pidfile)" "$MASTER_CLASS"); then
    echo "spark cluster not running (state $DIR)"
    return 3
  fi
  local alive
  alive=$(alive_workers "$(ui_url)") || alive="?"
  echo "spark cluster running: master pid $pid, $(master_url), $alive of $(sed -n 1p "$DIR/ports") workers alive, UI $(ui_url)"
  [[ $alive == "$(sed -n 1p "$DIR/ports")" ]]
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
