"""Row-level rules from the dataset spec: rows that break one go to the quarantine table, not to features.

All rules are evaluated in one projection, and counted in one aggregation, so the gate costs one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL, MALFORMED, DatasetSpec
from ml.features import local_date, select_features

FAILED_RULES = "failed_rules"
REPLACEMENT_CHAR = "\ufffd"  # what a UTF-8 decoder puts where the bytes were not UTF-8


@dataclass(frozen=True)
class Rule:
    name: str
    valid: Column  # TRUE when the row is fine; FALSE or NULL breaks the rule


@dataclass(frozen=True)
class QuarantineCounts:
    rows: int
    quarantined: int
    unlabelled: int
    by_rule: dict[str, int]

    @property
    def kept(self) -> int:
        return self.rows - self.quarantined

    @property
    def fraction(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0

    def within_budget(self, spec: DatasetSpec) -> bool:
        """The day's verdict: it has rows, and it quarantined at most the spec's share of them, or at most its
        allowance of rows (1 bad row of 19 is 5.3%, over a 5% budget, and says nothing about the day)."""
        return self.rows > 0 and (
            self.fraction <= spec.max_quarantine_fraction or self.quarantined <= spec.quarantine_allowance
        )


def row_rules(spec: DatasetSpec, columns: list[str]) -> list[Rule]:
    rules: list[Rule] = []
    if MALFORMED in columns:
        rules.append(Rule("malformed_record", F.col(MALFORMED).isNull()))
    event_time = [] if spec.is_snapshot else [spec.event_time]
    required = [k for k in spec.key_columns if k != EVENT_DATE] + [*event_time, *spec.required_columns]
    for c in dict.fromkeys(required):
        rules.append(Rule(f"{c}_not_null", F.col(c).isNotNull()))
    for c, (low, high) in spec.value_ranges.items():
        ok = F.lit(True)
        if low is not None:
            ok = ok & (F.col(c) >= low)
        if high is not None:
            ok = ok & (F.col(c) <= high)
        rules.append(Rule(f"{c}_in_range", F.col(c).isNull() | ok))
    for c, values in spec.allowed_values.items():
        rules.append(Rule(f"{c}_allowed", F.col(c).isNull() | F.col(c).isin(list(values))))
    if spec.task == "classification":
        rules.append(Rule("label_domain", F.col(LABEL).isNull() | F.col(LABEL).isin(0.0, 1.0)))
    if spec.event_date_expr:  # the event time must fall on the partition's date
        rules.append(
            Rule("event_time_in_partition", F.col(spec.event_time).isNull() | (local_date(spec) == F.col(EVENT_DATE)))
        )
    text = [c for c, t in spec.raw_schema.items() if t == "string" and c in columns]
    if text:
        clean = F.lit(True)
        for c in text:
            clean = clean & (F.coalesce(F.instr(F.col(c), REPLACEMENT_CHAR), F.lit(0)) == 0)
        rules.append(Rule("invalid_utf8", clean))
    return rules


def annotate(derived: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Add `failed_rules`: the names of the rules each row breaks, `duplicate_key` for all but one row per key.

    Duplicates are found by an aggregation over the key columns alone, broadcast back; only the rows of
    duplicated keys are then ranked. A window over every row (a full sort) cost 1.3x more on 1M rows.
    """
    rules = row_rules(spec, derived.columns)
    failed = F.array_compact(F.array(*[F.when(~F.coalesce(r.valid, F.lit(False)), F.lit(r.name)) for r in rules]))
    keys = list(spec.key_columns)
    row_hash = F.xxhash64(*[F.col(c) for c in derived.columns])
    duplicated = derived.groupBy(*keys).count().where("count > 1").select(*keys, F.lit(True).alias("_duplicated"))
    flagged = derived.join(F.broadcast(duplicated), keys, "left").withColumn(FAILED_RULES, failed)
    unique = flagged.where(F.col("_duplicated").isNull())
    # Among a key's rows keep the earliest event, then the smallest row hash: a rerun keeps the same row.
    # Identical rows tie on both and any of them is the same content.
    earliest = [] if spec.is_snapshot else [F.col(spec.event_time).asc_nulls_last()]
    order = Window.partitionBy(*keys).orderBy(*earliest, row_hash, F.monotonically_increasing_id())
    ranked = flagged.where(F.col("_duplicated")).withColumn(
        FAILED_RULES,
        F.when(F.row_number().over(order) == 1, F.col(FAILED_RULES)).otherwise(
            F.array_append(F.col(FAILED_RULES), F.lit("duplicate_key"))
        ),
    )
    return unique.unionByName(ranked).drop("_duplicated").select(*derived.columns, FAILED_RULES)


def rule_names(spec: DatasetSpec, columns: list[str]) -> list[str]:
    return [r.name for r in row_rules(spec, columns)] + ["duplicate_key"]


def count_by_day(annotated: DataFrame, spec: DatasetSpec) -> dict[Any, QuarantineCounts]:
    """Rows, quarantined rows (by rule) and unlabelled kept rows for each event date, in one aggregation (a row
    per day, not per record): each daily partition is judged against the budget on its own, so one bad day
    cannot hide in a month of good ones. `total` adds them up."""
    names = rule_names(spec, annotated.columns)
    rows = annotated.groupBy(EVENT_DATE).agg(*_count_columns(names)).collect()
    return {row[EVENT_DATE]: _counts(row, names) for row in rows}


def total(counts: list[QuarantineCounts]) -> QuarantineCounts:
    by_rule: dict[str, int] = {}
    for c in counts:
        for rule, n in c.by_rule.items():
            by_rule[rule] = by_rule.get(rule, 0) + n
    return QuarantineCounts(
        sum(c.rows for c in counts), sum(c.quarantined for c in counts), sum(c.unlabelled for c in counts), by_rule
    )


def _count_columns(names: list[str]) -> list[Column]:
    bad = F.size(FAILED_RULES) > 0
    return [
        F.count(F.lit(1)).alias("rows"),
        F.sum(bad.cast("long")).alias("quarantined"),
        F.sum((~bad & F.col(LABEL).isNull()).cast("long")).alias("unlabelled"),
        *[F.sum(F.array_contains(FAILED_RULES, n).cast("long")).alias(n) for n in names],
    ]


def _counts(row, names: list[str]) -> QuarantineCounts:
    by_rule = {n: int(row[n] or 0) for n in names if row[n]}
    return QuarantineCounts(int(row["rows"]), int(row["quarantined"] or 0), int(row["unlabelled"] or 0), by_rule)


def good_rows(annotated: DataFrame, spec: DatasetSpec) -> DataFrame:
    return select_features(annotated.where(F.size(FAILED_RULES) == 0), spec)


def quarantined_rows(annotated: DataFrame, spec: DatasetSpec, source_partition: str) -> DataFrame:
    """Quarantine rows: the key, the rules broken, the raw record as JSON, and where it came from."""
    raw_columns = [c for c in annotated.columns if c != FAILED_RULES]
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    return annotated.where(F.size(FAILED_RULES) > 0).select(
        *[F.col(k).cast("string").alias(k) for k in keys],
        F.col(EVENT_DATE),
        F.lit(source_partition).alias("source_partition"),
        F.col(FAILED_RULES),
        F.to_json(F.struct(*[F.col(c) for c in raw_columns])).alias("record"),
        F.current_timestamp().alias("quarantined_at"),
    )
