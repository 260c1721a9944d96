"""What every asset shares: the dataset spec, the daily partitions, and a run's window of days."""

from __future__ import annotations

import os
import warnings
from datetime import date, datetime

from dagster import AssetExecutionContext, BetaWarning, DailyPartitionsDefinition, PreviewWarning

from ml.dataset import load_spec
from ml.datasets import DEFAULT_DATASET
from ml.days import DayWindow

warnings.filterwarnings("ignore", category=BetaWarning)  # BackfillPolicy is beta in 1.13
warnings.filterwarnings("ignore", category=PreviewWarning)  # so are partitioned asset checks

SPEC = load_spec(os.environ.get("FLIGHTLINE_DATASET", DEFAULT_DATASET))

daily_partitions = DailyPartitionsDefinition(start_date=SPEC.start_date, end_date=SPEC.end_date)


def window_of(context: AssetExecutionContext) -> DayWindow:
    """The run's days: its partition, or the whole range of a single-run backfill."""
    window = context.partition_time_window
    return DayWindow(_as_date(window.start), _as_date(window.end))


def _as_date(value: datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
