"""feature_drift: each day's trailing window of features against the @champion's own training profile."""

from datetime import timedelta

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field
from pyspark.sql import functions as F

from assets.common import daily_partitions, delta_metadata, is_single_day, partition_label, partition_window
from assets.features import validated_features
from assets.training import registered_model
from ml.dataset import EVENT_DATE
from ml.delta_io import read_pinned, window_predicate, write_partitions
from ml.drift import DriftPolicy, daily_counts, day_summaries, load_reference, psi_bars, window_drift
from ml.registry import champion_version
from orchestration.resources import LakehouseResource, MLflowResource, SparkResource

DRIFT_SCHEMA = (f"{EVENT_DATE} DATE, feature STRING, kind STRING, rows LONG, window_days INT, psi DOUBLE, ks DOUBLE, "
                "js DOUBLE, null_share DOUBLE, unseen_share DOUBLE, drifted BOOLEAN")


class DriftConfig(Config):
    psi_threshold: float = Field(default=DriftPolicy.psi_threshold, description="a feature drifted above this PSI")
    share_threshold: float = Field(default=DriftPolicy.share_threshold, description="a day drifted when this share of features did")
    window_days: int = Field(default=DriftPolicy.window_days, ge=1, description="trailing days judged together")

    def policy(self) -> DriftPolicy:
        return DriftPolicy(self.psi_threshold, self.share_threshold, self.window_days)


@asset(
    deps=[validated_features, registered_model],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"spark", "delta"},
    description="PSI, KS (numeric) and JS (categorical) of every feature against the champion's training data.",
)
def feature_drift(context: AssetExecutionContext, config: DriftConfig, spark: SparkResource, mlflow: MLflowResource,
                  lakehouse: LakehouseResource) -> MaterializeResult:
    policy = config.policy()
    start, end = partition_window(context)
    name = lakehouse.model_name
    champion = champion_version(mlflow.client, name)
    reference = load_reference(champion.run_id, f"{name} v{champion.version}")
    features, features_version = read_pinned(spark.spark_session, lakehouse.table_path("validated_features"))
    counts = daily_counts(features.where(window_predicate(start - timedelta(days=policy.window_days - 1), end)), reference)
    days = [d for d in sorted(counts) if start <= d < end]
    if not days:
        raise ValueError(f"validated_features v{features_version} has no rows for {partition_label(start, end)}: "
                         "materialize validated_features for those days first")
    rows = window_drift(counts, days, reference, policy)
    frame = (spark.spark_session.createDataFrame(rows, DRIFT_SCHEMA)
             .withColumn("model_name", F.lit(name)).withColumn("model_version", F.lit(str(champion.version)))
             .withColumn("reference_run_id", F.lit(champion.run_id)).withColumn("computed_at", F.current_timestamp()))
    commit = write_partitions(frame, lakehouse.table_path("drift_metrics"), start, end)
    summaries = day_summaries(rows, policy)
    last = summaries[days[-1]]
    context.log.info(f"feature_drift {partition_label(start, end)}: " + drift_line(summaries))
    return MaterializeResult(metadata=delta_metadata(
        commit, lakehouse.table_name("drift_metrics"), frame.schema, whole_output=is_single_day(start, end),
        partition=partition_label(start, end),
        drifted=last["drifted"],  # the last day of the run; drift_by_day has every day
        share_drifted=last["share_drifted"],
        max_psi=last["max_psi"],
        worst_features=MetadataValue.md(psi_bars(last["worst"], policy.psi_threshold)),
        drifted_features=", ".join(last["drifted_features"]) or "none",
        drift_by_day=MetadataValue.json({d.isoformat(): {k: s[k] for k in ("drifted", "share_drifted", "max_psi")}
                                         for d, s in summaries.items()}),
        days_without_features=[d.isoformat() for d in (start + timedelta(days=i) for i in range((end - start).days))
                               if d not in counts],
        model_name=name, model_version=int(champion.version), reference_run_id=champion.run_id,
        validated_features_delta_version=features_version,
        psi_threshold=policy.psi_threshold, share_threshold=policy.share_threshold, window_days=policy.window_days,
    ))


def drift_line(summaries: dict) -> str:
    """The run's drift in one log line: every day of a short run; a count and the last day of a long one."""
    def day(d, s):
        return f"{d}: {s['share_drifted']:.0%} of features{' DRIFTED' if s['drifted'] else ''}"
    if len(summaries) <= 7:
        return ", ".join(day(d, s) for d, s in summaries.items())
    drifted = sum(s["drifted"] for s in summaries.values())
    last = max(summaries)
    return (f"{drifted} of {len(summaries)} days drifted; last day {day(last, summaries[last])} "
            "(every day: drift_by_day in the metadata, and the drift_metrics table)")
