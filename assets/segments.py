"""segment_models, segment_predictions and segment_performance: one scikit-learn model per segment (ml/segments.py),
registered as one bundle `catalog.schema.<model>_by_segment`, gated like the global model, scored daily, and judged per
day and segment once the labels arrive (ml/performance.py).

Defined only when the dataset spec names a segment column (`DatasetSpec.segment_column`).
"""

import mlflow as mlflow_lib
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field
from pyspark.sql import functions as F

import ml.segment_bundle
import ml.segments
from assets import contracts as c
from assets.common import SPEC, code_version, daily_partitions, ownership, window_of
from assets.contracts import SPLIT_TABLES
from assets.features import validated_features
from assets.training import GATE, pinned_splits, registered_model
from ml import registry
from ml.delta_io import days_predicate
from ml.performance import segment_performance as performance_by_segment
from ml.registry import CHALLENGER, CHAMPION, GateConfig, champion_version, gate, register_version
from ml.segment_bundle import load_bundle, log_segments
from ml.segments import (
    FAILED,
    GLOBAL,
    OWN,
    TOO_SMALL,
    TRAINED,
    Scorer,
    SegmentConfig,
    bundle_metric,
    score_segments,
    segment_table,
    train_segments,
)
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource

SEGMENTS = SegmentConfig()  # the defaults of the run config below


class SegmentRunConfig(Config):
    """ml.segments.SegmentConfig and the bundle's gate, as Dagster run config."""

    n_trials: int = Field(default=SEGMENTS.n_trials, ge=1, description="Optuna trials per segment (one study each)")
    seed: int = Field(default=SEGMENTS.seed, description="every segment study's TPE seed and models' random_state")
    min_rows: int | None = Field(
        default=None, ge=1, description="least training rows of a segment; empty: the dataset spec's min_segment_rows"
    )
    margin: float = Field(
        default=SEGMENTS.margin,
        ge=0.0,
        description="a segment's own model must beat the global champion on its test rows by more than this",
    )
    algorithms: list[str] = Field(default_factory=list, description="empty: every algorithm of the task")
    gate_margin: float = Field(default=GATE.margin, ge=0.0, description="the bundle's gate: as registered_model's")
    gate_floors: dict[str, float] = Field(
        default_factory=lambda: dict(GATE.floors), description="the bundle's gate: metric -> floor"
    )
    gate_ceilings: dict[str, float] = Field(
        default_factory=lambda: dict(GATE.ceilings), description="the bundle's gate: metric -> ceiling"
    )

    def segment_config(self) -> SegmentConfig:
        return SegmentConfig(
            n_trials=self.n_trials,
            seed=self.seed,
            min_rows=self.min_rows,
            margin=self.margin,
            algorithms=tuple(self.algorithms),
        )


def bundle_name(lakehouse: LakehouseResource) -> str:
    return f"{lakehouse.model_name}_by_segment"


def resolved(name: str, alias_version) -> Scorer:
    return Scorer(name=name, version=str(alias_version.version), run_id=alias_version.run_id)


@asset(
    ins={table: AssetIn() for table in SPLIT_TABLES},  # the same pinned split versions as tuned_pipeline
    deps=[registered_model],
    group_name="segments",
    kinds={"spark", "mlflow", "optuna"},
    code_version=code_version(ml.segments, ml.segment_bundle),
    **ownership("training"),
    description=(
        f"One scikit-learn model per {SPEC.segment_column}, each tuned by its own Optuna study on the executors "
        "(groupBy().applyInPandas); registered as one bundle, *_by_segment, and gated like the global model."
    ),
)
def segment_models(
    context: AssetExecutionContext,
    config: SegmentRunConfig,
    mlflow: MLflowResource,
    lakehouse: LakehouseResource,
    train_set: int,
    validation_set: int,
    test_set: int,
) -> Output[dict]:
    client = mlflow.client
    versions, frames, inputs = pinned_splits(lakehouse, train_set, validation_set, test_set)
    global_version = champion_version(client, lakehouse.model_name)
    global_model = resolved(lakehouse.model_name, global_version)
    global_pipeline = mlflow_lib.spark.load_model(f"models:/{global_model.name}/{global_model.version}")
    segment_config = config.segment_config()

    results = [
        r.asDict()
        for r in train_segments(
            SPEC, frames["train_set"], frames["validation_set"], frames["test_set"], global_pipeline, segment_config
        ).collect()  # one small row per segment: its status, metrics and pickled model, none of its data
    ]
    name = bundle_name(lakehouse)
    ids = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string()}
    tags = {**registry.lineage_tags(SPEC, inputs, ids), "global.model_version": global_model.version}
    experiment_id = mlflow.experiment_id()
    outcome = log_segments(
        SPEC,
        results,
        segment_config,
        experiment_id,
        tags,
        run_name=f"{SPEC.model_name}_by_{SPEC.segment_column}",
        global_model={"name": global_model.name, "version": global_model.version},
    )
    context.log.info(f"segment models: {len(results)} segments, MLflow run {outcome.run_id}")

    trained_on = ", ".join(f"{t} v{v}" for t, v in versions.items())
    version = register_version(
        client,
        name,
        outcome.model_uri,
        outcome.run_id,
        tags={**tags, "mlflow.run_id": outcome.run_id},
        description=(
            f"One model per {SPEC.segment_column}, trained by MLflow run {outcome.run_id} in Dagster run "
            f"{context.run.run_id} on {trained_on}; the other segments fall back to {global_model.name}."
        ),
    )
    test = frames["test_set"]
    metric = outcome.metric
    gate_config = GateConfig(
        margin=config.gate_margin, floors=dict(config.gate_floors), ceilings=dict(config.gate_ceilings)
    )

    def evaluate(v: str) -> float:
        uri = f"models:/{name}/{v}"
        bundle = load_bundle(uri)
        run_id = client.get_model_version(name, v).run_id
        scored = score_segments(test, SPEC, bundle, Scorer(name, v, run_id), global_pipeline, global_model)
        return bundle_metric(scored, test, SPEC, metric)

    decision = gate(client, name, version.version, metric, evaluate, gate_config)
    context.log.info(f"gate: {'promoted' if decision.promoted else 'rejected'} v{version.version}: {decision.reason}")
    aliases = client.get_registered_model(name).aliases
    model_url = mlflow.model_url(name, version.version)
    run_url = mlflow.run_url(experiment_id, outcome.run_id)
    counts = {s: sum(r["status"] == s for r in outcome.results) for s in (TRAINED, TOO_SMALL, FAILED)}
    return Output(
        {"name": name, "version": version.version, "promoted": decision.promoted},
        metadata={
            c.MODEL_NAME: name,
            c.MODEL_VERSION: int(version.version),
            "model_url": MetadataValue.url(model_url) if model_url else "",
            "mlflow_run_id": outcome.run_id,
            "mlflow_run_url": MetadataValue.url(run_url) if run_url else "",
            "segment_column": SPEC.segment_column,
            "segments": len(outcome.results),
            "segments_own_model": sum(r["choice"] == OWN for r in outcome.results),
            **{f"segments_{k}": v for k, v in counts.items()},
            "segment_table": MetadataValue.md(
                segment_table(outcome.results, metric, lambda run_id: mlflow.run_url(experiment_id, run_id))
            ),
            "global_model_version": int(global_model.version),
            c.GATE_DECISION: "promoted" if decision.promoted else "rejected",
            c.GATE_REASON: decision.reason,
            "gate_metric": metric,
            c.CHALLENGER_METRIC: decision.challenger_value,
            "champion_metric": decision.champion_value if decision.champion_value is not None else "",
            "champion_version": str(aliases.get(CHAMPION, "")),
            "challenger_version": str(aliases.get(CHALLENGER, "")),
            **{c.delta_version_key(t): v for t, v in versions.items()},
            "code_version": tags["code.version"],
            "dataset_spec_fingerprint": tags["dataset.spec_fingerprint"],
        },
    )


@asset(
    deps=[validated_features, segment_models],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="segments",
    kinds={"spark", "delta", "mlflow"},
    **ownership("serving"),
    description=(
        "Each day's features scored by the *_by_segment bundle's @champion: a segment's own model where it has one "
        "(grouped map), else the global @champion; every row names the bundle and the model that scored it."
    ),
)
def segment_predictions(
    context: AssetExecutionContext, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    window = window_of(context)
    client = mlflow.client
    name = bundle_name(lakehouse)
    bundle_model = resolved(name, champion_version(client, name))  # resolved once per run, then pinned
    global_model = resolved(lakehouse.model_name, champion_version(client, lakehouse.model_name))
    bundle = load_bundle(f"models:/{name}/{bundle_model.version}")
    global_pipeline = mlflow_lib.spark.load_model(f"models:/{global_model.name}/{global_model.version}")
    features = lakehouse.read("validated_features")
    predictions = score_segments(
        features.frame.where(window.predicate()), SPEC, bundle, bundle_model, global_pipeline, global_model
    )
    bundle_uri = f"models:/{name}/{bundle_model.version}"
    commit = lakehouse.write_window(
        predictions,
        "segment_predictions",
        window,
        run_id=context.run.run_id,
        model_uri=bundle_uri,
        global_model_uri=f"models:/{global_model.name}/{global_model.version}",
        **features.lineage,
    )
    written = lakehouse.read_at("segment_predictions", commit.version).frame.where(window.predicate())
    by_scorer = {r["scored_by"]: r["count"] for r in written.groupBy("scored_by").count().collect()}  # <= 2 rows
    context.log.info(f"segment_predictions {window.label}: {commit.rows_written} rows, by {by_scorer}")
    return MaterializeResult(
        metadata=lakehouse.metadata(
            commit,
            "segment_predictions",
            predictions.schema,
            window,
            model_name=name,
            model_version=int(bundle_model.version),
            model_uri=bundle_uri,
            global_model_name=global_model.name,
            global_model_version=int(global_model.version),
            segments_with_own_model=len(bundle.own_segments),
            rows_by_segment_model=by_scorer.get(OWN, 0),
            rows_by_global_model=by_scorer.get(GLOBAL, 0),
            **features.lineage,
        )
    )


NULL_SEGMENT = "<null>"  # the metadata's name of the rows whose segment is NULL (scored by the global model)


@asset(
    deps=[segment_predictions, validated_features],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="segments",
    kinds={"spark", "delta"},
    **ownership("monitoring"),
    description=(
        "The task's metrics of segment_predictions per day, segment and the model that scored it (the segment's own "
        "or the global one), once the labels have arrived."
    ),
)
def segment_performance(context: AssetExecutionContext, lakehouse: LakehouseResource) -> MaterializeResult:
    """As model_performance, per segment: a day without any label yet is recorded in `days_without_labels`, nothing is
    written for it, and the run succeeds. A day with labels gets one row per segment scored that day (a segment whose
    rows have no label yet has its counts and NULL metrics), so the day's `scored_rows` add up to its predictions."""
    window = window_of(context)
    predictions, features = lakehouse.read("segment_predictions"), lakehouse.read("validated_features")
    result = performance_by_segment(
        predictions.frame.where(window.predicate()), features.frame.where(window.predicate()), SPEC
    )
    groups = result.collect()  # one row per day, segment and scoring model: days x segments, whatever the rows
    labelled_days = sorted({g.event_date for g in groups if g.labelled_rows > 0})
    written = [g for g in groups if g.event_date in labelled_days]
    summary = {
        c.METRIC_NAME: SPEC.metric,
        "segments": len({g.segment for g in written}),
        "rows_with_labels": sum(g.labelled_rows for g in groups),
        "rows_without_labels": sum(g.scored_rows - g.labelled_rows for g in groups),
        "labelled_rows_by_scorer": MetadataValue.json(
            {s: sum(g.labelled_rows for g in groups if g.scored_by == s) for s in (OWN, GLOBAL)}
        ),
        "days_with_labels": MetadataValue.json([d.isoformat() for d in labelled_days]),
        "days_without_labels": MetadataValue.json([d.isoformat() for d in window.days if d not in labelled_days]),
        "segment_table": MetadataValue.md(segment_performance_table(written)),
        **single_day_by_segment(written, window),
        **predictions.lineage,
        **features.lineage,
    }
    if not written:
        context.log.info(f"segment_performance {window.label}: no labels yet, nothing written")
        return MaterializeResult(metadata=lakehouse.unwritten_metadata("segment_performance", window, **summary))
    rows = lakehouse.session.createDataFrame(written, result.schema).withColumn("computed_at", F.current_timestamp())
    commit = lakehouse.replace_rows(
        rows,
        "segment_performance",
        days_predicate(labelled_days),
        run_id=context.run.run_id,
        **predictions.lineage,
        **features.lineage,
    )
    context.log.info(f"segment_performance {window.label}: {len(written)} day/segment rows, Delta v{commit.version}")
    return MaterializeResult(
        metadata=lakehouse.metadata(
            commit, "segment_performance", rows.schema, window, rows_written=len(written), **summary
        )
    )


def segment_name(segment: str | None) -> str:
    return NULL_SEGMENT if segment is None else segment


def single_day_by_segment(groups: list, window) -> dict:
    """`primary_metric_by_segment` for a one-day run (the schedule's case): {segment: {primary_metric, scored_by,
    scored_by_version, labelled_rows, scored_rows}}; a range run has the same per day in the table."""
    if not window.single_day or not groups:
        return {}
    return {
        "primary_metric_by_segment": MetadataValue.json(
            {
                segment_name(g.segment): {
                    "primary_metric": g.primary_metric,
                    "scored_by": g.scored_by,
                    "scored_by_version": g.scored_by_version,
                    "labelled_rows": g.labelled_rows,
                    "scored_rows": g.scored_rows,
                }
                for g in sorted(groups, key=lambda g: segment_name(g.segment))
            }
        )
    }


def segment_performance_table(groups: list) -> str:
    """The run's rows per segment and scoring model, as Markdown: days, labelled and scored rows, and the primary
    metric (one day: its value; several: the lowest and the highest of the days)."""
    lines = [
        f"| segment | scored by | model | days | labelled rows | scored rows | {SPEC.metric} |",
        "|---|---|---|---|---|---|---|",
    ]
    merged: dict[tuple, list] = {}
    for g in groups:
        key = (segment_name(g.segment), g.scored_by, f"{g.scored_by_model} v{g.scored_by_version}")
        merged.setdefault(key, []).append(g)
    for (segment, scored_by, model), found in sorted(merged.items()):
        values = sorted(g.primary_metric for g in found if g.primary_metric is not None)
        if not values:
            metric = ""
        elif len(found) == 1:
            metric = f"{values[0]:.4f}"
        else:
            metric = f"{values[0]:.4f} .. {values[-1]:.4f}"
        lines.append(
            f"| {segment} | {scored_by} | {model} | {len(found)} | {sum(g.labelled_rows for g in found):,} "
            f"| {sum(g.scored_rows for g in found):,} | {metric} |"
        )
    return "\n".join(lines)
