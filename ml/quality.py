"""Great Expectations 1.x suites derived from the dataset spec, run on Spark DataFrames (no toPandas)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL, MALFORMED, DatasetSpec

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
KEY_COLUMN = "__key"  # the spec's key columns joined, for the uniqueness expectation


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample_unexpected: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        target = f"{self.expectation}({self.column})" if self.column else self.expectation
        if self.unexpected_count is not None:
            pct = f"{self.unexpected_percent:.3f}%" if self.unexpected_percent is not None else "?"
            return f"{target}: {self.unexpected_count} unexpected ({pct}), e.g. {self.sample_unexpected[:5]}"
        return f"{target}: observed {self.observed_value!r}"


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    evaluated: int
    results: list[ExpectationOutcome]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    def with_result(self, result: ExpectationOutcome) -> SuiteOutcome:
        """The suite's outcome plus a finding computed outside GX (e.g. rows without a partition date)."""
        return SuiteOutcome(self.suite, self.success and result.success, self.evaluated + 1, [*self.results, result])


def raw_suite(spec: DatasetSpec, days: int = 1, malformed: bool = True):
    """Expectations on a raw partition range, before it is written: rows per day, parseable records (where the
    source has a `_malformed_record` column: `malformed`)."""
    import great_expectations as gx

    E = gx.expectations
    low, high = spec.rows_per_day
    expectations = [E.ExpectTableRowCountToBeBetween(min_value=low * days, max_value=high * days)]
    mostly = 1.0 - spec.max_quarantine_fraction
    if spec.raw_schema and malformed:
        expectations.append(E.ExpectColumnValuesToBeNull(column=MALFORMED, mostly=mostly))
    if not spec.is_snapshot:
        expectations.append(E.ExpectColumnValuesToNotBeNull(column=spec.event_time, mostly=mostly))
    return gx.ExpectationSuite(name=f"{spec.name}_raw", expectations=expectations)


def feature_suite(spec: DatasetSpec, days: int = 1):
    """Expectations on the validated features (after quarantine), from the spec alone."""
    import great_expectations as gx

    E = gx.expectations
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    low, high = spec.rows_per_day
    expectations = [
        E.ExpectTableRowCountToBeBetween(
            min_value=int(low * days * (1 - spec.max_quarantine_fraction)), max_value=high * days
        ),
        # GX's compound-uniqueness self-join is ambiguous on Spark; run_suite adds KEY_COLUMN instead.
        E.ExpectColumnValuesToBeUnique(column=KEY_COLUMN),
        *[
            E.ExpectColumnValuesToNotBeNull(column=c)
            for c in dict.fromkeys(
                (
                    *keys,
                    EVENT_DATE,
                    *([] if spec.is_snapshot else [spec.event_time]),
                    *(c for c in spec.categorical_features if c in spec.required_columns),
                )
            )
        ],
        *[
            E.ExpectColumnValuesToNotBeNull(column=c, mostly=spec.min_non_null.get(c, 0.5))
            for c in spec.features
            if c not in spec.required_columns and c not in keys
        ],
    ]
    for column, (low_v, high_v) in spec.value_ranges.items():
        expectations.append(E.ExpectColumnValuesToBeBetween(column=column, min_value=low_v, max_value=high_v))
    for column, values in spec.allowed_values.items():
        expectations.append(E.ExpectColumnValuesToBeInSet(column=column, value_set=list(values)))
    if spec.task == "classification":
        expectations.append(E.ExpectColumnValuesToBeInSet(column=LABEL, value_set=[0.0, 1.0]))
    return gx.ExpectationSuite(name=f"{spec.name}_features", expectations=expectations)


def with_key_column(df: DataFrame, spec: DatasetSpec) -> DataFrame:
    return df.withColumn(KEY_COLUMN, F.concat_ws("|", *[F.col(k).cast("string") for k in spec.key_columns]))


def run_suite(df: DataFrame, suite, fast: bool = True) -> SuiteOutcome:
    """Validate a Spark DataFrame in an ephemeral GX context.

    GX does not cache the batch here (`persist=False`): its default persists the DataFrame and never
    unpersists it, which cost a cache write on every run (1M rows: ~4 s against a 0.6 s count) and kept
    each run's rows in memory. Callers that reuse `df` (the features asset: quarantine split, suite,
    write) persist it themselves, once.

    fast: first validate with result_format BOOLEAN_ONLY, which lets GX skip the per-expectation jobs
    that collect unexpected samples, and with `_screened` stand-ins for costly expectations. Only the
    expectations that failed are run again, as written in the suite, with SUMMARY: their outcomes
    (observed values, unexpected counts and samples) are the suite's own. A passing suite, the common
    case, pays only the first run.
    """
    originals = list(suite.expectations)
    if not fast:
        outcomes = [_outcome(r) for r in _validate(df, suite.name, [_detached(e) for e in originals], "SUMMARY")]
        return SuiteOutcome(suite.name, all(o.success for o in outcomes), len(outcomes), outcomes)
    screened_df, screens = _screened(df, originals)
    results = _validate(screened_df, suite.name, screens, "BOOLEAN_ONLY")
    outcomes = [
        _outcome(r, expectation=e.expectation_type, column=_column(e)) for r, e in zip(results, originals, strict=True)
    ]
    failed = [i for i, o in enumerate(outcomes) if not o.success]
    if failed:
        details = _validate(df, f"{suite.name}_failures", [_detached(originals[i]) for i in failed], "SUMMARY")
        for i, r in zip(failed, details, strict=True):
            outcomes[i] = _outcome(r)
    return SuiteOutcome(suite.name, all(o.success for o in outcomes), len(outcomes), outcomes)


MAX_SUITE_RUNS = 32  # GX runs one multi-day validation may spend finding the days that fail


@dataclass(frozen=True)
class DayVerdict:
    """A day's outcome, and the days GX validated together to reach it (the day alone, when it failed alone)."""

    outcome: SuiteOutcome
    days: tuple


def run_suite_by_day(
    df: DataFrame, suite_for: Callable[[int], Any], days: list, column: str = EVENT_DATE, max_runs: int = MAX_SUITE_RUNS
) -> dict[Any, DayVerdict]:
    """Each day of a multi-day frame judged by the suite as if validated alone, for one GX run when all pass.

    `suite_for(n)` is the suite of n days (its row-count bounds scale with n). A suite run over a range hides a
    bad day in two ways, and each is handled:
    - a `mostly` expectation (e.g. at least 50% non-NULL) holds over a range where one day of three has no value
      at all. One aggregation counts, per day, what each `mostly` expectation counts; the days below it are
      validated apart from the others (each such day fails, so together they fail too, and are split below);
    - an all-or-nothing expectation that fails fails every day of the range. A failed group is halved and each
      half validated, down to single days. A group that fails while both its halves pass (e.g. a key duplicated
      across days) fails all its days, with its own outcome. After `max_runs` GX runs a failed group is no longer
      split: its days fail together.
    """
    days = sorted(days)
    suspects = _below_mostly(df, suite_for(1), days, column) if len(days) > 1 else set()
    verdicts: dict[Any, DayVerdict] = {}
    runs = 0

    def judge(group: list) -> bool:
        nonlocal runs
        runs += 1
        frame = df if len(group) == len(days) else df.where(F.col(column).isin(group))
        outcome = run_suite(frame, suite_for(len(group)))
        if outcome.success or len(group) == 1 or runs + 2 > max_runs:
            verdicts.update(dict.fromkeys(group, DayVerdict(outcome, tuple(group))))
            return outcome.success
        half = len(group) // 2
        left = judge(group[:half])
        right = judge(group[half:])
        if left and right:
            verdicts.update(dict.fromkeys(group, DayVerdict(outcome, tuple(group))))
        return False

    for group in ([d for d in days if d in suspects], [d for d in days if d not in suspects]):
        if group:
            judge(group)
    return verdicts


def _below_mostly(df: DataFrame, suite, days: list, column: str) -> set:
    """The days on which a `mostly` expectation of `suite` fails, from one aggregation (a row per day). Days without
    rows count too. A `mostly` expectation of another kind than (not) NULL makes every day a suspect."""
    import great_expectations as gx

    E = gx.expectations
    partial = [e for e in suite.expectations if (getattr(e, "mostly", 1) or 1) < 1]
    if not partial:
        return set()
    if any(not isinstance(e, (E.ExpectColumnValuesToNotBeNull, E.ExpectColumnValuesToBeNull)) for e in partial):
        return set(days)
    aggregates = [F.count(F.lit(1)).alias("rows")] + [F.count(e.column).alias(f"v{i}") for i, e in enumerate(partial)]
    counts = {r[column]: r for r in df.where(F.col(column).isin(days)).groupBy(column).agg(*aggregates).collect()}
    suspects = {d for d in days if d not in counts}
    for day, r in counts.items():
        for i, e in enumerate(partial):
            expected = r[f"v{i}"] if isinstance(e, E.ExpectColumnValuesToNotBeNull) else r["rows"] - r[f"v{i}"]
            if expected < e.mostly * r["rows"]:
                suspects.add(day)
    return suspects


def spark_batch(df: DataFrame, name: str, persist: bool = False):
    """An ephemeral GX context and the whole of `df` as its batch. `persist=True` is GX's default (see run_suite)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_spark(name="spark", persist=persist)
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    return context, batch


def _validate(df: DataFrame, name: str, expectations: list, result_format: str) -> list:
    """GX's results for `expectations` on `df`, in their order (GX returns them in its own)."""
    import great_expectations as gx

    context, batch = spark_batch(df, name)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    by_id = {r.expectation_config.id: r for r in batch.validate(suite, result_format=result_format).results}
    return [by_id[e.id] for e in suite.expectations]  # suites.add gives each expectation its id


def _screened(df: DataFrame, expectations: list) -> tuple[DataFrame, list]:
    """The BOOLEAN_ONLY pass's frame and expectations: detached copies, and cheaper equivalents where GX's
    own check of an expectation costs a pass of its own.

    GX checks ExpectColumnValuesToBeUnique with a window over every row (a shuffle and sort of the whole
    column, on 1M rows more than the rest of the suite together). The stand-in is GX's unique proportion
    (distinct / non-NULL values = 1) of a 64-bit hash of the column, which GX computes as one
    count(DISTINCT): shuffling longs costs ~0.6x shuffling the key strings. Equal values hash equal, so
    any duplicate fails the stand-in; a hash collision (~3e-8 on 1M rows) fails it too, needlessly. A failed
    stand-in is never reported: the suite's own expectation then runs in the SUMMARY pass and decides.
    """
    import great_expectations as gx

    E = gx.expectations
    hashes, screens = {}, []
    for e in expectations:
        if isinstance(e, E.ExpectColumnValuesToBeUnique) and e.mostly == 1 and not e.row_condition:
            name = f"__xxhash64_{e.column}"
            hashes[name] = F.when(F.col(e.column).isNotNull(), F.xxhash64(e.column))
            screens.append(E.ExpectColumnProportionOfUniqueValuesToBeBetween(column=name, min_value=1.0))
        else:
            screens.append(_detached(e))
    return (df.withColumns(hashes) if hashes else df), screens  # Spark Connect refuses withColumns({})


def _detached(expectation):
    """A copy of a suite's expectation that may join another suite."""
    import copy

    expectation = copy.copy(expectation)
    expectation.id = None
    return expectation


def _column(expectation) -> str | None:
    return _identity(expectation.configuration)[1]


def _identity(config) -> tuple:
    kwargs = config.kwargs
    return config.type, kwargs.get("column") or ",".join(kwargs.get("column_list") or []) or None


def _outcome(r, expectation: str | None = None, column: str | None = None) -> ExpectationOutcome:
    """GX's result as plain values; `expectation`/`column` name the suite's expectation a stand-in ran for."""
    res = r.result or {}
    return ExpectationOutcome(
        expectation=expectation or r.expectation_config.type,
        column=column if expectation else _identity(r.expectation_config)[1],
        success=bool(r.success),
        observed_value=_plain(res.get("observed_value")),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        sample_unexpected=[_plain(v) for v in (res.get("partial_unexpected_list") or [])[:10]],
    )


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
