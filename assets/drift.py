"""feature_drift: each day's trailing window of features against the @champion's own training profile."""

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field
from pyspark.sql import functions as F

from assets import contracts as c
from assets.common import daily_partitions, ownership, window_of
from assets.features import validated_features
from assets.training import registered_model
from ml.dataset import EVENT_DATE
from ml.drift import DriftPolicy, daily_counts, day_summaries, load_reference, psi_bars, window_drift
from ml.registry import champion_version
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource

DRIFT_SCHEMA = (
    f"{EVENT_DATE} DATE, feature STRING, kind STRING, rows LONG, window_days INT, psi DOUBLE, ks DOUBLE, "
    "js DOUBLE, null_share DOUBLE, unseen_share DOUBLE, drifted BOOLEAN"
)


class DriftConfig(Config):
    psi_threshold: float = Field(default=DriftPolicy.psi_threshold, description="a feature drifted above this PSI")
    share_threshold: float = Field(
        default=DriftPolicy.share_threshold, description="a day drifted when this share of features did"
    )
    window_days: int = Field(default=DriftPolicy.window_days, ge=1, description="trailing days judged together")

    def policy(self) -> DriftPolicy:
        return DriftPolicy(self.psi_threshold, self.share_threshold, self.window_days)


@asset(
    deps=[validated_features, registered_model],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"spark", "delta"},
    **ownership("monitoring"),
    description="PSI, KS (numeric) and JS (categorical) of every feature against the champion's training data.",
)
def feature_drift(
    context: AssetExecutionContext, config: DriftConfig, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    policy = config.policy()
    window = window_of(context)
    name = lakehouse.model_name
    champion = champion_version(mlflow.client, name)
    reference = load_reference(champion.run_id, f"{name} v{champion.version}")
    features = lakehouse.read("validated_features")
    trailing = window.widened(policy.window_days - 1)
    counts = daily_counts(features.frame.where(trailing.predicate()), reference)
    days = [d for d in sorted(counts) if window.start <= d < window.end]
    if not days:
        raise ValueError(
            f"validated_features v{features.version} has no rows for {window.label}: "
            "materialize validated_features for those days first"
        )
    rows = window_drift(counts, days, reference, policy)
    frame = (
        lakehouse.session.createDataFrame(rows, DRIFT_SCHEMA)
        .withColumn("model_name", F.lit(name))
        .withColumn("model_version", F.lit(str(champion.version)))
        .withColumn("reference_run_id", F.lit(champion.run_id))
        .withColumn("computed_at", F.current_timestamp())
    )
    commit = lakehouse.write_window(frame, c.DRIFT_METRICS, window, run_id=context.run.run_id)
    summaries = day_summaries(rows, policy)
    last = summaries[days[-1]]
    context.log.info(f"feature_drift {window.label}: " + drift_line(summaries))
    return MaterializeResult(
        metadata=lakehouse.metadata(
            commit,
            c.DRIFT_METRICS,
            frame.schema,
            window,
            drifted=last["drifted"],  # the last day of the run; drift_by_day has every day
            share_drifted=last["share_drifted"],
            max_psi=last["max_psi"],
            worst_features=MetadataValue.md(psi_bars(last["worst"], policy.psi_threshold)),
            drifted_features=", ".join(last["drifted_features"]) or "none",
            **{
                c.DRIFT_BY_DAY: MetadataValue.json(
                    {
                        d.isoformat(): {k: s[k] for k in ("drifted", "share_drifted", "max_psi")}
                        for d, s in summaries.items()
                    }
                )
            },
            days_without_features=[d.isoformat() for d in window.days if d not in counts],
            model_name=name,
            model_version=int(champion.version),
            reference_run_id=champion.run_id,
            psi_threshold=policy.psi_threshold,
            share_threshold=policy.share_threshold,
            window_days=policy.window_days,
            **features.lineage,
        )
    )


def drift_line(summaries: dict) -> str:
    """The run's drift in one log line: every day of a short run; a count and the last day of a long one."""

    def day(d, s):
        return f"{d}: {s['share_drifted']:.0%} of features{' DRIFTED' if s['drifted'] else ''}"

    if len(summaries) <= 7:
        return ", ".join(day(d, s) for d, s in summaries.items())
    drifted = sum(s["drifted"] for s in summaries.values())
    last = max(summaries)
    return (
        f"{drifted} of {len(summaries)} days drifted; last day {day(last, summaries[last])} "
        "(every day: drift_by_day in the metadata, and the drift_metrics table)"
    )
