"""assets/features.validated_features (and quarantine): typed features of each day, gated by the row-level rules'
budget and the feature suite; raw rows = feature rows + quarantined rows. The world's source has 5 flights with a
negative distance on Feb 2 (conftest.BROKEN_DAY)."""

import json

from pyspark.sql import functions as F

from tests.world import BROKEN, BROKEN_DAY, DAYS, check_evaluations, materializations, metadata_of


def test_a_range_run_writes_the_good_rows_of_every_day_and_reconciles(world):
    result = world.results["validated_features"]
    total, features = sum(world.rows_per_day.values()), sum(world.features_per_day.values())
    assert features == total - BROKEN
    assert sorted(m.partition for m in materializations(result, "validated_features")) == DAYS
    meta = metadata_of(result, "validated_features", DAYS[0])
    assert meta["partition"] == "2013-02-01...2013-02-03" and "dagster/row_count" not in meta
    assert meta["rows_written_in_run"] == features
    assert (meta["raw_rows"], meta["feature_rows"], meta["quarantined_rows"], meta["reconciles"]) == (
        total,
        features,
        BROKEN,
        True,
    )
    assert meta["quarantined_rows_by_rule"] == {"distance_in_range": BROKEN}
    assert meta["unlabelled_rows"] == features - sum(world.labelled_per_day.values())  # no arrival delay: NULL label
    assert meta["raw_data_delta_version"] == 0
    assert meta["delta_version"] == 0 == world.commit_of("validated_features", result.run_id)[0]["version"]
    assert meta["dagster/table_name"] == "main.flights.validated_features"

    rows = world.table("validated_features", version=0)
    assert world.counts_by_day("validated_features", version=0) == world.features_per_day  # counted from the CSV
    by_day = {
        r.event_date.isoformat(): (r.labelled, r.delayed)
        for r in rows.groupBy("event_date")
        .agg(F.count("label").alias("labelled"), F.sum("label").alias("delayed"))
        .collect()
    }
    assert by_day == {d: (world.labelled_per_day[d], world.delayed_per_day[d]) for d in DAYS}  # label: arr_delay > 15
    kept = {(r.carrier, str(r.flight), r.origin) for r in rows.where(f"event_date = '{BROKEN_DAY}'").collect()}
    assert not kept & {world.key_of(r) for r in world.broken}

    checks = {(e.check_name, e.partition): e for e in check_evaluations(result)}
    assert sorted(checks) == sorted((c, d) for c in ("quarantine_budget", "feature_suite") for d in DAYS)
    assert all(e.passed for e in checks.values())
    budget = {d: checks["quarantine_budget", d].metadata for d in DAYS}
    assert {d: m["raw_rows"].value for d, m in budget.items()} == world.rows_per_day
    assert {d: m["quarantined_rows"].value for d, m in budget.items()} == {
        d: BROKEN if d == BROKEN_DAY else 0 for d in DAYS
    }
    assert budget[BROKEN_DAY]["quarantined_fraction"].value == BROKEN / world.rows_per_day[BROKEN_DAY]
    assert {checks["feature_suite", d].metadata["validated_with"].value for d in DAYS} == {"2013-02-01...2013-02-03"}


def test_rows_that_break_a_rule_wait_in_quarantine_with_the_rule_and_the_raw_record(world):
    result = world.results["validated_features"]
    assert sorted(m.partition for m in materializations(result, "quarantine")) == DAYS
    meta = metadata_of(result, "quarantine", DAYS[0])
    [commit] = world.commit_of("quarantine", result.run_id)
    assert meta["delta_version"] == commit["version"] and meta["partition"] == "2013-02-01...2013-02-03"
    assert meta["rows_written_in_run"] == BROKEN and meta["rows_by_rule"] == {"distance_in_range": BROKEN}
    assert meta["dagster/table_name"] == "main.flights.quarantine"

    rows = world.table("quarantine", commit["version"]).collect()
    assert sorted(
        (r.carrier, r.flight, r.origin, r.event_date.isoformat(), tuple(r.failed_rules)) for r in rows
    ) == sorted((*world.key_of(r), BROKEN_DAY, ("distance_in_range",)) for r in world.broken)
    assert {json.loads(r.record)["distance"] for r in rows} == {-5.0}
    assert {r.source_partition for r in rows} == {"2013-02-01...2013-02-03"}  # the run's window


def test_a_budget_broken_by_repeated_keys_names_the_spec_s_key_columns():
    from assets.features import budget_check
    from ml.quarantine import QuarantineCounts

    repeated = budget_check(QuarantineCounts(900, 450, 0, {"duplicate_key": 450}), "2013-02-20")
    assert not repeated.passed
    assert repeated.description == (
        "450 of 900 rows (50.00%) broke row-level rules, over the budget of 5.00%: duplicate_key: 450. The spec's "
        "key_columns ('carrier', 'flight', 'origin', 'event_date') are not unique in the source: 450 rows repeat a "
        "key; a key column may be missing from key_columns"
    )
    other = budget_check(QuarantineCounts(900, 90, 0, {"distance_in_range": 88, "duplicate_key": 2}), "2013-02-20")
    assert other.description.endswith("distance_in_range: 88, duplicate_key: 2")  # the data, not the key
    assert budget_check(QuarantineCounts(19, 1, 0, {"distance_in_range": 1}), "2013-02-20").passed  # allowance
