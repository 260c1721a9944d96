"""model_performance: how the served predictions did, per day and model version, once the labels are known.

Labels arrive after the predictions (a flight lands after it was scored), so a day without labels yet is
recorded as such, nothing is written for it, and the run succeeds; rerunning the partition later fills it.
The metadata keys are plain (`metric_name`, `primary_metric`, `metrics_by_day`, ...) because monitoring
(drift) reads them back from the Dagster instance.
"""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset
from pyspark.sql import functions as F

from assets import contracts as c
from assets.common import SPEC, daily_partitions, ownership, window_of
from assets.features import validated_features
from assets.predictions import batch_predictions
from ml.days import DayWindow
from ml.delta_io import days_predicate
from ml.metrics import TASK_METRICS
from ml.performance import performance, with_labels
from orchestration.lakehouse import LakehouseResource


@asset(
    deps=[batch_predictions, validated_features],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta"},
    **ownership("monitoring"),
    description="The task's metrics per day and model version, on the predictions whose labels have arrived.",
)
def model_performance(context: AssetExecutionContext, lakehouse: LakehouseResource) -> MaterializeResult:
    window = window_of(context)
    predictions, features = lakehouse.read("batch_predictions"), lakehouse.read("validated_features")
    result = performance(
        with_labels(predictions.frame.where(window.predicate()), features.frame.where(window.predicate()), SPEC), SPEC
    )
    groups = result.collect()  # one row per day and model version: small, whatever the number of predictions
    labelled = [g for g in groups if g.labelled_rows > 0]
    labelled_days = sorted({g.event_date for g in labelled})
    summary = {
        c.METRIC_NAME: SPEC.metric,
        **single_day_metric(labelled, window),
        c.PRIMARY_METRIC_BY_DAY: MetadataValue.json(by_day(labelled, lambda g: g.primary_metric)),
        "metrics_by_day": MetadataValue.json(
            by_day(
                labelled,
                lambda g: {
                    **{m: g[m] for m in TASK_METRICS[SPEC.task]},
                    "labelled_rows": g.labelled_rows,
                    "scored_rows": g.scored_rows,
                },
            )
        ),
        "rows_with_labels": sum(g.labelled_rows for g in groups),
        "rows_without_labels": sum(g.scored_rows - g.labelled_rows for g in groups),
        "days_with_labels": MetadataValue.json([d.isoformat() for d in labelled_days]),
        "days_without_labels": MetadataValue.json([d.isoformat() for d in window.days if d not in labelled_days]),
        **predictions.lineage,
        **features.lineage,
    }
    if not labelled:
        context.log.info(f"model_performance {window.label}: no labels yet, nothing written")
        return MaterializeResult(metadata=lakehouse.unwritten_metadata("model_performance", window, **summary))
    rows = lakehouse.session.createDataFrame(labelled, result.schema).withColumn("computed_at", F.current_timestamp())
    commit = lakehouse.replace_rows(rows, "model_performance", days_predicate(labelled_days), run_id=context.run.run_id)
    context.log.info(f"model_performance {window.label}: {len(labelled)} day/version rows, Delta v{commit.version}")
    return MaterializeResult(
        metadata=lakehouse.metadata(
            commit, "model_performance", rows.schema, window, rows_written=len(labelled), **summary
        )
    )


def single_day_metric(labelled: list, window: DayWindow) -> dict:
    """`primary_metric`, `model_version` and `primary_metric_by_version` for a one-day run (the schedule's case).

    Every write of batch_predictions replaces whole days with one model version, so a day has one version.
    A range run records the same metadata on each of its days, so there the values are per day only.
    """
    if not window.single_day or not labelled:
        return {}
    metadata = {"primary_metric_by_version": MetadataValue.json({g.model_version: g.primary_metric for g in labelled})}
    if len(labelled) == 1:
        metadata["model_version"] = labelled[0].model_version
        if labelled[0].primary_metric is not None:  # NULL: one class only, or no probability (spark_udf)
            metadata["primary_metric"] = float(labelled[0].primary_metric)
    return metadata


def by_day(groups: list, value) -> dict:
    out: dict[str, dict] = {}
    for g in groups:
        out.setdefault(g.event_date.isoformat(), {})[g.model_version] = value(g)
    return out
