#!/usr/bin/env bash
# The production-shaped services on 127.0.0.1, all at once: PostgreSQL (infra/postgres.sh) holding the Dagster
# instance and the MLflow server's back-end store, the MLflow tracking server (infra/mlflow-server.sh) with its
# artifact root, and a Spark standalone cluster (infra/spark-cluster.sh).
#
#   infra/stack.sh start|stop|status|env      (make infra-up / make infra-down)
#
# `start` is idempotent and writes <state>/infra.env (`env` rewrites only that file; mode 0600, it holds the database
# password): the environment that points the `prod` deployment at these services (FLIGHTLINE_DEPLOYMENT=prod, the
# Spark master, MLflow's URI, the lakehouse root, DAGSTER_HOME with a PostgreSQL dagster.yaml). Then, for example:
#
#   source .state/infra.env && make run ARGS="--start 2013-01-01 --end 2013-01-31"
#
# The ports come from the scripts' own variables (FLIGHTLINE_PG_PORT, MLFLOW_SERVER_PORT,
# FLIGHTLINE_SPARK_MASTER_PORT, FLIGHTLINE_SPARK_MASTER_UI_PORT). `stop` stops, in reverse order, only what
# these scripts started.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FLIGHTLINE_STATE_DIR=${FLIGHTLINE_STATE_DIR:-$REPO_ROOT/.state}
STATE=$FLIGHTLINE_STATE_DIR
ENV_FILE=$STATE/infra.env
INFRA=$REPO_ROOT/infra

write_env() {  # <state>/infra.env: the prod deployment pointed at the services; 0600 (it holds the password)
  mkdir -p "$STATE"
  local dagster_home=$STATE/dagster-prod mlflow_url=http://127.0.0.1:${MLFLOW_SERVER_PORT:-5001} pg_url
  pg_url=$(bash "$INFRA/postgres.sh" url dagster)
  (
    # It holds the database password: 0600 from its creation (umask 077, mktemp), written beside and renamed
    # over the old one, so an existing file with a wider mode is never rewritten in place.
    umask 077
    tmp=$(mktemp "$ENV_FILE.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    cat >"$tmp" <<EOF
# Written by infra/stack.sh: the prod deployment pointed at the services on 127.0.0.1. Source it.
export FLIGHTLINE_DEPLOYMENT=prod
export FLIGHTLINE_STATE_DIR='$STATE'
export DAGSTER_HOME='$dagster_home'
export FLIGHTLINE_DAGSTER_PG_URL='$pg_url'
export DAGSTER_EVENT_BATCH_SIZE=100  # a range run's per-partition materializations: one PostgreSQL transaction
export MLFLOW_TRACKING_URI='$mlflow_url'
export FLIGHTLINE_MLFLOW_UI='$mlflow_url'
export FLIGHTLINE_SPARK_MASTER='spark://127.0.0.1:${FLIGHTLINE_SPARK_MASTER_PORT:-7077}'
export FLIGHTLINE_SPARK_CONF='{"spark.driver.host": "127.0.0.1", "spark.driver.memory": "2g", "spark.executor.memory": "1536m", "spark.sql.shuffle.partitions": "4", "spark.databricks.delta.snapshotPartitions": "2", "spark.ui.showConsoleProgress": "false", "ONNX_DFS_PATH": "file://$STATE/onnx-dfs"}'
export FLIGHTLINE_LAKEHOUSE_ROOT='$STATE/lakehouse'
export FLIGHTLINE_STAGING_DIR='$STATE/staging'
export SPARK_LOCAL_IP=127.0.0.1
EOF
    mv -f "$tmp" "$ENV_FILE"
  )
}

start() {
  mkdir -p "$STATE"
  bash "$INFRA/postgres.sh" start
  # The URI holds the password: through the environment only, never a command line (mlflow-server.sh does the same).
  MLFLOW_SERVER_BACKEND_URI=$(bash "$INFRA/postgres.sh" url mlflow) bash "$INFRA/mlflow-server.sh" start
  bash "$INFRA/spark-cluster.sh" start
  local dagster_home=$STATE/dagster-prod
  mkdir -p "$dagster_home"
  cp "$INFRA/dagster-postgres.yaml" "$dagster_home/dagster.yaml"
  write_env
  echo "stack running; its environment: source $ENV_FILE"
}

stop() {
  bash "$INFRA/spark-cluster.sh" stop
  bash "$INFRA/mlflow-server.sh" stop
  bash "$INFRA/postgres.sh" stop
}

status() {
  local rc=0
  bash "$INFRA/postgres.sh" status || rc=$?
  bash "$INFRA/mlflow-server.sh" status || rc=$?
  bash "$INFRA/spark-cluster.sh" status || rc=$?
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) write_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
