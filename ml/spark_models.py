"""MLflow's Spark flavor (`mlflow.spark.log_model` / `load_model`) on a classic session and over Spark Connect.

A Spark ML model is written and read by Spark itself (`model.save(path)`, `PipelineModel.load(path)`), so MLflow
moves it between its artifact store (files this process sees) and a temporary folder Spark sees, MLFLOW_DFS_TMP
(default /tmp/mlflow). MLflow 3.17 does that copy through the JVM's Hadoop FileSystem (`mlflow.spark.
_HadoopFileSystem`, reached as `SparkContext._gateway.jvm`), which a Spark Connect client does not have: its only
Connect paths are Databricks' (UC volumes, DBFS). Its `pyspark.ml.connect` models are another API (torch-based
estimators), not the `pyspark.ml` pipelines this project trains, which run on the server over Connect.

Over Connect, `spark_model_files()` replaces that copy, for the duration of one log or load, with a plain file
copy: MLFLOW_DFS_TMP must then be a folder that this process and the Spark Connect server both see at the same
path (the same machine, as with infra/spark-connect.sh, or a shared mount). The server writes the model there and
this process copies it into the artifact store (log); this process copies the downloaded model there and the
server loads it (load), after which the copy is deleted (a loaded Spark ML model holds its data in memory).
Everything else is MLflow's own code path, MLmodel file and flavor included; on a classic session nothing changes.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import mlflow
from mlflow.environment_variables import MLFLOW_DFS_TMP
from pyspark.ml import PipelineModel
from pyspark.sql.utils import is_remote

_LOCK = threading.Lock()  # the replacement is process-wide for its duration: one log or load at a time


class ConnectModelFilesError(RuntimeError):
    """Over Spark Connect, MLFLOW_DFS_TMP is not a folder this process can reach."""


def log_model(model: PipelineModel, **kwargs):
    """`mlflow.spark.log_model`, over Spark Connect too."""
    with spark_model_files():
        return mlflow.spark.log_model(model, **kwargs)


def load_model(model_uri: str) -> PipelineModel:
    """`mlflow.spark.load_model`, over Spark Connect too."""
    with spark_model_files():
        return mlflow.spark.load_model(model_uri)


def shared_folder(path: str) -> str:
    """MLFLOW_DFS_TMP's path as a local folder: a plain path or file: URI; any other scheme is refused in words."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else path
    raise ConnectModelFilesError(
        f"over Spark Connect, MLFLOW_DFS_TMP must be a folder that this process and the Spark Connect server both "
        f"see at the same path (the same machine, or a shared mount), not {path!r}: MLflow 3.17 copies a Spark model "
        "from another file system through a JVM, which a Spark Connect client does not have."
    )


@contextmanager
def spark_model_files() -> Iterator[None]:
    """Within it, over Spark Connect, MLflow's Spark flavor moves a model's files with plain file copies (see the
    module's docstring); on a classic session, a no-op."""
    if not is_remote():
        yield
        return
    from mlflow import spark as flavor

    hadoop = flavor._HadoopFileSystem
    loaded: list[str] = []

    def copy_to_local_file(src: str, dst: str, remove_src: bool) -> None:  # log: the server wrote src
        source = shared_folder(src)
        shutil.copytree(source, dst)
        if remove_src:
            shutil.rmtree(source, ignore_errors=True)

    def maybe_copy_from_local_file(src: str, dst: str) -> str:  # load: the server reads dst
        target = shared_folder(dst)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copytree(src, target)
        loaded.append(target)
        return dst

    def maybe_copy_from_uri(src_uri: str, dst_path: str, local_model_path: str | None = None) -> str:
        from mlflow.tracking.artifact_utils import _download_artifact_from_uri

        return maybe_copy_from_local_file(local_model_path or _download_artifact_from_uri(src_uri), dst_path)

    def never_direct(spark_model, model_dir) -> bool:
        # log_model's first try, Spark writing straight into a remote artifact store, catches only py4j's errors.
        return False

    replaced = {
        (hadoop, "copy_to_local_file"): staticmethod(copy_to_local_file),
        (hadoop, "maybe_copy_from_local_file"): staticmethod(maybe_copy_from_local_file),
        (hadoop, "maybe_copy_from_uri"): staticmethod(maybe_copy_from_uri),
        (flavor, "_maybe_save_model"): never_direct,
    }
    shared_folder(MLFLOW_DFS_TMP.get())  # refuse an unreachable MLFLOW_DFS_TMP before Spark does any work
    with _LOCK:
        saved = {(owner, name): owner.__dict__[name] for owner, name in replaced}
        try:
            for (owner, name), value in replaced.items():
                setattr(owner, name, value)
            yield
        finally:
            for (owner, name), value in saved.items():
                setattr(owner, name, value)
            for folder in loaded:
                shutil.rmtree(folder, ignore_errors=True)
