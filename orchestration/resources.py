"""Resources: the SparkSession, the MLflow client and Optuna's storage (the lakehouse: orchestration/lakehouse.py)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from dagster import ConfigurableResource, InitResourceContext
from dagster_pyspark import PySparkResource
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import PrivateAttr
from pyspark.sql import SparkSession

from ml.spark import get_or_create_session, is_connect


class SparkResource(PySparkResource):
    """A Delta-enabled SparkSession, created on first use, one per process, never stopped between assets.

    `master` is `local[*]` by default, or a cluster URL (`spark://host:7077`, `k8s://...`); `remote` is a
    Spark Connect URL (`sc://host:15002`) and wins over `master`. `spark_config` is extra Spark conf.
    dagster-pyspark's resource starts its session when a run starts; this one waits for the first asset
    that asks (a run of the training job's registry steps alone never starts Spark).
    """

    master: str | None = "local[*]"
    remote: str | None = None
    app_name: str = "flightline"
    spark_config: dict[str, Any] = {}

    _session: SparkSession | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Nothing yet: the session starts on first use (`spark_session`)."""

    @property
    def spark_session(self) -> SparkSession:
        if self._session is None:
            self._session = get_or_create_session(
                master=self.master,
                remote=self.remote,
                app_name=self.app_name,
                conf={k: str(v) for k, v in self.spark_config.items()},
            )
        return self._session

    @property
    def spark_context(self) -> Any:
        session = self.spark_session
        if is_connect(session):
            raise AttributeError(
                f"the Spark session is a Spark Connect client ({self.remote}): it has no SparkContext; use spark_session"
            )
        return session.sparkContext


class MLflowUnreachableError(ConnectionError):
    pass


class MLflowResource(ConfigurableResource):
    """MLflow tracking and registry. Default: an embedded sqlite store with a local artifact root.

    In production `tracking_uri` points at an MLflow server (`http://...`) or `databricks`, and
    `registry_uri` at `databricks-uc` or an OSS Unity Catalog server (`uc:http://...`).
    """

    tracking_uri: str
    registry_uri: str | None = None
    experiment: str = "flightline"
    artifact_root: str | None = None  # for experiments this resource creates
    ui_url: str | None = None  # where people open the MLflow UI, for links in Dagster metadata
    http_timeout_seconds: int = 10
    http_max_retries: int = 1

    _client: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.configure()

    def configure(self) -> None:
        # Without these, an unreachable server makes MLflow retry with backoff for minutes.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.http_max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.http_timeout_seconds)
        self._check_reachable("tracking server", self.tracking_uri)
        if self.registry_uri and self.registry_uri != self.tracking_uri:
            self._check_reachable("registry", self.registry_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        self._client = MlflowClient(self.tracking_uri, self.registry_uri or self.tracking_uri)

    def _check_reachable(self, role: str, uri: str) -> None:
        """One GET of `<uri>/health` with a short timeout, so a dead or hung server fails in seconds, by name."""
        base = uri[3:] if uri.startswith("uc:") else uri
        if not base.startswith(("http://", "https://")):
            return  # sqlite, databricks, databricks-uc: their own clients fail with their own messages
        timeout = min(5, self.http_timeout_seconds)
        try:
            urllib.request.urlopen(base.rstrip("/") + "/health", timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return  # it answered: reachable (some servers have no /health)
            raise MLflowUnreachableError(
                f"MLflow {role} at {uri} is unavailable: HTTP {exc.code} {exc.reason} (GET {base.rstrip('/')}/health)"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise MLflowUnreachableError(
                f"MLflow {role} at {uri} is unreachable: {getattr(exc, 'reason', exc)} "
                f"(GET {base.rstrip('/')}/health, timeout {timeout} s)"
            ) from exc

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self.configure()
        return self._client

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
            location = Path(self.artifact_root).resolve().as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException as race:  # two first runs at once: the other one created it between the get and here
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if not self.ui_url:
            return None
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_url(self, name: str, version: str) -> str | None:
        if not self.ui_url:
            return None
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"


class OptunaResource(ConfigurableResource):
    """Where Optuna keeps its studies: an RDB URL (sqlite file locally, Postgres/MySQL in prod), so an
    interrupted study resumes where it stopped. None keeps studies in memory (nothing resumes)."""

    storage: str | None = None

    def url(self) -> str | None:
        if self.storage and self.storage.startswith("sqlite:///"):
            Path(self.storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return self.storage
