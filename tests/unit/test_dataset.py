import dataclasses

import pytest

from ml.dataset import DatasetSpec, SourceContext, load_spec, table_source
from ml.datasets.flights import SPEC as FLIGHTS


def test_default_spec_is_flights_without_leaky_features():
    spec = load_spec("flights")
    assert spec is FLIGHTS
    assert spec.task == "classification"
    assert spec.label_expr == "CAST(arr_delay > 15 AS DOUBLE)"
    assert not set(spec.features) & {"dep_delay", "arr_time", "arr_delay", "dep_time", "air_time"}
    assert spec.metric == "auc"


def test_a_leaky_feature_is_refused():
    with pytest.raises(ValueError, match=r"features \['arr_delay'\] are declared leaky"):
        dataclasses.replace(FLIGHTS, numeric_features=(*FLIGHTS.numeric_features, "arr_delay"))


def test_unknown_task_and_reserved_names_are_refused():
    with pytest.raises(ValueError, match="task must be classification or regression, not 'ranking'"):
        dataclasses.replace(FLIGHTS, task="ranking")
    with pytest.raises(ValueError, match=r"\['label'\] are reserved"):
        dataclasses.replace(FLIGHTS, numeric_features=("label",))


def test_load_spec_errors_name_the_reference():
    with pytest.raises(ValueError, match="dataset spec 'nope' not found"):
        load_spec("nope")
    with pytest.raises(ValueError, match="is a str, not a DatasetSpec"):
        load_spec("ml.dataset:EVENT_DATE")


def test_fingerprint_changes_with_the_spec_and_only_then():
    same = dataclasses.replace(FLIGHTS)
    other = dataclasses.replace(FLIGHTS, label_expr="CAST(arr_delay > 30 AS DOUBLE)")
    assert FLIGHTS.fingerprint() == same.fingerprint()
    assert FLIGHTS.fingerprint() != other.fingerprint()


def test_a_user_table_spec(spark, tmp_path):
    path = str(tmp_path / "orders")
    spark.createDataFrame(
        [(1, "2024-05-01 10:00:00", 12.5, "web"), (2, "2024-05-02 11:00:00", 3.0, "shop")],
        "order_id INT, ts STRING, amount DOUBLE, channel STRING",
    ).selectExpr("order_id", "CAST(ts AS TIMESTAMP) AS ts", "amount", "channel").write.format("delta").save(path)
    spec = DatasetSpec(
        name="orders",
        load_source=table_source("delta", path),
        source_description="orders",
        event_time="ts",
        key_columns=("order_id",),
        label_expr="amount",
        task="regression",
        numeric_features=(),
        categorical_features=("channel",),
        start_date="2024-05-01",
    )
    assert spec.metric == "rmse"
    assert spec.load_source(spark, SourceContext(str(tmp_path))).count() == 2


def test_a_snapshot_spec_is_one_partition_split_by_hash(spark):
    from ml.datasets.breast_cancer import SPEC as SNAPSHOT
    from ml.features import feature_columns, with_event_date
    from ml.quarantine import row_rules

    assert SNAPSHOT.is_snapshot and SNAPSHOT.last_partition_end == "2025-01-02"
    assert SNAPSHOT.default_split_strategy == "hash" and FLIGHTS.default_split_strategy == "time"
    frame = spark.createDataFrame([(1,), (2,)], "sample_id INT")
    assert [str(r.event_date) for r in with_event_date(frame, SNAPSHOT).collect()] == ["2025-01-01"] * 2
    assert "event_time" not in feature_columns(SNAPSHOT) and feature_columns(SNAPSHOT)[:2] == [
        "sample_id",
        "event_date",
    ]
    assert [r.name for r in row_rules(SNAPSHOT, ["sample_id"])][:2] == ["sample_id_not_null", "target_not_null"]
    with pytest.raises(ValueError, match="a snapshot \\(no event_time\\) cannot be split by time: use hash"):
        dataclasses.replace(SNAPSHOT, split_strategy="time")
    with pytest.raises(ValueError, match="end_date must be empty or 2025-01-02, not 2025-03-01"):
        dataclasses.replace(SNAPSHOT, end_date="2025-03-01")


def test_the_example_specs_load_their_packaged_data(spark):
    from ml.contract import enforce_contract

    for name, rows in (("breast_cancer", 569), ("seattle_weather", 1461)):
        spec = load_spec(name)
        source, _ = enforce_contract(spec.load_source(spark, SourceContext("/tmp")), spec)  # the spec fits its data
        assert source.count() == rows, name
