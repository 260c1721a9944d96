"""Diagnostic artifacts of a fitted model and of its study: curves, confusion matrix, residuals, importances.

Everything is aggregated in Spark first (probability bins, label x prediction counts, a bounded sample for
residual plots), so only a few hundred numbers reach the driver, whatever the size of the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from pyspark.ml import PipelineModel  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from ml.dataset import LABEL  # noqa: E402

log = logging.getLogger(__name__)
BINS = 200  # probability resolution of the ROC and PR curves
RESIDUAL_SAMPLE = 5000  # rows plotted for regression diagnostics


def curve_points(scored: DataFrame) -> list[dict[str, float]]:
    """ROC and PR points from per-bin positive/negative counts (thresholds at 1/BINS steps)."""
    p = vector_to_array(F.col("probability"))[1]
    bins = (
        scored.where(F.col(LABEL).isNotNull())
        .groupBy(F.least(F.floor(p * BINS), F.lit(BINS - 1)).alias("bin"))
        .agg(F.sum(F.col(LABEL)).alias("pos"), F.count(F.lit(1)).alias("n"))
        .collect()
    )
    counts = {int(r["bin"]): (float(r["pos"]), float(r["n"] - r["pos"])) for r in bins}
    total_pos = sum(c[0] for c in counts.values())
    total_neg = sum(c[1] for c in counts.values())
    tp = fp = 0.0
    points = [{"threshold": 1.0, "tpr": 0.0, "fpr": 0.0, "precision": 1.0, "recall": 0.0}]
    for b in range(BINS - 1, -1, -1):  # lower the threshold bin by bin
        pos, neg = counts.get(b, (0.0, 0.0))
        tp, fp = tp + pos, fp + neg
        points.append(
            {
                "threshold": b / BINS,
                "tpr": tp / total_pos if total_pos else 0.0,
                "fpr": fp / total_neg if total_neg else 0.0,
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "recall": tp / total_pos if total_pos else 0.0,
            }
        )
    return points


def confusion(scored: DataFrame) -> dict[str, int]:
    rows = scored.where(F.col(LABEL).isNotNull()).groupBy(LABEL, "prediction").count().collect()
    return {f"label={int(r[LABEL])},prediction={int(r['prediction'])}": int(r["count"]) for r in rows}


def feature_names(scored: DataFrame, features_col: str = "features") -> list[str]:
    """Names of the assembled vector's slots, from the ML attribute metadata Spark keeps on the column."""
    attrs = scored.schema[features_col].metadata.get("ml_attr", {}).get("attrs", {})
    named = sorted((a["idx"], a.get("name", f"f{a['idx']}")) for group in attrs.values() for a in group)
    return [name for _, name in named]


def importances(model: PipelineModel, names: list[str]) -> dict[str, float]:
    """Tree importances, or absolute coefficients of a linear model, by feature slot name."""
    last = model.stages[-1]
    if hasattr(last, "featureImportances"):
        values = last.featureImportances.toArray()
    elif hasattr(last, "coefficients"):
        values = abs(last.coefficients.toArray())
    else:
        return {}
    names = names if len(names) == len(values) else [f"f{i}" for i in range(len(values))]
    return dict(sorted(zip(names, map(float, values), strict=True), key=lambda kv: -kv[1]))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _bar(values: dict[str, float], title: str, path: Path, top: int = 25) -> Path:
    items = list(values.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_title(title)
    return _save(fig, path)


def model_report(model: PipelineModel, scored: DataFrame, task: str, out: Path, sample_fraction: float) -> list[Path]:
    """Plots and JSON of one fitted model on one scored set (the validation set). Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if task == "classification":
        points = curve_points(scored)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([p["fpr"] for p in points], [p["tpr"] for p in points])
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
        files.append(_save(fig, out / "roc_curve.png"))
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([p["recall"] for p in points], [p["precision"] for p in points])
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (validation)")
        files.append(_save(fig, out / "pr_curve.png"))
        (out / "curves.json").write_text(json.dumps(points))
        matrix = confusion(scored)
        (out / "confusion_matrix.json").write_text(json.dumps(matrix, indent=1))
        grid = [[matrix.get(f"label={a},prediction={p}", 0) for p in (0, 1)] for a in (0, 1)]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(grid, cmap="Blues")
        for a in (0, 1):
            for p in (0, 1):
                ax.text(p, a, grid[a][p], ha="center", va="center")
        ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="actual", title="Confusion matrix (validation)")
        files += [out / "curves.json", out / "confusion_matrix.json", _save(fig, out / "confusion_matrix.png")]
    else:
        sample = (
            scored.where(F.col(LABEL).isNotNull())
            .sample(fraction=min(1.0, sample_fraction), seed=1)
            .select(F.col("prediction").cast("double").alias("p"), F.col(LABEL).cast("double").alias("y"))
            .limit(RESIDUAL_SAMPLE)
            .toPandas()
        )
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.scatter(sample["p"], sample["y"] - sample["p"], s=3, alpha=0.4)
        a1.axhline(0, color="grey")
        a1.set(xlabel="predicted", ylabel="residual", title=f"Residuals (validation, {len(sample)} sampled rows)")
        a2.hist(sample["y"] - sample["p"], bins=50)
        a2.set(xlabel="residual", title="Residual distribution")
        files.append(_save(fig, out / "residuals.png"))
    weights = importances(model, feature_names(scored))
    if weights:
        (out / "feature_importances.json").write_text(json.dumps(weights, indent=1))
        files += [
            out / "feature_importances.json",
            _bar(weights, "Feature importances", out / "feature_importances.png"),
        ]
    return files


def study_report(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's optimization history and parameter importances (when there are enough finished trials)."""
    import warnings

    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend of optuna.visualization is "experimental"
        ax = ovm.plot_optimization_history(study)
        files.append(_save(ax.figure, out / "optimization_history.png"))
        try:
            weights = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:  # e.g. fewer than two complete trials
            log.info("no parameter importances: %s", exc)
        else:
            (out / "param_importances.json").write_text(json.dumps(weights, indent=1))
            files += [
                out / "param_importances.json",
                _bar(weights, "Optuna parameter importances", out / "param_importances.png"),
            ]
    return files
