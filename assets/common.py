"""What every asset shares: the dataset spec, the daily partitions, and a run's window of days."""

from __future__ import annotations

import hashlib
import os
import warnings
from datetime import date, datetime
from pathlib import Path
from types import ModuleType

from dagster import AssetExecutionContext, BetaWarning, DailyPartitionsDefinition, PreviewWarning

from ml.dataset import load_spec
from ml.datasets import DEFAULT_DATASET
from ml.days import DayWindow

warnings.filterwarnings("ignore", category=BetaWarning)  # BackfillPolicy is beta in 1.13
warnings.filterwarnings("ignore", category=PreviewWarning)  # so are partitioned asset checks

SPEC = load_spec(os.environ.get("FLIGHTLINE_DATASET", DEFAULT_DATASET))

daily_partitions = DailyPartitionsDefinition(start_date=SPEC.start_date, end_date=SPEC.last_partition_end)

# Who answers for the assets, shown on every asset's page (a team, or an email).
OWNERS = [os.environ.get("FLIGHTLINE_OWNER", "team:ml-platform")]


def ownership(stage: str) -> dict:
    """Owners and tags of an asset (or of each output of a multi-asset): `stage` is ingest, features, training,
    serving or monitoring; `dataset` the spec's name. Splat into @asset / AssetOut."""
    return {"owners": OWNERS, "tags": {"dataset": SPEC.name, "stage": stage}}


def code_version(*modules: ModuleType) -> str:
    """The version of what shapes an asset's output: the dataset spec's fingerprint and the source of the modules
    that compute it. The UI marks a materialization made by another code version as stale, so a model trained
    before a change of its training code or of the spec shows it."""
    digest = hashlib.sha256(SPEC.fingerprint().encode())
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(module.__name__.encode() + b"\0" + Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def window_of(context: AssetExecutionContext) -> DayWindow:
    """The run's days: its partition, or the whole range of a single-run backfill."""
    window = context.partition_time_window
    return DayWindow(_as_date(window.start), _as_date(window.end))


def _as_date(value: datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
