"""A fitted Spark ML pipeline of ml/pipeline.py's stages as an ONNX graph, checked against Spark, stored with
its model version, and scored with onnxruntime: the real-time path (orchestration/serving.py) for @champion.

`onnxmltools.convert_sparkml` (1.16.0) converts our stages, but its graph is not to be trusted as it comes:

1. **Imputer -> Split.** The Imputer converter concatenates the numeric columns, imputes, and splits them
   again with `Split(split=[1, ...])`, the sizes as an *attribute* (Split-2). The one-hot encoder's `Reshape`
   asks for opset 13, where Split takes the sizes as an *input*: onnxruntime refuses to load the graph.
   `fix_split_sizes` moves the sizes to an int64 initializer input, and `fix_default_opset` leaves one entry
   for the default domain (the converter writes both `''` and `'ai.onnx'`), at the highest version asked.
2. **StandardScaler, std = 0.** The converter writes `scale = 1/std`: a constant column gives infinity, and
   `(x - mean) * inf` is NaN (0 * inf), so every LR probability is NaN. Spark scales such a column to 0
   (`StandardScalerModel`: scale 0 where std is 0). `fix_zero_std` writes 0 there, from the Spark model's std.
3. **Unseen and NULL categories.** Spark's StringIndexer with `handleInvalid=keep` maps an unseen label *and*
   NULL to the extra index `numLabels`, which the one-hot encoder (size numLabels + 1, dropLast) encodes as a
   1 in the last slot. The converter's `LabelEncoder` maps them to -1 (its default), which the ONNX one-hot
   encoder encodes as all zeros: a different feature vector, a different probability. `fix_unseen_categories`
   sets the encoder's default to `numLabels`. A NULL category is sent as `NULL_CATEGORY` (ONNX strings have
   no NULL); an export whose labels contain that string is refused. Other `handleInvalid` settings (error,
   skip: Spark fails or drops the row, where ONNX would score it) are refused.
4. **NULL numerics.** Spark's Imputer replaces NULL and NaN by the surrogate; the ONNX Imputer replaces NaN,
   so a NULL numeric is sent as NaN. Checked, like every fix above, on probe rows (`check_parity`).

ONNX computes in float32 where Spark computes in double: hence the parity tolerance (1e-4 on the probability).
Nothing here imports Dagster.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from mlflow.tracking import MlflowClient
from onnx import helper, numpy_helper
from pyspark.ml import PipelineModel
from pyspark.ml.classification import (
    GBTClassificationModel,
    LogisticRegressionModel,
    RandomForestClassificationModel,
)
from pyspark.ml.feature import (
    ImputerModel,
    OneHotEncoderModel,
    StandardScalerModel,
    StringIndexerModel,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import GBTRegressionModel, RandomForestRegressionModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml import spark_models
from ml.dataset import DatasetSpec

NULL_CATEGORY = "\u0000flightline:null"  # a NULL categorical, as ONNX sees it (a string tensor has no NULL)
UNSEEN_CATEGORY = "\u0000flightline:unseen"  # the probe rows' unseen category
ARTIFACT_DIR = "serving"  # on the version's run: serving/<model name>/v<version>/{model.onnx,manifest.json}
TAG = "serving.onnx"  # ok | refused
TAG_REASON = "serving.reason"
TAG_URI = "serving.onnx_uri"  # the artifact folder: runs:/<run>/serving/<name>/v<version>
TOLERANCE = 1e-4  # |delta probability| allowed for a row
MIN_SHARE = 0.999  # rows within the tolerance, at least
PARITY_ROWS = 5000  # rows of the test set compared, at most (collected to the driver: keep it bounded)
PROBE_BASE_ROWS = 20  # rows that the unseen/NULL probes are made from
SUPPORTED_ESTIMATORS = (LogisticRegressionModel, RandomForestClassificationModel, GBTClassificationModel)


class ExportRefusedError(ValueError):
    """The pipeline cannot be served through ONNX with Spark's semantics; the message says why."""


class RequestError(ValueError):
    """A request row that does not fit the model's signature: `field` names the column."""

    def __init__(self, message: str, field: str | None = None, row: int | None = None):
        super().__init__(message)
        self.field, self.row = field, row


# ---------------------------------------------------------------------------------------------------------------
# Conversion and graph fixes


def input_types(spec: DatasetSpec) -> list[tuple[str, Any]]:
    """The ONNX graph's inputs: one [N, 1] tensor per feature, float for numerics, string for categoricals."""
    from onnxmltools.convert.common.data_types import FloatTensorType, StringTensorType

    return [(c, FloatTensorType([None, 1])) for c in spec.numeric_features] + [
        (c, StringTensorType([None, 1])) for c in spec.categorical_features
    ]


def check_supported(pipeline: PipelineModel, spec: DatasetSpec) -> None:
    """ExportRefusedError unless every stage is one the export handles, with settings it can reproduce."""
    if spec.task != "classification":
        raise ExportRefusedError(f"task {spec.task}: only classification pipelines are exported to ONNX")
    known = (ImputerModel, VectorAssembler, StandardScalerModel, StringIndexerModel, OneHotEncoderModel)
    for stage in pipeline.stages:
        if not isinstance(stage, known + SUPPORTED_ESTIMATORS):
            raise ExportRefusedError(f"stage {type(stage).__name__} has no checked ONNX conversion")
        if isinstance(stage, StringIndexerModel):
            if stage.getHandleInvalid() != "keep":
                raise ExportRefusedError(
                    f"StringIndexer handleInvalid={stage.getHandleInvalid()!r}: Spark fails or drops a row with an "
                    "unseen or NULL category, where ONNX would score it; only 'keep' is exported"
                )
            for labels in stage.labelsArray:
                if NULL_CATEGORY in labels or UNSEEN_CATEGORY in labels:
                    raise ExportRefusedError("a category label collides with the NULL/unseen markers of the export")
        if isinstance(stage, OneHotEncoderModel) and (stage.getHandleInvalid() != "keep" or not stage.getDropLast()):
            raise ExportRefusedError(
                f"OneHotEncoder handleInvalid={stage.getHandleInvalid()!r}, dropLast={stage.getDropLast()}: "
                "only keep/dropLast is exported"
            )
        if isinstance(stage, ImputerModel) and not math.isnan(stage.getMissingValue()):
            raise ExportRefusedError(f"Imputer missingValue={stage.getMissingValue()}: only NaN is exported")


def raw_convert(pipeline: PipelineModel, spec: DatasetSpec, spark=None) -> onnx.ModelProto:
    """`convert_sparkml` as it comes (its linear converters print their attributes: silenced), each ensemble's trees
    read in one pass (`trees_read_once`)."""
    from onnxmltools import convert_sparkml

    with trees_read_once(pipeline, spark), contextlib.redirect_stdout(io.StringIO()):
        return convert_sparkml(pipeline, spec.model_name, input_types(spec), spark_session=spark)


ENSEMBLES = (RandomForestClassificationModel, RandomForestRegressionModel, GBTClassificationModel, GBTRegressionModel)
# The converter modules that read a tree's nodes through `save_read_sparkml_model_data` (GBT through the regressor's)
_TREE_READERS = (
    "decision_tree_classifier",
    "decision_tree_regressor",
    "random_forest_classifier",
    "random_forest_regressor",
)


class TreeNodes:
    """One tree's node table as the converter uses what `save_read_sparkml_model_data` returns: toPandas and count."""

    def __init__(self, nodes: pd.DataFrame):
        self._nodes = nodes

    def toPandas(self) -> pd.DataFrame:  # noqa: N802 (the DataFrame method the converter calls)
        return self._nodes.copy()

    def count(self) -> int:
        return len(self._nodes)


def _work_dir(spark) -> tuple[str, str | None]:
    """(where the ensembles are saved, the local folder to remove after): ONNX_DFS_PATH on a cluster, as the converter."""
    dfs = spark.conf.get("ONNX_DFS_PATH", None)
    if dfs:
        path = f"{dfs.rstrip('/')}/tmp/onnx/{uuid.uuid4().hex}"
        return path, path[len("file://") :] if path.startswith("file://") else None
    local = tempfile.mkdtemp(prefix="onnx-trees-")
    return local, local


def ensemble_nodes(stage, spark, path: str) -> dict[str, TreeNodes]:
    """tree uid -> its nodes, for every tree of one ensemble: one save, one read of its node table and metadata
    (the model's nodes, collected: a model, not data)."""
    stage.write().overwrite().save(path)
    meta = spark.read.parquet(f"{path}/treesMetadata")  # (treeID, metadata JSON, weight), as _1, _2, _3 in Spark 4
    tree_id, metadata = meta.columns[:2]
    uids = {int(t): json.loads(m)["uid"] for t, m in meta.select(tree_id, metadata).toPandas().itertuples(index=False)}
    nodes = spark.read.parquet(f"{path}/data").select("treeID", "nodeData.*").toPandas()
    return {
        uids[int(tree_id)]: TreeNodes(group.drop(columns="treeID").reset_index(drop=True))
        for tree_id, group in nodes.groupby("treeID")
    }


@contextlib.contextmanager
def trees_read_once(pipeline: PipelineModel, spark):
    """onnxmltools saves and reads back each tree of an ensemble on its own, a Spark write and read per tree
    (0.45 s a tree here: 18 s of a 40-tree forest's 31 s export), and leaves every folder behind. Here each ensemble is
    saved once and its node table read once; the converter gets each tree's nodes by the tree's uid, the same
    columns as its own read. Trees of other models (none in our pipelines) still go the converter's way."""
    from onnxmltools.convert.sparkml import operator_converters

    ensembles = [stage for stage in pipeline.stages if isinstance(stage, ENSEMBLES)]
    if not ensembles or spark is None:
        yield
        return
    path, local = _work_dir(spark)
    modules = [getattr(operator_converters, name) for name in _TREE_READERS]
    originals = [module.save_read_sparkml_model_data for module in modules]
    try:
        by_uid: dict[str, TreeNodes] = {}
        for i, stage in enumerate(ensembles):
            by_uid.update(ensemble_nodes(stage, spark, f"{path}/ensemble-{i}"))

        def read(spark_session, model):
            nodes = by_uid.get(model.uid)
            return nodes if nodes is not None else originals[0](spark_session, model)

        for module in modules:
            module.save_read_sparkml_model_data = read
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.save_read_sparkml_model_data = original
        if local:
            shutil.rmtree(local, ignore_errors=True)


def fix_default_opset(model: onnx.ModelProto) -> None:
    """One opset entry for the default domain ('' and 'ai.onnx' are the same), at the highest version asked;
    nodes of 'ai.onnx' moved to ''."""
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not default:
        return
    version = max(o.version for o in default)
    others = [(o.domain, o.version) for o in model.opset_import if o.domain not in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", version))
    for domain, v in others:
        model.opset_import.append(helper.make_opsetid(domain, v))
    for node in model.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""


def default_opset(model: onnx.ModelProto) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def fix_split_sizes(model: onnx.ModelProto) -> int:
    """From opset 13 on, Split's sizes are its second input, not the `split` attribute; the nodes fixed."""
    if default_opset(model) < 13:
        return 0
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
            continue
        sizes = [a for a in node.attribute if a.name == "split"]
        if not sizes:
            continue
        name = f"{node.name or node.output[0]}__sizes"
        model.graph.initializer.append(numpy_helper.from_array(np.array(sizes[0].ints, dtype=np.int64), name))
        node.attribute.remove(sizes[0])
        node.input.append(name)
        fixed += 1
    return fixed


def _attribute(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def fix_zero_std(model: onnx.ModelProto, pipeline: PipelineModel) -> int:
    """Spark scales a column whose std is 0 to 0; the converter writes 1/0 = inf. The scales fixed."""
    scalers = [s for s in pipeline.stages if isinstance(s, StandardScalerModel)]
    nodes = [n for n in model.graph.node if n.op_type == "Scaler"]
    if len(scalers) != len(nodes):
        raise ExportRefusedError(f"{len(scalers)} StandardScaler stages but {len(nodes)} ONNX Scaler nodes")
    fixed = 0
    for stage, node in zip(scalers, nodes, strict=True):
        std = stage.std.toArray()
        scale = _attribute(node, "scale")
        values = [1.0 / s if s != 0 else 0.0 for s in std] if stage.getWithStd() else [1.0] * len(std)
        fixed += sum(1 for old, new in zip(scale.floats, values, strict=True) if not math.isfinite(old) and new == 0)
        del scale.floats[:]
        scale.floats.extend(values)
    return fixed


def fix_unseen_categories(model: onnx.ModelProto, pipeline: PipelineModel) -> int:
    """An unseen or NULL category gets StringIndexer's extra index numLabels, as in Spark (handleInvalid=keep),
    not the LabelEncoder's default -1 (all-zero one-hot). The encoders fixed."""
    indexers = [s for s in pipeline.stages if isinstance(s, StringIndexerModel)]
    labels = [list(lab) for s in indexers for lab in s.labelsArray]
    encoders = [n for n in model.graph.node if n.op_type == "LabelEncoder"]
    if len(labels) != len(encoders):
        raise ExportRefusedError(f"{len(labels)} indexed columns but {len(encoders)} ONNX LabelEncoder nodes")
    for node, keys in zip(encoders, labels, strict=True):
        if list(_attribute(node, "keys_strings").strings) != [k.encode() for k in keys]:
            raise ExportRefusedError(f"ONNX node {node.name} does not hold the labels of its StringIndexer")
        old = _attribute(node, "default_int64")
        if old is not None:
            node.attribute.remove(old)
        node.attribute.append(helper.make_attribute("default_int64", len(keys)))
    encoders_ohe = [s for s in pipeline.stages if isinstance(s, OneHotEncoderModel)]
    sizes = [size for s in encoders_ohe for size in s.categorySizes]
    if sizes != [len(k) + 1 for k in labels]:
        raise ExportRefusedError(f"one-hot sizes {sizes} are not the label counts + 1 {[len(k) + 1 for k in labels]}")
    return len(encoders)


def convert(pipeline: PipelineModel, spec: DatasetSpec, spark=None) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The pipeline as a loadable ONNX graph with every fix above; (model, {fix: nodes changed})."""
    check_supported(pipeline, spec)
    model = raw_convert(pipeline, spec, spark)
    fix_default_opset(model)
    fixes = {
        "split_sizes": fix_split_sizes(model),
        "zero_std_scales": fix_zero_std(model, pipeline),
        "unseen_category_encoders": fix_unseen_categories(model, pipeline),
    }
    onnx.checker.check_model(model)
    return model, fixes


# ---------------------------------------------------------------------------------------------------------------
# Scoring with onnxruntime: the one path that the parity check and the server share


@dataclass(frozen=True)
class Manifest:
    """What a served export needs besides the graph: the signature's inputs, and where it came from."""

    name: str
    version: str
    run_id: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    task: str
    derived: dict[str, str] = field(default_factory=dict)  # feature -> Spark SQL over raw columns (informative)
    parity: dict[str, Any] = field(default_factory=dict)
    fixes: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        return cls(**{**raw, "numeric": tuple(raw["numeric"]), "categorical": tuple(raw["categorical"])})

    @property
    def inputs(self) -> list[tuple[str, str]]:
        return [(c, "double") for c in self.numeric] + [(c, "string") for c in self.categorical]


class OnnxScorer:
    """An exported model in onnxruntime: request rows (dicts) in, (prediction, probability) per row out."""

    def __init__(self, model_bytes: bytes, manifest: Manifest, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.manifest = manifest
        outputs = [o.name for o in self.session.get_outputs()]
        if "prediction" not in outputs or "probability" not in outputs:
            raise ExportRefusedError(f"the ONNX graph has outputs {outputs}, not prediction and probability")

    def tensors(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Validated against the signature: a missing column or another type is a RequestError naming it.
        NULL numerics become NaN (the Imputer's missing value), NULL categoricals NULL_CATEGORY."""
        n = len(rows)
        feeds: dict[str, np.ndarray] = {}
        for name in self.manifest.numeric:
            column = np.empty((n, 1), dtype=np.float32)
            for i, row in enumerate(rows):
                if name not in row:
                    raise RequestError(f"row {i}: field {name!r} (double) is missing", name, i)
                value = row[name]
                if value is None:
                    column[i, 0] = np.nan
                elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    column[i, 0] = value
                else:
                    raise RequestError(
                        f"row {i}: field {name!r} must be a finite number or null (double), got {value!r}", name, i
                    )
            feeds[name] = column
        for name in self.manifest.categorical:
            column = np.empty((n, 1), dtype=object)
            for i, row in enumerate(rows):
                if name not in row:
                    raise RequestError(f"row {i}: field {name!r} (string) is missing", name, i)
                value = row[name]
                if value is None:
                    column[i, 0] = NULL_CATEGORY
                elif isinstance(value, str):
                    column[i, 0] = value
                else:
                    raise RequestError(f"row {i}: field {name!r} must be a string or null, got {value!r}", name, i)
            feeds[name] = column
        return feeds

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, positive-class probability), one per row."""
        prediction, probability = self.session.run(["prediction", "probability"], self.tensors(rows))
        return np.asarray(prediction, dtype=np.float64).reshape(-1), np.asarray(probability, dtype=np.float64)[:, 1]


# ---------------------------------------------------------------------------------------------------------------
# Parity with Spark


@dataclass(frozen=True)
class Parity:
    rows: int
    within_tolerance: int
    share_within: float
    max_abs_diff: float
    class_mismatches: int
    probes: dict[str, dict[str, Any]]  # probe kind -> rows, max_abs_diff, class_mismatches
    ok: bool
    reason: str
    tolerance: float = TOLERANCE
    min_share: float = MIN_SHARE

    def figures(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "within_tolerance": self.within_tolerance,
            "share_within": self.share_within,
            "max_abs_diff": self.max_abs_diff,
            "class_mismatches": self.class_mismatches,
            "tolerance": self.tolerance,
            "min_share": self.min_share,
            "probes": self.probes,
        }


def _spark_scored(pipeline: PipelineModel, frame: DataFrame, spec: DatasetSpec) -> list[dict[str, Any]]:
    """Feature rows with Spark's prediction and positive-class probability (the caller bounds `frame`)."""
    scored = pipeline.transform(frame).select(
        *spec.features,
        F.col("prediction").cast("double").alias("__prediction"),
        vector_to_array(F.col("probability"))[1].alias("__probability"),
    )
    return [r.asDict() for r in scored.collect()]


def _compare(scorer: OnnxScorer, rows: list[dict[str, Any]], tolerance: float) -> tuple[int, float, int]:
    """(rows within the tolerance, max |delta probability|, rows whose class differs)."""
    if not rows:
        return 0, 0.0, 0
    prediction, probability = scorer.predict(rows)
    spark_p = np.array([r["__probability"] for r in rows], dtype=np.float64)
    spark_c = np.array([r["__prediction"] for r in rows], dtype=np.float64)
    diff = np.abs(probability - spark_p)
    diff = np.where(np.isnan(diff), np.inf, diff)  # a NaN on either side is never within the tolerance
    return int((diff <= tolerance).sum()), float(diff.max()), int((prediction != spark_c).sum())


def probe_rows(base: list[dict[str, Any]], spec: DatasetSpec) -> dict[str, list[dict[str, Any]]]:
    """Rows that test what the test set may not hold: each categorical unseen or NULL, each numeric NULL,
    and every numeric NULL at once."""
    features = [{c: r[c] for c in spec.features} for r in base]
    probes: dict[str, list[dict[str, Any]]] = {}
    for c in spec.categorical_features:
        probes[f"unseen:{c}"] = [{**r, c: UNSEEN_CATEGORY} for r in features]
        probes[f"null:{c}"] = [{**r, c: None} for r in features]
    for c in spec.numeric_features:
        probes[f"null:{c}"] = [{**r, c: None} for r in features]
    probes["null:all_numerics"] = [{**r, **dict.fromkeys(spec.numeric_features)} for r in features]
    return probes


def _categorical_tree_splits(pipeline: PipelineModel) -> bool:
    estimator = pipeline.stages[-1]
    return isinstance(estimator, (RandomForestClassificationModel, GBTClassificationModel)) and (
        " in {" in estimator.toDebugString
    )


def check_parity(
    pipeline: PipelineModel,
    scorer: OnnxScorer,
    data: DataFrame,
    spec: DatasetSpec,
    max_rows: int = PARITY_ROWS,
    tolerance: float = TOLERANCE,
    min_share: float = MIN_SHARE,
) -> Parity:
    """ONNX against Spark on at most `max_rows` rows of `data` and on the probe rows made from some of them.

    Passes when at least `min_share` of the rows are within `tolerance`, no row changes class, and every probe
    row is within the tolerance with the same class (an unseen category or a NULL is rare in a test set, so it
    is checked on purpose, not by chance).
    """
    rows = _spark_scored(pipeline, data.select(*spec.features).limit(max_rows), spec)
    within, max_diff, mismatches = _compare(scorer, rows, tolerance)
    share = within / len(rows) if rows else 0.0
    problems = []
    if not rows:
        problems.append("the parity data has no rows")
    elif share < min_share:
        problems.append(f"{within}/{len(rows)} rows ({share:.4%}) within {tolerance} (needs {min_share:.1%})")
    if mismatches:
        problems.append(f"{mismatches} rows get another class")
    probes: dict[str, dict[str, Any]] = {}
    base = rows[:PROBE_BASE_ROWS]
    if base:
        kinds = probe_rows(base, spec)
        flat = [r for kind_rows in kinds.values() for r in kind_rows]
        schema = ", ".join(f"`{c}` {t}" for c, t in scorer.manifest.inputs)
        scored = _spark_scored(pipeline, data.sparkSession.createDataFrame(flat, schema), spec)
        start = 0
        for kind, kind_rows in kinds.items():
            part = scored[start : start + len(kind_rows)]
            start += len(kind_rows)
            ok_rows, diff, wrong = _compare(scorer, part, tolerance)
            probes[kind] = {"rows": len(part), "max_abs_diff": diff, "class_mismatches": wrong}
            if ok_rows < len(part) or wrong:
                problems.append(
                    f"probe {kind}: {len(part) - ok_rows}/{len(part)} rows differ from Spark by more than {tolerance} "
                    f"(max {diff:.3g}), {wrong} change class"
                )
    if problems and _categorical_tree_splits(pipeline):
        problems.append(
            "the trees split on one-hot features as categories ('in {1.0}'), which onnxmltools writes as "
            "'<= 1.0' (always true for a 0/1 feature)"
        )
    return Parity(
        rows=len(rows),
        within_tolerance=within,
        share_within=share,
        max_abs_diff=max_diff,
        class_mismatches=mismatches,
        probes=probes,
        ok=not problems,
        reason="; ".join(problems) if problems else f"ONNX agrees with Spark on {len(rows)} rows and every probe",
        tolerance=tolerance,
        min_share=min_share,
    )


# ---------------------------------------------------------------------------------------------------------------
# Export at registration, and loading for serving


@dataclass(frozen=True)
class ExportOutcome:
    name: str
    version: str
    servable: bool
    reason: str
    uri: str | None  # runs:/<run>/serving/<name>/v<version> when servable
    parity: Parity | None
    seconds: float

    def metadata(self) -> dict[str, Any]:
        """Flat figures for the registered_model materialization."""
        p = self.parity
        return {
            "serving_onnx": "ok" if self.servable else "refused",
            "serving_reason": self.reason,
            "serving_onnx_uri": self.uri or "",
            "serving_parity_rows": p.rows if p else 0,
            "serving_parity_share_within": p.share_within if p else 0.0,
            "serving_parity_max_abs_diff": p.max_abs_diff if p else "",
            "serving_parity_class_mismatches": p.class_mismatches if p else 0,
            "serving_export_seconds": round(self.seconds, 2),
        }


def artifact_path(name: str, version: str) -> str:
    return f"{ARTIFACT_DIR}/{name}/v{version}"


def _versions() -> dict[str, str]:
    import onnxmltools

    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "onnxmltools": onnxmltools.__version__}


def export_version(
    client: MlflowClient, name: str, version: str, data: DataFrame, spec: DatasetSpec, max_rows: int = PARITY_ROWS
) -> ExportOutcome:
    """Convert the registered version to ONNX and check it against Spark on (at most `max_rows` rows of) `data`.

    Servable: the graph and its manifest are logged on the version's run, under `artifact_path(name, version)`,
    and the version is tagged `serving.onnx=ok`, `serving.onnx_uri`, and the parity figures (`serving.parity.*`).
    Otherwise the version stays registered, tagged `serving.onnx=refused` with `serving.reason`: a pipeline that
    the export refuses, a graph that does not load, or parity that fails. Registry errors are raised.
    """
    started = time.monotonic()
    mv = client.get_model_version(name, str(version))
    pipeline = spark_models.load_model(f"models:/{name}/{version}")
    parity: Parity | None = None
    try:
        model, fixes = convert(pipeline, spec, data.sparkSession)
        manifest = Manifest(
            name=name,
            version=str(version),
            run_id=mv.run_id,
            numeric=tuple(spec.numeric_features),
            categorical=tuple(spec.categorical_features),
            task=spec.task,
            derived=dict(spec.derived_columns),
            fixes=fixes,
            versions=_versions(),
        )
        model_bytes = model.SerializeToString()
        parity = check_parity(pipeline, OnnxScorer(model_bytes, manifest), data, spec, max_rows=max_rows)
        servable, reason = parity.ok, parity.reason
    except Exception as exc:  # a refusal, or a converter or runtime that fails: not servable, and why
        servable, reason = False, f"{type(exc).__name__}: {exc}"[:4000]
    tags = {TAG: "ok" if servable else "refused", TAG_REASON: reason[:4000]}
    if parity is not None:
        tags.update(
            {
                "serving.parity.rows": str(parity.rows),
                "serving.parity.share_within": f"{parity.share_within:.6f}",
                "serving.parity.max_abs_diff": f"{parity.max_abs_diff:.3g}",
                "serving.parity.class_mismatches": str(parity.class_mismatches),
                "serving.parity.tolerance": str(parity.tolerance),
            }
        )
    uri = None
    if servable:
        manifest = Manifest(**{**asdict(manifest), "parity": parity.figures()})
        path = artifact_path(name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "model.onnx").write_bytes(model_bytes)
            Path(tmp, "manifest.json").write_text(manifest.to_json())
            client.log_artifacts(mv.run_id, tmp, path)
        uri = f"runs:/{mv.run_id}/{path}"
        tags[TAG_URI] = uri
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    return ExportOutcome(name, str(version), servable, reason, uri, parity, time.monotonic() - started)


class NotServableError(LookupError):
    """The version has no ONNX export to serve (refused, or never exported); the message says why."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    run_id: str
    scorer: OnnxScorer


def load_served(client: MlflowClient, name: str, alias: str = "champion", threads: int = 1) -> ServedModel:
    """The version that `name@alias` points at, as an OnnxScorer; NotServableError naming why if it has none."""
    mv = client.get_model_version_by_alias(name, alias)
    tags = mv.tags or {}
    if tags.get(TAG) != "ok" or not tags.get(TAG_URI):
        why = tags.get(TAG_REASON) or "it was never exported to ONNX"
        raise NotServableError(f"{name}@{alias} is v{mv.version}, which is not servable in real time: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(mv.run_id, artifact_path(name, str(mv.version)), tmp)
        model_bytes = Path(local, "model.onnx").read_bytes()
        manifest = Manifest.from_json(Path(local, "manifest.json").read_text())
    if manifest.version != str(mv.version):
        raise NotServableError(f"{name}@{alias} is v{mv.version}, but its export says v{manifest.version}")
    return ServedModel(name, str(mv.version), mv.run_id, OnnxScorer(model_bytes, manifest, threads))
