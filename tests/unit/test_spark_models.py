"""ml/spark_models.py without Spark: which MLFLOW_DFS_TMP a Spark Connect client can share with its server."""

import pytest

from ml.spark_models import ConnectModelFilesError, shared_folder, spark_model_files


def test_a_local_path_or_file_uri_is_shared_as_a_folder():
    assert shared_folder("/tmp/mlflow/abc") == "/tmp/mlflow/abc"
    assert shared_folder("file:///tmp/mlflow/abc") == "/tmp/mlflow/abc"


def test_another_file_system_is_refused_in_words():
    with pytest.raises(ConnectModelFilesError) as refused:
        shared_folder("s3a://bucket/mlflow-tmp")
    assert str(refused.value).startswith(
        "over Spark Connect, MLFLOW_DFS_TMP must be a folder that this process and the Spark Connect server both see "
        "at the same path (the same machine, or a shared mount), not 's3a://bucket/mlflow-tmp'"
    )


def test_on_a_classic_session_mlflow_is_left_as_it_is(monkeypatch):
    from mlflow import spark as flavor

    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    before = dict(vars(flavor._HadoopFileSystem)), flavor._maybe_save_model
    with spark_model_files():
        assert (dict(vars(flavor._HadoopFileSystem)), flavor._maybe_save_model) == before
