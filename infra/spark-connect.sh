#!/usr/bin/env bash
# A Spark Connect server on 127.0.0.1, started from the Spark that pyspark ships: its spark-submit runs
# org.apache.spark.sql.connect.service.SparkConnectServer (spark-connect_2.13-<version>.jar is in pyspark's jars),
# with Delta's jars (through Spark's Ivy, as `make jars` fetched them) and Delta's SQL extension and catalog.
#
#   infra/spark-connect.sh start|stop|status|url
#
# Then point the graph at it by configuration alone:
#
#   export FLIGHTLINE_SPARK_REMOTE=$(infra/spark-connect.sh url)     # sc://127.0.0.1:<port>
#
# Environment (all optional):
#   FLIGHTLINE_SPARK_CONNECT_PORT     its gRPC port (default 15002; 0: a free port, chosen at start)
#   FLIGHTLINE_SPARK_CONNECT_MASTER   the server's Spark master (default local[2])
#   FLIGHTLINE_SPARK_CONNECT_MEMORY   the server's driver memory (default 3g)
#   FLIGHTLINE_STATE_DIR              state folder (default <repo>/.state); everything is under <state>/spark-connect/:
#                                     pid file, port, log, the warehouse and Spark's local dirs
#
# The server runs in a session and process group of its own; `stop` ends that group only (see infra/daemon.sh).
# Its Python workers (UDFs) run this repository's .venv python, with the repository on PYTHONPATH. MLflow's Spark
# models pass through MLFLOW_DFS_TMP (default /tmp/mlflow), which this machine's client and server share
# (ml/spark_models.py).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/infra/daemon.sh"
source "$REPO_ROOT/infra/java-env.sh"
STATE=${FLIGHTLINE_STATE_DIR:-$REPO_ROOT/.state}
DIR=$STATE/spark-connect
PORT=${FLIGHTLINE_SPARK_CONNECT_PORT:-15002}
MASTER=${FLIGHTLINE_SPARK_CONNECT_MASTER:-local[2]}
MEMORY=${FLIGHTLINE_SPARK_CONNECT_MEMORY:-3g}
START_TIMEOUT=${FLIGHTLINE_SPARK_START_TIMEOUT:-180}
PY=$REPO_ROOT/.venv/bin/python
[[ -x $PY ]] || { echo "$PY not found: run 'make install' first" >&2; exit 1; }
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1
SERVER_CLASS=org.apache.spark.sql.connect.service.SparkConnectServer
PIDFILE=$DIR/server.pid

url() { echo "sc://127.0.0.1:$(cat "$DIR/port")"; }

listening() {  # listening PORT: something accepts connections on 127.0.0.1:PORT
  "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$1" \
    2>/dev/null
}

start() {
  local pid delta
  if pid=$(daemon_pid "$PIDFILE" "$SERVER_CLASS"); then
    echo "spark connect server already running: pid $pid, $(url) (state $DIR)"
    return 0
  fi
  mkdir -p "$DIR/local" "$DIR/warehouse"
  if [[ $PORT == 0 ]]; then
    PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
  if listening "$PORT"; then
    echo "127.0.0.1:$PORT is already taken by another process: set FLIGHTLINE_SPARK_CONNECT_PORT (0: a free one)" >&2
    return 1
  fi
  echo "$PORT" >"$DIR/port"
  delta=$(cd "$REPO_ROOT" && "$PY" -c 'from ml.spark import delta_maven_coordinate; print(delta_maven_coordinate())')
  export PYTHONPATH=$REPO_ROOT PYSPARK_PYTHON=$PY PYSPARK_DRIVER_PYTHON=$PY SPARK_LOCAL_DIRS=$DIR/local
  daemon_start "$PIDFILE" "$DIR/server.log" "$SPARK_HOME/bin/spark-submit" \
    --class "$SERVER_CLASS" --name flightline-connect --master "$MASTER" --driver-memory "$MEMORY" \
    --packages "$delta" \
    --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
    --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf "spark.connect.grpc.binding.port=$PORT" \
    --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
    --conf spark.ui.enabled=false \
    --conf spark.scheduler.mode=FAIR \
    --conf spark.sql.session.timeZone=UTC \
    --conf "spark.sql.warehouse.dir=$DIR/warehouse" \
    --conf "spark.driver.extraJavaOptions=-Dderby.system.home=$DIR"
  pid=$(head -n1 "$PIDFILE")
  if ! wait_until "$START_TIMEOUT" "$pid" "spark connect server" listening "$PORT"; then
    echo "the end of $DIR/server.log:" >&2
    tail -n 30 "$DIR/server.log" >&2
    stop >/dev/null
    return 1
  fi
  echo "spark connect server running: pid $pid, sc://127.0.0.1:$PORT, master $MASTER, driver memory $MEMORY," \
    "Delta $delta (log $DIR/server.log)"
}

stop() {
  daemon_stop "$PIDFILE" "$SERVER_CLASS" "spark connect server"
}

status() {
  local pid
  if ! pid=$(daemon_pid "$PIDFILE" "$SERVER_CLASS"); then
    echo "spark connect server not running (state $DIR)"
    return 3
  fi
  if ! listening "$(cat "$DIR/port")"; then
    echo "spark connect server pid $pid runs, but nothing listens on $(url)"
    return 1
  fi
  echo "spark connect server running: pid $pid, $(url)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
