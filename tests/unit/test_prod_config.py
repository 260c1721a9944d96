"""The prod deployment is configured by the environment alone, and says which variable is wrong."""

import pytest

from ml.datasets.flights import SPEC
from orchestration.deployments import resources_for


def test_spark_conf_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLIGHTLINE_SPARK_MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("FLIGHTLINE_SPARK_CONF", '{"spark.executor.memory": "1536m", "spark.executor.cores": 1}')
    spark = resources_for(SPEC, "prod")["spark"]
    assert spark.master == "spark://127.0.0.1:7077"
    assert spark.spark_config == {
        "spark.sql.session.timeZone": "UTC",
        "spark.executor.memory": "1536m",
        "spark.executor.cores": "1",
    }


@pytest.mark.parametrize(
    "raw, message",
    [
        ("spark.executor.memory=2g", r"FLIGHTLINE_SPARK_CONF is not valid JSON \(Expecting value: line 1 column 1"),
        ('["spark.executor.memory"]', r"FLIGHTLINE_SPARK_CONF must be a JSON object of Spark conf keys to values"),
    ],
)
def test_a_malformed_spark_conf_is_named(monkeypatch, raw, message):
    monkeypatch.setenv("FLIGHTLINE_SPARK_CONF", raw)
    with pytest.raises(ValueError, match=message):
        resources_for(SPEC, "prod")
