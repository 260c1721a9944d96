"""Source rows without a partition date: counted, sampled and quarantined, never silently dropped.

A run takes the source rows whose event date falls in its window. A row whose event date is NULL (a
missing or impossible year, month or day; an unparseable event time) falls in every run's blind spot, so
each run also keeps the source's undated rows, in the same pass that reads its window (`raw_window(...,
undated=True)`, persisted once by raw_data). The run then counts them, records a few on the raw check,
counts them against the quarantine budget, and hands them back as quarantine rows under a NULL event_date
with the rule `no_partition_date`, for raw_data to store in a table of their own (`raw_quarantine`). Every run
over a source sees all of that source's undated rows, whatever its window, so they are stored once per source
(`source_label`, in the `source_partition` column), each run replacing what the last one stored: 365 daily runs
over a year's file keep one copy, not 365.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.errors import ArithmeticException, DateTimeException, NumberFormatException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, DatasetSpec
from ml.quality import ExpectationOutcome
from ml.quarantine import FAILED_RULES, quarantined_rows

NO_PARTITION_DATE = "no_partition_date"
SAMPLES = 3  # raw records shown on the raw check
# What Spark's ANSI mode raises on a value it cannot turn into a date (make_date(2013, 13, 1), a bad cast)
DATE_ERRORS = (DateTimeException, ArithmeticException, NumberFormatException)


class EventDateError(ValueError):
    """The spec's event-date expression raised on a source row instead of giving NULL."""


@dataclass(frozen=True)
class UndatedRows:
    rows: int  # source rows without a partition date
    window_rows: int  # source rows in the run's window
    budget: float  # the spec's max_quarantine_fraction
    samples: tuple[str, ...]  # raw records, as JSON
    rows_by_day: dict[Any, int] = field(default_factory=dict)  # the window's rows per event date

    @property
    def fraction(self) -> float:
        """Their share of the rows the run saw. Counted against every run's own window: an undated row
        may belong to any day, and a day cannot be trusted to be whole while they are many."""
        seen = self.rows + self.window_rows
        return self.rows / seen if seen else 0.0

    @property
    def within_budget(self) -> bool:
        return self.fraction <= self.budget

    def describe(self, stored_in: str) -> str:
        return (
            f"{self.rows} source rows have no partition date ({self.fraction:.2%} of the {self.rows + self.window_rows} "
            f"rows this run saw, budget {self.budget:.2%}); they are stored in {stored_in} as {NO_PARTITION_DATE}"
        )

    def outcome(self) -> ExpectationOutcome:
        """The finding as one more result of the raw suite, so that the raw check shows and gates it."""
        return ExpectationOutcome(
            expectation="expect_rows_to_have_a_partition_date",
            column=EVENT_DATE,
            success=self.within_budget,
            observed_value=self.rows,
            unexpected_count=self.rows,
            unexpected_percent=100 * self.fraction,
            sample_unexpected=list(self.samples),
        )


def source_label(location: str | None) -> str:
    """What the quarantine rows record as the source_partition of a source's undated rows: the source itself."""
    return f"source:{location or 'default'}"


def measure(window_and_undated: DataFrame, spec: DatasetSpec, source: str) -> tuple[UndatedRows, DataFrame]:
    """Count the undated rows and the window's rows of each day, in one aggregation (a row per day); the undated
    rows as quarantine rows.

    Run it first on the persisted frame: it is the pass that reads the source, so an event-date expression
    that raises (ANSI mode) raises here, as an EventDateError naming the expression.
    """
    with event_date_errors(spec):
        counts = {r[EVENT_DATE]: r["count"] for r in window_and_undated.groupBy(EVENT_DATE).count().collect()}
    undated = counts.pop(None, 0)
    quarantined = quarantined_rows(
        window_and_undated.where(F.col(EVENT_DATE).isNull()).withColumn(
            FAILED_RULES, F.array(F.lit(NO_PARTITION_DATE))
        ),
        spec,
        source,
    )
    samples = tuple(r.record for r in quarantined.limit(SAMPLES).collect()) if undated else ()
    return UndatedRows(undated, sum(counts.values()), spec.max_quarantine_fraction, samples, counts), quarantined


def dated(window_and_undated: DataFrame) -> DataFrame:
    return window_and_undated.where(F.col(EVENT_DATE).isNotNull())


@contextmanager
def event_date_errors(spec: DatasetSpec):
    try:
        yield
    except DATE_ERRORS as exc:
        expr = (
            f"event_date_expr {spec.event_date_expr!r}"
            if spec.event_date_expr
            else f"the local date of {spec.event_time}"
        )
        first_line = str(exc).strip().splitlines()[0]
        raise EventDateError(
            f"dataset {spec.name}: computing a source row's event date ({expr}) raised instead of giving NULL: "
            f"{first_line}. Nothing was written. Write the expression so that a date that cannot be computed is NULL "
            f"(Spark's try_ functions, e.g. try_to_date): such rows are then quarantined as {NO_PARTITION_DATE}."
        ) from exc


def stored_predicate(source: str) -> str:
    """The stored undated rows of `source`: a run replaces them with its own, so a rerun, or another day's
    run over the same source, never duplicates them, and a fixed source empties them."""
    return f"{EVENT_DATE} IS NULL AND source_partition = '{_escaped(source)}'"


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
