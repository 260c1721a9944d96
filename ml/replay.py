"""Replay: retrain a registered model version from exactly what it recorded, and compare its test metrics.

A version records (ml/registry.lineage_tags, ml/training) its training run, the dataset spec's fingerprint and each
split table's path and Delta version; its run records its whole tuning configuration (`tuning_config.json`: seed,
trials, search space, validation, startup trials, refit, ...) and its trials (`trials.json`). A replay
- refuses, before anything is trained or written, a version whose spec fingerprint differs from the current spec's
  (other features or rules would train another model), and a version or run that lacks any of those records;
- runs the same seeded study again, in memory, on the split tables read at their recorded versions (time travel),
  for the number of trials the recorded study finished (its timeout, a wall-clock limit, is not replayed);
- compares the test metrics, the best trial's algorithm and parameters, and each trial's value.

The study is reproducible for `parallelism` 1 (trials in threads finish in any order, and TPE learns from the
finished ones) and for a study that ran in one process (a resumed study restarted its sampler's random state).

Plain Python over Spark and MLflow: orchestration/reproduce.py is the Dagster job.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame

from ml.dataset import DatasetSpec
from ml.registry import model_version
from ml.training import TUNING_CONFIG_ARTIFACT, SplitSource, TrainingOutcome, config_from_record, tune_and_log

DEFAULT_TOLERANCE = 1e-9  # |replayed - recorded| of every test metric, where Spark's training is deterministic
TAG = "replay"  # the version's tags: replay.verdict, replay.max_abs_delta, ...
FINISHED = ("COMPLETE", "PRUNED")


class ReplayRefused(ValueError):
    """The version cannot be replayed as recorded: nothing was trained or written."""


@dataclass(frozen=True)
class ReplayPlan:
    """What a version recorded, read back: everything its replay needs."""

    name: str
    version: str
    run_id: str
    experiment_id: str
    spec_fingerprint: str
    inputs: dict[str, tuple[str, int]]  # split table -> (path, Delta version)
    record: dict[str, Any]  # the run's tuning_config.json
    metric: str
    recorded_test_metrics: dict[str, float]
    recorded_best: dict[str, str]  # algorithm and params, as the run's best_* params (strings)
    recorded_trials: list[dict[str, Any]]  # the run's trials.json
    resumed: bool  # the recorded study resumed trials of an earlier process

    @property
    def n_trials(self) -> int:
        """Trials the recorded study finished: the replay runs as many, without the recorded timeout."""
        return len([t for t in self.recorded_trials if t["state"] in FINISHED])

    def config(self, study_name: str | None = None):
        return config_from_record(
            self.record,
            n_trials=self.n_trials,
            timeout_seconds=None,
            storage=None,  # in memory: never the recorded study's storage, which would resume it
            study_name=study_name or f"replay-{self.name}-v{self.version}-{uuid.uuid4().hex[:8]}",
            reports=False,
            profile=False,
        )


def plan_replay(
    client: MlflowClient,
    name: str,
    version: int | str,
    spec: DatasetSpec,
    tables: tuple[str, ...],
    table_path: Callable[[str], str] | None = None,
) -> ReplayPlan:
    """The version's records, checked: refused (ReplayRefused, naming what is missing or different) before
    anything is trained. `table_path`: where each table lives now; a recorded path elsewhere is refused."""
    mv = model_version(client, name, version)
    tags = mv.tags
    label = f"model {name} v{mv.version}"
    recorded = tags.get("dataset.spec_fingerprint")
    if not recorded:
        raise ReplayRefused(f"{label} recorded no dataset spec fingerprint (tag dataset.spec_fingerprint)")
    if recorded != spec.fingerprint():
        raise ReplayRefused(
            f"{label} was trained with dataset spec {tags.get('dataset.name', '?')} fingerprint {recorded}, but the "
            f"current spec {spec.name} has fingerprint {spec.fingerprint()}: its features or rules changed, so a "
            "replay would train another model. Replay it with the spec it was trained with."
        )
    inputs = {}
    for table in tables:
        path, v = tags.get(f"input.{table}.path"), tags.get(f"input.{table}.delta_version")
        if not path or v is None:
            raise ReplayRefused(
                f"{label} recorded no Delta version of {table} (tags input.{table}.path/.delta_version)"
            )
        if table_path is not None and table_path(table) != path:
            raise ReplayRefused(
                f"{label} was trained on {table} at {path}, but this deployment's {table} is at {table_path(table)}"
            )
        inputs[table] = (path, int(v))
    run_id = tags.get("mlflow.run_id") or mv.run_id
    run = client.get_run(run_id)
    try:
        record = mlflow.artifacts.load_dict(f"runs:/{run_id}/{TUNING_CONFIG_ARTIFACT}")
        trials = mlflow.artifacts.load_dict(f"runs:/{run_id}/trials.json")["trials"]
    except (MlflowException, OSError, KeyError) as exc:
        raise ReplayRefused(
            f"{label}: its run {run_id} recorded no {TUNING_CONFIG_ARTIFACT} or trials.json (trained before replays "
            f"were recorded), so its tuning configuration is not known: {exc}"
        ) from exc
    metric = record["metric"]
    test = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
    if metric not in test:
        raise ReplayRefused(f"{label}: its run {run_id} recorded no test_{metric}")
    best = {k.removeprefix("best_"): v for k, v in run.data.params.items() if k.startswith("best_")}
    return ReplayPlan(
        name=name,
        version=str(mv.version),
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        spec_fingerprint=recorded,
        inputs=inputs,
        record=record,
        metric=metric,
        recorded_test_metrics=test,
        recorded_best=best,
        recorded_trials=trials,
        resumed=int(run.data.params.get("resumed_trials", "0")) > 0,
    )


def replay(
    plan: ReplayPlan,
    spec: DatasetSpec,
    frames: Mapping[str, DataFrame],
    sources: Mapping[str, SplitSource],
    experiment_id: str,
    tags: dict[str, str],
    progress: Callable[[str], None] = print,
) -> TrainingOutcome:
    """The recorded study, run again on `frames` ({"train" | "validation" | "test": the split at its recorded
    version}): a new MLflow run (with its trials), tagged with what it replays."""
    return tune_and_log(
        spec,
        frames["train"],
        frames["validation"],
        frames["test"],
        plan.config(),
        experiment_id=experiment_id,
        tags={**tags, f"{TAG}.of_model": plan.name, f"{TAG}.of_version": plan.version, f"{TAG}.of_run_id": plan.run_id},
        progress=progress,
        sources=sources,
    )


@dataclass(frozen=True)
class Verdict:
    matches: bool
    reason: str
    metric: str
    tolerance: float
    recorded: dict[str, float]
    replayed: dict[str, float]
    deltas: dict[str, float]  # replayed - recorded, per test metric
    best_matches: bool
    max_trial_delta: float | None  # the largest |Δ| of one trial's value (None: no trial to compare)
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs_delta(self) -> float:
        return max((abs(d) for d in self.deltas.values()), default=math.inf)

    def tags(self, replay_run_id: str, dagster_run_id: str) -> dict[str, str]:
        """The version's tags of its latest replay."""
        return {
            f"{TAG}.verdict": "match" if self.matches else "mismatch",
            f"{TAG}.reason": self.reason,
            f"{TAG}.test_{self.metric}": repr(self.replayed.get(self.metric)),
            f"{TAG}.max_abs_delta": repr(self.max_abs_delta),
            f"{TAG}.tolerance": repr(self.tolerance),
            f"{TAG}.mlflow_run_id": replay_run_id,
            f"{TAG}.dagster_run_id": dagster_run_id,
        }


def compare(plan: ReplayPlan, outcome: TrainingOutcome, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """Every recorded test metric against the replay's, within `tolerance`; the best trial's algorithm and params
    must be the recorded ones."""
    recorded, replayed = plan.recorded_test_metrics, outcome.test_metrics
    deltas = {k: replayed[k] - v for k, v in recorded.items() if k in replayed}
    best = {"algorithm": outcome.best_algorithm, **outcome.best_params}
    best_matches = {k: str(v) for k, v in best.items()} == plan.recorded_best
    trial_deltas = [
        abs(r["value"] - o["value"])
        for r, o in zip(plan.recorded_trials, outcome.trials, strict=False)
        if r.get("value") is not None and o.get("value") is not None
    ]
    notes = []
    if plan.resumed:
        notes.append("the recorded study resumed trials of an earlier process: its sampler restarted there")
    if int(plan.record.get("parallelism", 1)) > 1:
        notes.append(f"the recorded study ran {plan.record['parallelism']} trials at once: their order is not fixed")
    missing = sorted(set(recorded) - set(deltas))
    worst = max(deltas, key=lambda k: abs(deltas[k])) if deltas else None
    within = bool(deltas) and not missing and all(abs(d) <= tolerance for d in deltas.values())
    matches = within and best_matches
    if matches:
        reason = f"test {plan.metric} {replayed[plan.metric]!r} reproduced: every test metric within {tolerance:g}"
    elif not best_matches:
        reason = f"the replay's best trial {best} is not the recorded {plan.recorded_best}"
    elif missing:
        reason = f"the replay computed no {missing}"
    else:
        reason = (
            f"test {worst} {replayed[worst]!r} differs from the recorded {recorded[worst]!r} by {deltas[worst]:.3g}, "
            f"over the tolerance {tolerance:g}"
        )
    return Verdict(
        matches=matches,
        reason=reason + (f" ({'; '.join(notes)})" if notes else ""),
        metric=plan.metric,
        tolerance=tolerance,
        recorded=dict(recorded),
        replayed=dict(replayed),
        deltas=deltas,
        best_matches=best_matches,
        max_trial_delta=max(trial_deltas) if trial_deltas else None,
        notes=notes,
    )


def record_verdict(client: MlflowClient, plan: ReplayPlan, verdict: Verdict, replay_run_id: str, dagster_run_id: str):
    """The verdict as tags of the version (its latest replay) and of the replay's run."""
    for key, value in verdict.tags(replay_run_id, dagster_run_id).items():
        client.set_model_version_tag(plan.name, plan.version, key, value)
        client.set_tag(replay_run_id, key, value)
