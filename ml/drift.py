"""Feature drift against the champion's own training data: a reference profile, then PSI / KS / JS per day.

The reference profile is stored with the model (an MLflow artifact of its training run): decile bin edges for
numeric features and the most frequent values of categoricals, each with the share of training rows per bucket,
plus buckets for NULL and, for categoricals, for values never (or rarely) seen in training.

Scoring days against it is one Spark job: each row gives one int code per feature (its bucket), and the codes
are counted per day, so any number of days costs one job over the rows and returns only a small table of counts.
Features are bucketed a few per pass (CODE_BUDGET), so that Spark's generated code stays JIT-compilable.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, DatasetSpec

NULL, OTHER = "__null__", "__other__"
EPSILON = 1e-4  # share floor, so an empty bucket does not make PSI infinite
PROFILE_ARTIFACT = "reference_profile.json"


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    kind: str  # numeric | categorical
    buckets: list[str]  # ordered; numeric buckets are bin indices, categoricals their values
    shares: dict[str, float]  # bucket -> share of the reference rows (NULL and OTHER included)
    edges: list[float] = field(default_factory=list)  # numeric: interior cut points between bins


@dataclass(frozen=True)
class ReferenceProfile:
    rows: int
    features: dict[str, FeatureProfile]

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "features": {k: asdict(v) for k, v in self.features.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        data = json.loads(text)
        return cls(data["rows"], {k: FeatureProfile(**v) for k, v in data["features"].items()})


@dataclass(frozen=True)
class DriftPolicy:
    """Defaults chosen on the flights data (bench/RESULTS.md): against a March-April reference, no day of
    March or April is flagged and every day of July and August is."""

    psi_threshold: float = 0.2  # a feature drifted when its PSI exceeds this (0.1 moderate, 0.2 significant)
    share_threshold: float = 0.4  # a day drifted when at least this share of the features drifted
    window_days: int = 14  # each day is judged on the trailing window ending on it


def _bucket_code(profile: FeatureProfile, index: int) -> Column:
    """An int naming (feature, bucket): feature index * 1000 + the bucket's position (NULL 999, OTHER 998).

    Every Column here is evaluated for every row: a categorical value is looked up once in a literal map
    (an `array_position` referenced twice was evaluated twice, and was a third of the pass's CPU)."""
    c, base = F.col(profile.name), index * 1000
    if profile.kind == "numeric":
        code = F.when(c.isNull(), F.lit(base + 999))
        for i, edge in enumerate(profile.edges):
            code = code.when(c < edge, F.lit(base + i))
        return code.otherwise(F.lit(base + len(profile.edges)))
    if not profile.buckets:  # the training rows had no value at all: every value is unseen
        return F.when(c.isNull(), F.lit(base + 999)).otherwise(F.lit(base + 998))
    known = F.create_map(*[F.lit(x) for i, value in enumerate(profile.buckets) for x in (value, base + i)])
    return F.when(c.isNull(), F.lit(base + 999)).otherwise(F.coalesce(known[c], F.lit(base + 998)))


# Whole-stage codegen puts one pass's per-row work (read the columns, one bucket code per feature, explode,
# hash-count) in ONE Java method, and HotSpot never JIT-compiles a method over 8,000 bytes of bytecode: such
# a pass runs interpreted, 3-5x slower (bench/RESULTS.md, "Drift: wider datasets"). So the features are
# split into passes whose code stays under CODE_BUDGET bytes. Sizes measured with Spark's codegen debug
# (bench/drift_wide.py prints each spec's largest method): a DOUBLE feature with deciles costs 562 bytes,
# ~60 + 56 per bin edge; a categorical ~240 (one literal-map lookup); integer columns cost less. On 64
# features, 4 and 8 decile features per pass ran within noise of each other, 12 per pass 5-20% slower, so
# 4,600 (8 per pass, a 4,559-byte method) keeps room under the 8,000 for longer CASE chains or more `by`.
CODE_BUDGET = 4_600


def _code_bytes(profile: FeatureProfile) -> int:
    """Estimated bytecode of the feature's bucket code in the generated per-row method (an upper bound)."""
    return 60 + 56 * len(profile.edges) if profile.kind == "numeric" else 240


def _passes(profiles: list[FeatureProfile]) -> list[list[int]]:
    """Indexes of `profiles`, in consecutive groups whose code fits CODE_BUDGET (read at call time, so a
    bench can compare budgets). A single feature over the budget still gets a pass of its own."""
    passes, size = [[]], 0
    for i, profile in enumerate(profiles):
        cost = _code_bytes(profile)
        if passes[-1] and size + cost > CODE_BUDGET:
            passes, size = passes + [[]], 0
        passes[-1].append(i)
        size += cost
    return passes


def _code_counts(df: DataFrame, profiles: list[FeatureProfile], by: list[str]) -> DataFrame:
    """(*by, code, count): every row gives one code per feature, and the codes are counted (a plain
    sum(when(...)) per bucket is hundreds of aggregate expressions, too big for codegen).

    One explode + count per group of `_passes`, unioned into one job: each pass re-reads only `by` and its
    own features. Codes name their feature, so no two passes share a (group, code)."""
    return reduce(
        DataFrame.unionAll,
        [
            df.select(*by, F.explode(F.array(*[_bucket_code(profiles[i], i) for i in indexes])).alias("code"))
            .groupBy(*by, "code")
            .count()
            for indexes in _passes(profiles)
        ],
    )


def _bucket_counts(df: DataFrame, profiles: list[FeatureProfile], by: list[str]) -> list[dict[str, Any]]:
    """Rows per (group, feature, bucket), as one dict per group of `feature\u241fbucket` counts."""
    groups: dict[tuple, dict[str, Any]] = {}
    for *key, code, count in _code_counts(df, profiles, by).collect():  # groups x buckets rows, not data rows
        profile, position = profiles[code // 1000], code % 1000
        bucket = NULL if position == 999 else OTHER if position == 998 else profile.buckets[position]
        groups.setdefault(tuple(key), dict(zip(by, key, strict=True)))[f"{profile.name}\u241f{bucket}"] = count
    first = profiles[0].name
    for row in groups.values():  # every row lands in exactly one bucket of each feature
        row["__rows"] = sum(v for k, v in row.items() if k.startswith(f"{first}\u241f"))
    return list(groups.values())


def _shares(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """feature -> bucket -> share of the row's rows, in one pass over its `feature\u241fbucket` counts."""
    total, shares = row["__rows"] or 1, {}
    for key, value in row.items():
        feature, separator, bucket = key.partition("\u241f")
        if separator:
            shares.setdefault(feature, {})[bucket] = (value or 0) / total
    return shares


def build_profile(df: DataFrame, spec: DatasetSpec, bins: int = 10, top_values: int = 30) -> ReferenceProfile:
    """The training data's profile: two passes for the bucket definitions (quantiles, top values), one to count."""
    nums, cats = list(spec.numeric_features), list(spec.categorical_features)
    profiles: list[FeatureProfile] = []
    if nums:
        cuts = df.approxQuantile(nums, [i / bins for i in range(1, bins)], 0.001)
        for name, edges in zip(nums, cuts, strict=True):
            edges = sorted(set(edges))  # discrete features (day of week) repeat edges
            profiles.append(FeatureProfile(name, "numeric", [str(i) for i in range(len(edges) + 1)], {}, edges))
    if cats:
        pairs = df.select(
            F.explode(F.array(*[F.struct(F.lit(c).alias("f"), F.col(c).alias("v")) for c in cats])).alias("p")
        )
        counts = pairs.where(F.col("p.v").isNotNull()).groupBy("p.f", "p.v").count().collect()  # distinct values only
        for name in cats:
            ranked = sorted(((r["count"], r["v"]) for r in counts if r["f"] == name), reverse=True)[:top_values]
            profiles.append(FeatureProfile(name, "categorical", sorted(v for _, v in ranked), {}))
    row = _bucket_counts(df, profiles, [])[0]
    shares = _shares(row)
    return ReferenceProfile(
        row["__rows"],
        {
            p.name: FeatureProfile(p.name, p.kind, p.buckets, {**_all_buckets(p), **shares.get(p.name, {})}, p.edges)
            for p in profiles
        },
    )


def _all_buckets(profile: FeatureProfile) -> dict[str, float]:
    """Every bucket at share 0, so the profile names the empty ones too."""
    return dict.fromkeys([NULL, *profile.buckets, *([OTHER] if profile.kind == "categorical" else [])], 0.0)


def psi(actual: dict[str, float], expected: dict[str, float]) -> float:
    keys = set(actual) | set(expected)
    return sum(
        (max(actual.get(k, 0), EPSILON) - max(expected.get(k, 0), EPSILON))
        * math.log(max(actual.get(k, 0), EPSILON) / max(expected.get(k, 0), EPSILON))
        for k in keys
    )


def ks(actual: dict[str, float], expected: dict[str, float], order: list[str]) -> float:
    """Kolmogorov-Smirnov distance between the two binned CDFs of the non-null values (bin resolution)."""
    a_total = sum(actual.get(k, 0) for k in order) or 1
    e_total = sum(expected.get(k, 0) for k in order) or 1
    a = e = worst = 0.0
    for k in order:
        a, e = a + actual.get(k, 0) / a_total, e + expected.get(k, 0) / e_total
        worst = max(worst, abs(a - e))
    return worst


def js(actual: dict[str, float], expected: dict[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between the two bucket distributions."""
    keys = set(actual) | set(expected)
    mid = {k: (actual.get(k, 0) + expected.get(k, 0)) / 2 for k in keys}

    def kl(p):
        return sum(p.get(k, 0) * math.log2(p.get(k, 0) / mid[k]) for k in keys if p.get(k, 0) > 0)

    return (kl(actual) + kl(expected)) / 2


def daily_counts(df: DataFrame, reference: ReferenceProfile) -> dict[Any, dict[str, Any]]:
    """Rows per (day, feature, bucket), in one Spark job over `df` (passes: CODE_BUDGET). Counts add up, so
    windows are summed later."""
    return {row.pop(EVENT_DATE): row for row in _bucket_counts(df, list(reference.features.values()), [EVENT_DATE])}


def window_drift(
    counts: dict[Any, dict[str, Any]], days: list, reference: ReferenceProfile, policy: DriftPolicy = DriftPolicy()
) -> list[dict[str, Any]]:
    """One row per (day, feature): the trailing `policy.window_days` up to the day against the reference. A
    single day is never like a training window (one day of the week, one day's weather); two weeks can be."""
    out = []
    for day, window_days, total in _window_totals(counts, days, policy.window_days):
        shares = _shares(total)
        for name, profile in reference.features.items():
            actual = shares.get(name, {})
            value = psi(actual, profile.shares)
            out.append(
                {
                    EVENT_DATE: day,
                    "feature": name,
                    "kind": profile.kind,
                    "rows": int(total["__rows"]),
                    "window_days": window_days,
                    "psi": value,
                    "ks": ks(actual, profile.shares, profile.buckets) if profile.kind == "numeric" else None,
                    "js": js(actual, profile.shares) if profile.kind == "categorical" else None,
                    "null_share": actual.get(NULL, 0.0),
                    "unseen_share": actual.get(OTHER) if profile.kind == "categorical" else None,
                    "drifted": value > policy.psi_threshold,
                }
            )
    return sorted(out, key=lambda r: (r[EVENT_DATE], -r["psi"]))


def _window_totals(counts: dict[Any, dict[str, Any]], days: list, window_days: int):
    """(day, days with counts in its window, summed counts) for each of `days` whose trailing window has any
    counts. A running total: each day's counts are added once and subtracted once, instead of being re-added
    for each of the `window_days` days whose window holds them. Buckets that sum to 0 are dropped, as a day
    lists only its non-empty buckets."""
    present, entered, inside, total = sorted(counts), 0, deque(), {}

    def add(row: dict[str, Any], sign: int) -> None:
        for key, value in row.items():
            value = total.get(key, 0) + sign * (value or 0)
            if value:
                total[key] = value
            else:
                total.pop(key, None)

    for day in sorted(days):
        while entered < len(present) and present[entered] <= day:
            add(counts[present[entered]], 1)
            inside.append(present[entered])
            entered += 1
        while inside and (day - inside[0]).days >= window_days:
            add(counts[inside.popleft()], -1)
        if inside:
            yield day, len(inside), dict(total)


def day_summaries(rows: list[dict[str, Any]], policy: DriftPolicy = DriftPolicy()) -> dict[Any, dict[str, Any]]:
    """Per day: the share of features drifted, the worst features, and whether the day counts as drifted."""
    days: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        days.setdefault(r[EVENT_DATE], []).append(r)
    summaries = {}
    for day, features in sorted(days.items()):
        drifted = [f for f in features if f["drifted"]]
        share = len(drifted) / len(features)
        summaries[day] = {
            "share_drifted": share,
            "drifted": share >= policy.share_threshold,
            "max_psi": max(f["psi"] for f in features),
            "worst": [(f["feature"], round(f["psi"], 4)) for f in sorted(features, key=lambda f: -f["psi"])[:5]],
            "drifted_features": sorted(f["feature"] for f in drifted),
        }
    return summaries


class ReferenceProfileMissing(LookupError):
    pass


def load_reference(run_id: str, model: str) -> ReferenceProfile:
    """The reference profile logged by the model's training run (`model` names it in the error)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return ReferenceProfile.from_json(mlflow.artifacts.load_text(f"runs:/{run_id}/{PROFILE_ARTIFACT}"))
    except (MlflowException, OSError) as exc:
        raise ReferenceProfileMissing(
            f"{model} has no {PROFILE_ARTIFACT} in its training run {run_id}: retrain it (profiles are logged "
            f"by tuned_pipeline) before measuring drift against it"
        ) from exc


def psi_bars(worst: list[tuple[str, float]], threshold: float, width: int = 30) -> str:
    """A Markdown bar chart of the worst features' PSI: quicker to look at than a table to read."""
    top = max([v for _, v in worst] + [threshold]) or 1.0
    lines = ["```", f"{'feature':<26} PSI (| = threshold {threshold})"]
    for name, value in worst:
        bar = "█" * round(width * value / top)
        mark = round(width * threshold / top)
        bar = bar[:mark] + "|" + bar[mark:] if len(bar) >= mark else bar + " " * (mark - len(bar)) + "|"
        lines.append(f"{name:<26} {bar} {value:.3f}")
    return "\n".join(lines + ["```"])
