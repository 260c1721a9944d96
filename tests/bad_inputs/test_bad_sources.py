"""The bad-input corpus: broken source files for one day, each with its exact outcome, and proof that
nothing earlier was lost (other partitions, Delta history, and on a failure every table untouched)."""

import csv
import io
import shutil
import zipfile
from datetime import datetime, timedelta

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterEventType, materialize
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from assets.features import validated_features
from assets.ingest import RAW_QUARANTINE, raw_data
from assets.performance import model_performance
from assets.predictions import batch_predictions
from ml import undated
from ml.datasets.flights import package_data_dir
from orchestration.lakehouse import LakehouseResource
from orchestration.run_pipeline import held_by_the_gate
from tests.conftest import table
from tests.world import BROKEN, materializations

TABLES = ("raw_data", "validated_features", "quarantine", "batch_predictions")
BASE = {"dagster/asset_partition_range_start": "2013-02-01", "dagster/asset_partition_range_end": "2013-02-03"}


def package_rows(first_day: int, last_day: int) -> tuple[list[str], list[list[str]]]:
    with zipfile.ZipFile(package_data_dir() / "flights.csv.zip") as zf, zf.open("flights.csv") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
        header = next(reader)
        return header, [r for r in reader if r[1] == "2" and first_day <= int(r[2]) <= last_day]


HEADER, FEB = package_rows(1, 3)
COL = {name: i for i, name in enumerate(HEADER)}


def day_rows(day: int) -> list[list[str]]:
    return [list(r) for r in FEB if int(r[2]) == day]


def moved(rows: list[list[str]], day: int) -> list[list[str]]:
    """Feb 3's flights as if they flew on Feb `day`: the date columns and the event time move together."""
    out = []
    for r in rows:
        r = list(r)
        t = datetime.strptime(r[COL["time_hour"]], "%Y-%m-%dT%H:%M:%SZ") + timedelta(days=day - int(r[COL["day"]]))
        r[COL["day"]], r[COL["time_hour"]] = str(day), t.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(r)
    return out


def write_csv(folder, header, rows, raw_bytes: bytes = b""):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "flights.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    if raw_bytes:
        with open(folder / "flights.csv", "ab") as fh:
            fh.write(raw_bytes)
    return folder


@pytest.fixture(scope="module")
def world(world):
    """The session's tiny world (tests/world.py: 2013-02-01..03 ingested, a champion, scored), as these tests take
    it. Its 5 broken rows of Feb 2 are its only quarantined rows, and it has no rows without a partition date."""
    assert world.table("quarantine").count() == BROKEN and world.lake.version(RAW_QUARANTINE) is None
    return world.instance, world.resources, world.state


def with_source(lake: LakehouseResource, folder) -> LakehouseResource:
    return lake.replaced(source_location=str(folder))


def snapshot(spark, resources):
    """Per table: the Delta version and the rows of every partition."""
    out = {}
    for t in TABLES:
        df = table(spark, resources, t)
        out[t] = (
            DeltaTable.forPath(spark, resources["lakehouse"].table_path(t)).history(1).first()["version"],
            {
                r["event_date"] and r["event_date"].isoformat(): r["count"]  # None: rows without a partition date
                for r in df.groupBy("event_date").count().collect()
            },
        )
    return out


def run_day(world, folder, day: str):
    instance, resources, _ = world
    return materialize(
        [raw_data, validated_features, batch_predictions],
        instance=instance,
        partition_key=day,
        raise_on_error=False,
        resources={**resources, "lakehouse": with_source(resources["lakehouse"], folder)},
    )


def checks_of(result) -> dict:
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    }


def started(result) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_START]


def error_of(result, step: str) -> str:
    return str(result.failure_data_for_node(step).error)


def assert_untouched(spark, resources, before):
    assert snapshot(spark, resources) == before


def assert_only_day_changed(spark, resources, before, day, tables=TABLES):
    after = snapshot(spark, resources)
    for t in tables:
        version, parts = after[t]
        # exactly one new commit; none for quarantine when nothing was quarantined (Delta skips an empty write)
        assert version - before[t][0] in ((0, 1) if t == "quarantine" else (1,)), t
        assert {d: n for d, n in parts.items() if d != day} == {d: n for d, n in before[t][1].items() if d != day}, t


def quarantine_of(spark, resources, day):
    rows = table(spark, resources, "quarantine").where(f"event_date = '{day}'").collect()
    return sorted((r.flight, tuple(r.failed_rules)) for r in rows)


def dead_temperature_sensor(folder, dead):
    """weather.csv in `folder`, with no temperature on the days where dead(month, day)."""
    with open(package_data_dir() / "weather.csv", encoding="utf-8") as src, open(folder / "weather.csv", "w") as dst:
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        for row in reader:
            if dead(int(row[header.index("month")]), int(row[header.index("day")])):
                row[header.index("temp")] = "NA"
            writer.writerow(row)


# ---- failures: nothing is written anywhere -------------------------------------------------------------------


def test_empty_partition_fails_the_raw_suite_and_keeps_the_day(spark, world, tmp_path):
    _, resources, _ = world
    before = snapshot(spark, resources)
    result = run_day(world, write_csv(tmp_path, HEADER, day_rows(1)), "2013-02-02")  # a file without Feb 2
    assert not result.success
    check = checks_of(result)["raw_suite"]
    assert not check.passed
    failed = check.metadata["failed_expectations"].value
    assert [(f["expectation"], f["observed_value"]) for f in failed] == [("expect_table_row_count_to_be_between", 0)]
    assert (
        "raw_data 2013-02-02: the raw suite failed, nothing was written (the partition keeps its previous rows)"
        in error_of(result, "raw_data")
    )
    assert started(result) == ["raw_data"]
    assert_untouched(spark, resources, before)


def test_missing_column_is_named_before_anything_is_read(spark, world, tmp_path):
    _, resources, _ = world
    before = snapshot(spark, resources)
    i = COL["distance"]
    rows = [r[:i] + r[i + 1 :] for r in day_rows(2)]
    result = run_day(world, write_csv(tmp_path, HEADER[:i] + HEADER[i + 1 :], rows), "2013-02-02")
    assert not result.success
    assert (
        "dataset flights: the source breaks its schema contract: column 'distance' is missing (expected DOUBLE)"
        in error_of(result, "raw_data")
    )
    assert "Traceback" not in error_of(result, "raw_data").split("\n")[0]
    assert_untouched(spark, resources, before)


def test_a_corrupt_archive_is_named(spark, world, tmp_path):
    _, resources, _ = world
    before = snapshot(spark, resources)
    good = (package_data_dir() / "flights.csv.zip").read_bytes()
    (tmp_path / "flights.csv.zip").write_bytes(good[: len(good) // 3])  # a download cut short
    result = run_day(world, tmp_path, "2013-02-02")
    assert not result.success
    assert f"source file {tmp_path / 'flights.csv.zip'} is not a readable zip archive" in error_of(result, "raw_data")
    assert_untouched(spark, resources, before)


def test_an_all_null_column_fails_the_feature_suite_and_nothing_downstream_runs(spark, world, tmp_path):
    _, resources, _ = world
    write_csv(tmp_path, HEADER, day_rows(2))
    dead_temperature_sensor(tmp_path, lambda month, day: True)
    before = snapshot(spark, resources)
    result = run_day(world, tmp_path, "2013-02-02")
    assert not result.success
    check = checks_of(result)["feature_suite"]
    failed = check.metadata["failed_expectations"].value
    assert [(f["expectation"], f["column"], f["unexpected_percent"]) for f in failed] == [
        ("expect_column_values_to_not_be_null", "temp", 100.0)
    ]
    assert started(result) == ["raw_data", "validated_features"]  # batch_predictions never starts
    assert (
        "validated_features 2013-02-02: 2013-02-02: the feature suite failed: expect_column_values_to_not_be_null"
        "(temp):"
    ) in error_of(result, "validated_features")
    assert "Nothing was written to validated_features" in error_of(result, "validated_features")
    assert held_by_the_gate(result) == []  # `make run` stops on this run: nothing of it was written
    after = snapshot(spark, resources)
    assert after["validated_features"] == before["validated_features"]
    assert after["batch_predictions"] == before["batch_predictions"]


def test_too_many_bad_rows_fail_the_quarantine_budget(spark, world, tmp_path):
    _, resources, _ = world
    rows = day_rows(2)
    bad = len(rows) // 10
    for r in rows[:bad]:
        r[COL["distance"]] = "-100"
    before = snapshot(spark, resources)
    result = run_day(world, write_csv(tmp_path, HEADER, rows), "2013-02-02")
    assert not result.success
    check = checks_of(result)["quarantine_budget"]
    assert check.partition == "2013-02-02"  # shown on the partition in the UI, not as an unpartitioned result
    assert not check.passed and check.metadata["quarantined_rows"].value == bad
    assert check.metadata["rows_by_rule"].value == {"distance_in_range": bad}
    assert f"{bad} of {len(rows)} rows" in check.description and "over the budget of 5.00%" in check.description
    assert started(result) == ["raw_data", "validated_features"]
    after = snapshot(spark, resources)
    assert after["validated_features"] == before["validated_features"]
    assert after["batch_predictions"] == before["batch_predictions"]
    assert after["quarantine"][1]["2013-02-02"] == bad  # the rows wait in quarantine, for people to look at


# ---- row-level problems: quarantined, the rest goes through --------------------------------------------------


def quarantined_case(spark, world, tmp_path, day, rows, raw_bytes=b""):
    _, resources, _ = world
    before = snapshot(spark, resources)
    result = run_day(world, write_csv(tmp_path, HEADER, rows, raw_bytes), day)
    assert result.success, [str(e) for e in result.all_events if e.is_failure]
    meta = result.asset_materializations_for_node("validated_features")
    feats = next(m.metadata for m in meta if m.asset_key == AssetKey("validated_features"))
    assert feats["reconciles"].value is True
    assert feats["raw_rows"].value == feats["feature_rows"].value + feats["quarantined_rows"].value
    assert_only_day_changed(spark, resources, before, day)
    return feats, quarantine_of(spark, resources, day)


ROW_PROBLEMS = [
    ("negative distances", "distance", "-5", ("distance_in_range",)),
    ("wrong types", "distance", "far", ("malformed_record", "distance_not_null")),
    ("unparseable dates", "time_hour", "2013-02-04 noonish", ("malformed_record", "time_hour_not_null")),
    ("a closed category broken", "origin", "XYZ", ("origin_allowed",)),
    ("dates outside the partition", "time_hour", "2013-02-09T15:00:00Z", ("event_time_in_partition",)),
]


@pytest.fixture(scope="module")
def row_problems(spark, world, tmp_path_factory):
    """One day whose source breaks three rows per problem of ROW_PROBLEMS, each problem on rows of its own: one
    run instead of one per problem (15 of the day's ~900 rows stay well inside the 5% budget)."""
    rows = moved(day_rows(3), 4)
    broken = {}
    for i, (case, column, value, rule) in enumerate(ROW_PROBLEMS):
        for r in rows[3 * i : 3 * i + 3]:
            r[COL[column]] = value
        broken[case] = sorted((r[COL["flight"]], rule) for r in rows[3 * i : 3 * i + 3])
    feats, quarantined = quarantined_case(spark, world, tmp_path_factory.mktemp("rows"), "2013-02-04", rows)
    return feats, quarantined, broken


@pytest.mark.parametrize("case", [p[0] for p in ROW_PROBLEMS])
def test_row_level_problems_are_quarantined_with_their_rule(row_problems, case):
    feats, quarantined, broken = row_problems
    assert feats["quarantined_rows"].value == 3 * len(ROW_PROBLEMS)
    assert quarantined == sorted(q for rows in broken.values() for q in rows)  # those rows, and no other row
    assert [q for q in quarantined if q[1] == broken[case][0][1]] == broken[case]  # each with its own rule(s)


def test_duplicate_keys_keep_one_row(spark, world, tmp_path):
    rows = moved(day_rows(3), 5)
    feats, quarantined = quarantined_case(spark, world, tmp_path, "2013-02-05", rows + rows[:2])
    assert quarantined == sorted((r[COL["flight"]], ("duplicate_key",)) for r in rows[:2])
    _, resources, _ = world
    f = table(spark, resources, "validated_features").where("event_date = '2013-02-05'")
    assert f.count() == len(rows) == f.select("carrier", "flight", "origin").distinct().count()


def test_non_utf8_bytes_are_quarantined(spark, world, tmp_path):
    rows = moved(day_rows(3), 6)
    broken = list(rows[0])
    broken[COL["carrier"]] = "@@"
    line = ",".join(broken).replace("@@", "U\udcffA").encode("utf-8", "surrogateescape")  # a raw 0xFF byte
    feats, quarantined = quarantined_case(spark, world, tmp_path, "2013-02-06", rows[1:], raw_bytes=line + b"\n")
    assert quarantined == [(broken[COL["flight"]], ("invalid_utf8",))]


def test_a_truncated_last_line_is_quarantined(spark, world, tmp_path):
    rows = moved(day_rows(3), 7)
    cut = ",".join(rows[-1])[:40].encode()  # the file ends mid-record
    feats, quarantined = quarantined_case(spark, world, tmp_path, "2013-02-07", rows[:-1], raw_bytes=cut)
    assert feats["quarantined_rows"].value == 1
    assert quarantined[0][0] == rows[-1][COL["flight"]] and "malformed_record" in quarantined[0][1]


# ---- accepted with a note -------------------------------------------------------------------------------------


def test_missing_labels_are_kept_for_scoring_and_left_out_of_training(spark, world, tmp_path):
    rows = moved(day_rows(3), 8)
    known = sum(1 for r in rows if r[COL["arr_delay"]] == "")
    for r in rows[:10]:
        r[COL["arr_delay"]] = "NA"
    feats, quarantined = quarantined_case(spark, world, tmp_path, "2013-02-08", rows)
    assert quarantined == []
    assert feats["unlabelled_rows"].value >= 10 + known
    _, resources, _ = world
    preds = table(spark, resources, "batch_predictions").where("event_date = '2013-02-08'")
    assert preds.count() == len(rows)


def test_a_day_without_labels_yet_is_recorded_and_filled_when_they_arrive(spark, world, tmp_path):
    instance, resources, _ = world
    daily = [raw_data, validated_features, batch_predictions, model_performance]
    assert materialize(daily, selection=[model_performance], instance=instance, resources=resources, tags=BASE).success
    perf_path = resources["lakehouse"].table_path("model_performance")
    version = DeltaTable.forPath(spark, perf_path).history(1).first()["version"]
    rows = moved(day_rows(3), 11)
    for r in rows:  # the flights have not landed yet
        r[COL["arr_delay"]] = r[COL["arr_time"]] = r[COL["air_time"]] = "NA"
    lake = with_source(resources["lakehouse"], write_csv(tmp_path / "early", HEADER, rows))
    result = materialize(
        daily, instance=instance, partition_key="2013-02-11", resources={**resources, "lakehouse": lake}
    )
    assert result.success
    meta = result.asset_materializations_for_node("model_performance")[0].metadata
    assert meta["days_without_labels"].value == ["2013-02-11"] and meta["days_with_labels"].value == []
    assert (meta["rows_with_labels"].value, meta["rows_without_labels"].value) == (0, len(rows))
    assert meta["rows_written"].value == 0 and meta["delta_version"].value == version
    assert "primary_metric" not in meta and meta["metrics_by_day"].value == {}
    assert DeltaTable.forPath(spark, perf_path).history(1).first()["version"] == version  # nothing written
    assert table(spark, resources, "model_performance").count() == 3  # Feb 1-3, as before

    lake = with_source(resources["lakehouse"], write_csv(tmp_path / "landed", HEADER, moved(day_rows(3), 11)))
    result = materialize(
        daily,
        selection=[raw_data, validated_features, model_performance],
        instance=instance,
        partition_key="2013-02-11",
        resources={**resources, "lakehouse": lake},
    )  # same predictions
    meta = result.asset_materializations_for_node("model_performance")[0].metadata
    day = table(spark, resources, "model_performance").where("event_date = '2013-02-11'").collect()
    assert len(day) == 1 and day[0].labelled_rows == meta["rows_with_labels"].value > 0
    assert meta["primary_metric"].value == pytest.approx(day[0].auc) and meta["days_without_labels"].value == []
    assert meta["dagster/row_count"].value == 1 and meta["delta_version"].value == version + 1
    assert table(spark, resources, "model_performance").count() == 4


def test_unseen_categories_are_scored(spark, world, tmp_path):
    rows = moved(day_rows(3), 9)
    for r in rows[:4]:
        r[COL["carrier"]] = "ZZ"  # a carrier the model never saw
    feats, quarantined = quarantined_case(spark, world, tmp_path, "2013-02-09", rows)
    assert quarantined == []
    _, resources, _ = world
    zz = table(spark, resources, "batch_predictions").where("event_date = '2013-02-09' AND carrier = 'ZZ'")
    assert zz.count() == 4 and zz.where("probability IS NULL").count() == 0


def test_an_extra_column_is_ignored_with_a_warning(spark, world, tmp_path):
    rows = [r + ["B12"] for r in moved(day_rows(3), 10)]
    _, resources, _ = world
    before = snapshot(spark, resources)
    result = run_day(world, write_csv(tmp_path, HEADER + ["gate"], rows), "2013-02-10")
    assert result.success
    [raw_meta] = [m.metadata for m in materializations(result, "raw_data")]
    assert raw_meta["ignored_columns"].value == "gate"
    assert "gate" not in table(spark, resources, "raw_data").columns
    assert_only_day_changed(spark, resources, before, "2013-02-10")
    shutil.rmtree(tmp_path)


# ---- a range run (single-run backfill): every day is judged and recorded on its own -----------------------------

RANGE = ["2013-02-14", "2013-02-15", "2013-02-16"]


def run_range(world, folder, days=RANGE):
    instance, resources, _ = world
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    return materialize(
        [raw_data, validated_features, batch_predictions],
        instance=instance,
        tags=tags,
        raise_on_error=False,
        resources={**resources, "lakehouse": with_source(resources["lakehouse"], folder)},
    )


def check_status(instance, check: str, asset="validated_features", days=RANGE) -> dict[str, str]:
    """The instance's latest status of `check` per partition: what the UI shows on each day."""
    key = AssetCheckKey(AssetKey(asset), check)
    return {
        i.partition_key: i.latest_execution_status.value
        for i in instance.event_log_storage.get_asset_check_partition_info([key], partition_keys=days)
        if i.is_current
    }


def temperatures(spark, resources) -> dict[str, int]:
    """validated_features' rows with a temperature, per day of RANGE."""
    rows = table(spark, resources, "validated_features").where(F.col("event_date").isin(RANGE))
    return {r.event_date.isoformat(): r.n for r in rows.groupBy("event_date").agg(F.count("temp").alias("n")).collect()}


def test_bad_days_in_a_range_run_fail_alone_and_the_good_days_are_written(spark, world, tmp_path):
    """Feb 15 is over its quarantine budget; Feb 16 has no temperature, which the feature suite's `mostly`
    (50% non-NULL) lets pass over the range's days together, but not over Feb 16 alone."""
    instance, resources, _ = world
    good = [r for d in (14, 15, 16) for r in moved(day_rows(3), d)]
    ok = run_range(world, write_csv(tmp_path / "good", HEADER, good))
    assert ok.success
    assert (
        check_status(instance, "quarantine_budget")
        == check_status(instance, "feature_suite")
        == dict.fromkeys(RANGE, "SUCCEEDED")
    )  # one evaluation per day, not one unpartitioned result for the range
    before = snapshot(spark, resources)
    temperatures_before = temperatures(spark, resources)
    assert temperatures_before["2013-02-16"] > 0

    bad_day = moved(day_rows(3), 15)
    bad = len(bad_day) // 10  # 10% of Feb 15 breaks a rule: over the 5% budget for that day, 3.3% of the range
    for r in bad_day[:bad]:
        r[COL["distance"]] = "-100"
    source = write_csv(tmp_path / "bad", HEADER, moved(day_rows(3), 14) + bad_day + moved(day_rows(3), 16))
    dead_temperature_sensor(source, lambda month, day: (month, day) == (2, 16))
    result = run_range(world, source)
    assert not result.success
    assert started(result) == ["raw_data", "validated_features"]  # batch_predictions never starts
    error = error_of(result, "validated_features")
    assert (
        f"validated_features 2013-02-14...2013-02-16: 2013-02-15: {bad} of {len(bad_day)} rows "
        f"({bad / len(bad_day):.2%}) broke row-level rules, over the budget of 5.00%: distance_in_range: {bad}"
    ) in error
    assert (
        "; 2013-02-16: the feature suite failed: expect_column_values_to_not_be_null(temp): "
        f"{len(day_rows(3))} unexpected (100.000%)"
    ) in error
    assert "The other 1 day was written" in error
    held = held_by_the_gate(result)  # `make run` reports these and goes on with the day written
    assert len(held) == 1 and held[0].startswith("validated_features 2013-02-14...2013-02-16: 2013-02-15: ")
    assert held[0].endswith(
        f"Rows that broke a row-level rule are in quarantine (Delta v{snapshot(spark, resources)['quarantine'][0]})."
    )
    evaluations = [
        (e.event_specific_data.check_name, e.event_specific_data.partition, e.event_specific_data.passed)
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert sorted(evaluations) == sorted(
        [("raw_suite", d, True) for d in RANGE]
        + [
            ("quarantine_budget", "2013-02-14", True),
            ("quarantine_budget", "2013-02-15", False),
            ("quarantine_budget", "2013-02-16", True),
            ("feature_suite", "2013-02-14", True),
            ("feature_suite", "2013-02-16", False),
        ]
    )
    assert check_status(instance, "quarantine_budget") == {
        "2013-02-14": "SUCCEEDED",
        "2013-02-15": "FAILED",
        "2013-02-16": "SUCCEEDED",
    }
    assert check_status(instance, "feature_suite", days=["2013-02-14", "2013-02-16"]) == {
        "2013-02-14": "SUCCEEDED",
        "2013-02-16": "FAILED",
    }
    written = {
        m.partition: m.metadata
        for m in result.asset_materializations_for_node("validated_features")
        if m.asset_key == AssetKey("validated_features")
    }
    assert sorted(written) == ["2013-02-14"]
    assert {d: m["dagster/row_count"].value for d, m in written.items()} == {
        d: before["validated_features"][1][d] for d in written
    }
    after = snapshot(spark, resources)
    assert after["validated_features"][0] == before["validated_features"][0] + 1  # one commit, of the good day
    assert after["validated_features"][1] == before["validated_features"][1]  # Feb 15 and 16 keep their previous rows
    assert temperatures(spark, resources) == temperatures_before  # Feb 16 keeps the readings, not the dead sensor's
    assert after["batch_predictions"] == before["batch_predictions"]
    assert after["quarantine"][1]["2013-02-15"] == bad


def test_a_cut_off_day_in_a_range_run_fails_its_raw_check_alone(spark, world, tmp_path):
    """The raw suite bounds a range's total rows; each day's own rows are held to the spec's bounds too."""
    instance, resources, _ = world
    days = ["2013-02-17", "2013-02-18", "2013-02-19"]
    before = snapshot(spark, resources)
    cut = moved(day_rows(3), 18)[:50]  # a download cut short: 50 rows, under the spec's 100 per day
    source = moved(day_rows(3), 17) + cut + moved(day_rows(3), 19)
    result = run_range(world, write_csv(tmp_path, HEADER, source), days)
    assert not result.success
    assert started(result) == ["raw_data"]  # nothing downstream of the failed check runs, for any day of the run
    assert (
        "raw_data 2013-02-17...2013-02-19: 2013-02-18: 50 source rows, outside the spec's bounds of 100..2000 "
        "rows per day. The other 2 days were written"
    ) in error_of(result, "raw_data")
    assert check_status(instance, "raw_suite", "raw_data", days) == {
        "2013-02-17": "SUCCEEDED",
        "2013-02-18": "FAILED",
        "2013-02-19": "SUCCEEDED",
    }
    written = {m.partition: m.metadata["dagster/row_count"].value for m in materializations(result, "raw_data")}
    n = len(day_rows(3))
    assert written == {"2013-02-17": n, "2013-02-19": n}
    after = snapshot(spark, resources)
    assert after["raw_data"][0] == before["raw_data"][0] + 1
    assert after["raw_data"][1] == {**before["raw_data"][1], "2013-02-17": n, "2013-02-19": n}  # no Feb 18 rows
    for t in ("validated_features", "batch_predictions"):
        assert after[t] == before[t], t


# ---- rows without a partition date: quarantined and counted, never silently dropped ---------------------------


def undated_quarantine(spark, resources, folder):
    label = undated.source_label(str(folder))
    rows = table(spark, resources, RAW_QUARANTINE).where(
        F.col("event_date").isNull() & (F.col("source_partition") == label)
    )
    return sorted((r.flight, tuple(r.failed_rules)) for r in rows.collect())


def raw_quarantine_state(spark, resources) -> tuple[int, int]:
    """raw_quarantine's Delta version and its rows (all undated: it holds no day), (-1, 0) before its first write."""
    version = resources["lakehouse"].version(RAW_QUARANTINE)
    return (-1, 0) if version is None else (version, table(spark, resources, RAW_QUARANTINE).count())


def test_rows_without_a_partition_date_are_counted_sampled_and_quarantined(spark, world, tmp_path):
    instance, resources, _ = world
    day, rows = "2013-02-13", moved(day_rows(3), 13)
    bad = moved(day_rows(2), 13)[:3]
    bad[0][COL["month"]] = "13"  # an impossible date: NULL from try_to_date, where make_date would raise (ANSI)
    bad[1][COL["day"]] = "x"  # not a number: a malformed record whose day is NULL
    bad[2][COL["year"]] = ""  # missing
    before, q_before = snapshot(spark, resources), raw_quarantine_state(spark, resources)
    result = run_day(world, write_csv(tmp_path, HEADER, rows + bad), day)  # reruns: test_event_dates.py
    assert result.success, [str(e) for e in result.all_events if e.is_failure]
    check = checks_of(result)["raw_suite"]
    assert check.passed and check.metadata["rows_without_partition_date"].value == 3
    assert check.metadata["rows_without_partition_date_fraction"].value == pytest.approx(3 / (len(rows) + 3))
    samples = check.metadata["sample_rows_without_partition_date"].value
    assert sorted(str(s["flight"]) for s in samples) == sorted(r[COL["flight"]] for r in bad)
    [raw_meta] = [m.metadata for m in materializations(result, "raw_data")]
    assert raw_meta["rows_without_partition_date"].value == 3
    assert raw_meta["raw_quarantine_delta_version"].value == q_before[0] + 1  # the run's one raw_quarantine commit
    [q_meta] = [m.metadata for m in materializations(result, RAW_QUARANTINE)]  # the step's other table
    assert (q_meta["delta_version"].value, q_meta["dagster/row_count"].value) == (q_before[0] + 1, 3)
    assert undated_quarantine(spark, resources, tmp_path) == sorted(
        (r[COL["flight"]], ("no_partition_date",)) for r in bad
    )
    assert table(spark, resources, "raw_data").where(f"event_date = '{day}'").count() == len(rows)
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if "have no partition date" in e.user_message]
    assert warnings == [
        f"raw_data {day}: 3 source rows have no partition date ({3 / (len(rows) + 3):.2%} of the "
        f"{len(rows) + 3} rows this run saw, budget 5.00%); they are stored in raw_quarantine as "
        "no_partition_date"
    ]
    after = snapshot(spark, resources)
    assert raw_quarantine_state(spark, resources)[1] == q_before[1] + 3  # this source's 3, beside other sources'
    assert None not in after["quarantine"][1]  # validated_features' quarantine holds days only
    for t in TABLES:  # no other day changed
        assert {d: n for d, n in after[t][1].items() if d not in (day, None)} == {
            d: n for d, n in before[t][1].items() if d not in (day, None)
        }, t


def test_too_many_rows_without_a_partition_date_fail_the_raw_check_and_wait_in_quarantine(spark, world, tmp_path):
    _, resources, _ = world
    day, rows = "2013-02-14", moved(day_rows(3), 14)
    bad = moved(day_rows(2), 14)[:80]
    for r in bad:
        r[COL["month"]] = "13"
    before, q_before = snapshot(spark, resources), raw_quarantine_state(spark, resources)
    result = run_day(world, write_csv(tmp_path, HEADER, rows + bad), day)
    assert not result.success and started(result) == ["raw_data"]
    check = checks_of(result)["raw_suite"]
    assert not check.passed and check.metadata["rows_without_partition_date"].value == 80
    failed = check.metadata["failed_expectations"].value
    assert [(f["expectation"], f["unexpected_count"]) for f in failed] == [("expect_rows_to_have_a_partition_date", 80)]
    error = error_of(result, "raw_data")
    assert (
        f"raw_data {day}: the raw suite failed, nothing was written (the partition keeps its previous rows): "
        f"expect_rows_to_have_a_partition_date(event_date): 80 unexpected ({100 * 80 / (len(rows) + 80):.3f}%)" in error
    )
    assert f"The 80 rows without a partition date are in raw_quarantine (Delta v{q_before[0] + 1})." in error
    assert snapshot(spark, resources) == before  # no day of any table changed
    assert raw_quarantine_state(spark, resources) == (q_before[0] + 1, q_before[1] + 80)
    assert len(undated_quarantine(spark, resources, tmp_path)) == 80


# ---- Delta refusing a write: the step fails with the table, the column and what to do --------------------------


def test_a_table_written_with_another_schema_fails_the_run_with_a_clear_error(spark, world, tmp_path):
    """raw_data of a lakehouse whose table an older pipeline wrote with distance as a STRING."""
    instance, resources, _ = world
    old = resources["lakehouse"].replaced(
        root=str(tmp_path / "lake"), source_location=str(write_csv(tmp_path / "source", HEADER, day_rows(2)))
    )
    path = old.table_path("raw_data")
    older = table(spark, resources, "raw_data").where("event_date = '2013-02-01'")
    older.withColumn("distance", older.distance.cast("string")).write.format("delta").partitionBy("event_date").save(
        path
    )
    history = DeltaTable.forPath(spark, path).history().collect()
    result = materialize(
        [raw_data],
        instance=instance,
        partition_key="2013-02-02",
        raise_on_error=False,
        resources={**resources, "lakehouse": old},
    )
    assert not result.success
    cause = result.failure_data_for_node("raw_data").error.cause  # what the UI shows under the step's failure
    assert cause.cls_name == "DeltaSchemaMismatchError"
    assert cause.message.startswith(
        f"ml.delta_io.DeltaSchemaMismatchError: Delta table {path} refused the write: its schema differs from the rows "
        "written: column 'distance' is DOUBLE in the rows written, the table has STRING. Nothing was written."
    ), cause.message
    assert cause.cause.cls_name == "AnalysisException"  # Delta's own error, chained
    assert DeltaTable.forPath(spark, path).history().collect() == history
