"""One place per deployment. `FLIGHTLINE_DEPLOYMENT` picks one: `local` (default) or `prod`.

local: Spark in this process (`local[*]`), or a Spark Connect server when FLIGHTLINE_SPARK_REMOTE names one
(`sc://127.0.0.1:15002`, infra/spark-connect.sh), an embedded MLflow store (sqlite + local artifacts, or the
MLflow server that MLFLOW_TRACKING_URI names) and the lakehouse under the state folder. prod: every endpoint comes from the environment, secrets through
`dagster.EnvVar`, so nothing secret is in code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import EnvVar

from ml.dataset import DatasetSpec
from orchestration.io import RunValuesIOManager
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource, OptunaResource, SparkResource

REPO_ROOT = Path(__file__).resolve().parents[1]

LOCAL_SPARK_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "6g",
    "spark.scheduler.mode": "FAIR",  # parallel Optuna trials each get a pool (ml/training.py)
}


def state_dir() -> Path:
    return Path(os.environ.get("FLIGHTLINE_STATE_DIR", REPO_ROOT / ".state")).resolve()


def local_resources(
    spec: DatasetSpec,
    state: Path | None = None,
    master: str = "local[*]",
    spark_conf: dict[str, str] | None = None,
    remote: str | None = None,
) -> dict:
    """`remote` (default: FLIGHTLINE_SPARK_REMOTE) is a Spark Connect URL that wins over `master`; the local conf is
    then sent as session conf, and the static keys (driver memory, scheduler mode, warehouse) are the server's."""
    state = (state or state_dir()).resolve()
    lakehouse_root = os.environ.get("FLIGHTLINE_LAKEHOUSE_ROOT", str(state / "lakehouse"))
    spark = SparkResource(
        master=master,
        remote=remote or os.environ.get("FLIGHTLINE_SPARK_REMOTE") or None,
        spark_config={
            **LOCAL_SPARK_CONF,
            "spark.sql.warehouse.dir": str(state / "spark-warehouse"),
            **(spark_conf or {}),
        },
    )
    return {
        "spark": spark,
        "mlflow": local_mlflow(spec, state),
        "lakehouse": LakehouseResource(
            spark=spark,
            root=lakehouse_root,
            catalog="main",
            schema_name=spec.name,
            model=spec.model_name,
            staging_dir=str(state / "staging"),
            source_location=os.environ.get("FLIGHTLINE_SOURCE_LOCATION"),
        ),
        "optuna": OptunaResource(storage=f"sqlite:///{state / 'optuna' / 'studies.db'}"),
        "io_manager": RunValuesIOManager(),  # each run reads its own splits and handoff (orchestration/io.py)
    }


def local_mlflow(spec: DatasetSpec, state: Path) -> MLflowResource:
    """The embedded sqlite store under the state folder; or, when MLFLOW_TRACKING_URI is set (for example to
    `make mlflow-server`'s http://127.0.0.1:5001), that server, which then keeps the artifacts itself."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")  # also set by `mlflow.set_tracking_uri`, for its subprocesses
    # Only a tracking server keeps artifacts itself: a sqlite store without a root would write them to ./mlruns
    server = uri if uri and uri.startswith(("http://", "https://", "databricks")) else None
    return MLflowResource(
        tracking_uri=uri or f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI"),
        artifact_root=None if server else str(state / "mlflow" / "artifacts"),
        experiment=spec.name,
        ui_url=os.environ.get(
            "FLIGHTLINE_MLFLOW_UI", server if server and server.startswith("http") else "http://127.0.0.1:5000"
        ),
    )


def spark_conf_from_env() -> dict[str, str]:
    """`FLIGHTLINE_SPARK_CONF`, a JSON object of Spark conf (executor memory, a Kubernetes image, ...): a cluster
    is tuned by configuration alone. `SPARK_CONF_DIR`'s spark-defaults.conf is read by Spark itself as well."""
    raw = os.environ.get("FLIGHTLINE_SPARK_CONF", "").strip()
    if not raw:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"FLIGHTLINE_SPARK_CONF is not valid JSON ({exc}): {raw[:200]!r}") from None
    if not isinstance(conf, dict):
        raise ValueError(f"FLIGHTLINE_SPARK_CONF must be a JSON object of Spark conf keys to values, not {raw[:200]!r}")
    return {str(k): str(v) for k, v in conf.items()}


def prod_resources(spec: DatasetSpec) -> dict:
    env = os.environ.get
    spark = SparkResource(
        master=env("FLIGHTLINE_SPARK_MASTER"),
        remote=env("FLIGHTLINE_SPARK_REMOTE"),  # sc://... for Spark Connect / Databricks
        spark_config={"spark.sql.session.timeZone": "UTC", **spark_conf_from_env()},
    )
    return {
        "spark": spark,
        "mlflow": MLflowResource(
            tracking_uri=EnvVar("MLFLOW_TRACKING_URI"),
            registry_uri=env("MLFLOW_REGISTRY_URI"),  # databricks-uc, or uc:http://host:8080
            experiment=env("FLIGHTLINE_MLFLOW_EXPERIMENT", f"/flightline/{spec.name}"),
            ui_url=env("FLIGHTLINE_MLFLOW_UI"),
        ),
        "lakehouse": LakehouseResource(
            spark=spark,
            root=EnvVar("FLIGHTLINE_LAKEHOUSE_ROOT"),
            catalog=env("FLIGHTLINE_CATALOG", "main"),
            schema_name=env("FLIGHTLINE_SCHEMA", spec.name),
            model=spec.model_name,
            staging_dir=env("FLIGHTLINE_STAGING_DIR", "/tmp/flightline-staging"),
            source_location=env("FLIGHTLINE_SOURCE_LOCATION"),
        ),
        "optuna": OptunaResource(
            storage=env("FLIGHTLINE_OPTUNA_STORAGE")
        ),  # postgresql://... (secret in the URL: env only)
        "io_manager": RunValuesIOManager(),  # each run reads its own splits and handoff (orchestration/io.py)
    }


DEPLOYMENTS = {"local": local_resources, "prod": prod_resources}


def resources_for(spec: DatasetSpec, deployment: str | None = None) -> dict:
    name = deployment or os.environ.get("FLIGHTLINE_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"FLIGHTLINE_DEPLOYMENT={name!r} is not a deployment; choose one of {sorted(DEPLOYMENTS)}")
    return DEPLOYMENTS[name](spec)
