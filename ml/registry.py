"""Unity-Catalog-style registration (`catalog.schema.model`, aliases, no stages), the champion/challenger gate,
and rollback.

Everything goes through `MlflowClient`, so the same code serves the embedded sqlite registry, an MLflow
server (`http://...`), `databricks-uc` and an OSS Unity Catalog server (`uc:http://...`). Unity Catalog
has no stages, so the only pointers used are the aliases @champion (what scoring uses) and @challenger
(the latest version that lost the gate); `latest` is reserved there and refused here.
"""

from __future__ import annotations

import functools
import math
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient

from ml.dataset import DatasetSpec
from ml.metrics import HIGHER_IS_BETTER, is_better
from ml.scoring import ModelLoadError, SignatureMismatchError, signature_problems

CHAMPION = "champion"
CHALLENGER = "challenger"
# The lineage every version must carry (besides input.<table>.delta_version for at least one table).
REQUIRED_LINEAGE_TAGS = ("mlflow.run_id", "dagster.run_id", "dataset.spec_fingerprint", "code.version")


class NoChampionError(LookupError):
    pass


class ModelVersionNotFoundError(LookupError):
    pass


class GateEvaluationError(RuntimeError):
    """Evaluating the challenger or the champion failed: no alias was moved."""


class GateConflictError(RuntimeError):
    """@champion kept moving while the gate evaluated (another gate or a rollback): no alias was moved."""


class ChampionMovedError(RuntimeError):
    """@champion moved between set_champion's first read and its write: it was left where the other writer put it."""


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds, per metric: a floor on AUC never applies to RMSE or R2.

    `floors` (metric -> floor) may only name higher-is-better metrics, `ceilings` (metric -> ceiling) only
    lower-is-better ones (ml.metrics.HIGHER_IS_BETTER); anything else is refused, naming the metric. A metric
    without an entry has no absolute threshold. The defaults are the pipeline's: margin 0.001, AUC >= 0.55.
    """

    margin: float = 0.001  # the challenger must beat the champion by more than this
    floors: Mapping[str, float] = field(default_factory=lambda: {"auc": 0.55})  # higher-is-better metrics only
    ceilings: Mapping[str, float] = field(default_factory=dict)  # lower-is-better metrics only

    def __post_init__(self) -> None:
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"gate margin is {self.margin!r}: it must be a finite number >= 0")
        for kind, limits, higher in (("floor", self.floors, True), ("ceiling", self.ceilings, False)):
            checked = {}
            for metric, limit in dict(limits or {}).items():
                if metric not in HIGHER_IS_BETTER:
                    raise ValueError(
                        f"gate {kind} for unknown metric {metric!r}: the metrics are {sorted(HIGHER_IS_BETTER)}"
                    )
                if HIGHER_IS_BETTER[metric] != higher:
                    raise ValueError(
                        f"gate {kind} for {metric!r}: {metric} is {'lower' if higher else 'higher'}-is-better, so it takes "
                        f"a {'ceiling' if higher else 'floor'}, not a {kind}"
                    )
                try:
                    checked[metric] = float(limit)
                except (TypeError, ValueError):
                    checked[metric] = math.nan
                if not math.isfinite(checked[metric]):
                    raise ValueError(f"gate {kind} for {metric!r} is {limit!r}, not a finite number")
            # A read-only copy: a frozen config whose limits cannot change behind the gate's back.
            object.__setattr__(self, "floors" if higher else "ceilings", MappingProxyType(checked))

    def __hash__(self) -> int:
        return hash((self.margin, frozenset(self.floors.items()), frozenset(self.ceilings.items())))

    def __reduce__(self):  # picklable (a mappingproxy is not), e.g. for Dagster's multiprocess executor
        return (GateConfig, (self.margin, dict(self.floors), dict(self.ceilings)))

    def threshold(self, metric: str) -> str:
        """The absolute threshold that applies to `metric`, in words."""
        if self.floors.get(metric) is not None:
            return f"{metric} >= {self.floors[metric]}"
        if self.ceilings.get(metric) is not None:
            return f"{metric} <= {self.ceilings[metric]}"
        return "none"


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None  # the champion the challenger was last judged against
    champion_value: float | None
    rounds: int = 1  # evaluation rounds: 1 + the re-evaluations after @champion moved during the gate


@dataclass(frozen=True)
class ChampionChange:
    name: str
    version: str
    previous_version: str | None
    requested_by: str
    reason: str


def three_level_name(name: str) -> str:
    if len(name.split(".")) != 3 or not all(name.split(".")):
        raise ValueError(f"model name {name!r} must have three levels: catalog.schema.model")
    return name


def check_alias(alias: str) -> str:
    """Unity Catalog reserves `latest` and version-like names (`v3`); refuse them before any registry call."""
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ValueError(f"alias {alias!r} is reserved (Unity Catalog keeps 'latest' and 'v<number>' for itself)")
    return alias


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, check_alias(alias), str(version))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except Exception:
        return "unknown"


def lineage_tags(spec: DatasetSpec, inputs: Mapping[str, tuple[str, int]], ids: Mapping[str, str]) -> dict[str, str]:
    """Tags linking a run or a model version to what made it: `ids` (MLflow/Dagster run ids), the dataset
    spec's hash, the code version, and each input table's path and Delta version."""
    tags = {
        **ids,
        "dataset.name": spec.name,
        "dataset.spec_fingerprint": spec.fingerprint(),
        "code.version": code_version(),
    }
    for table, (path, version) in inputs.items():
        tags[f"input.{table}.path"] = path
        tags[f"input.{table}.delta_version"] = str(version)
    return {k: str(v) for k, v in tags.items()}


def register_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, description: str, tags: Mapping[str, str]
):
    """A new model version with its description and lineage tags.

    Refused before anything is written: a name that is not `catalog.schema.model`, a model without a
    signature (Unity Catalog requires one), an empty description, and tags missing the lineage keys.
    """
    import mlflow

    three_level_name(name)
    tags = {"mlflow.run_id": run_id, **{k: str(v) for k, v in tags.items()}}
    missing = [k for k in REQUIRED_LINEAGE_TAGS if not tags.get(k)]
    if not any(k.startswith("input.") and k.endswith(".delta_version") for k in tags):
        missing.append("input.<table>.delta_version")
    if missing:
        raise ValueError(f"cannot register {name}: lineage tags {missing} are missing")
    if not description.strip():
        raise ValueError(f"cannot register {name}: a version needs a description")
    info = mlflow.models.get_model_info(model_uri)
    if info.signature is None:
        raise ValueError(f"model {model_uri} has no signature: Unity Catalog requires one")
    # A logged model's URI (`models:/m-...`, what `log_model` returns): an MLflow server accepts it as a version's
    # source only with the model's id beside it (a local store does not check).
    model_id = info.model_id if model_uri == f"models:/{info.model_id}" else None
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, description=f"{name}, trained and gated by the flightline pipeline")
        except MlflowException as race:  # a concurrent first registration created it between the get and the create
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    return client.create_model_version(
        name=name, source=model_uri, run_id=run_id, description=description, tags=tags, model_id=model_id
    )


def champion_version(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # sqlite and the MLflow server say INVALID_PARAMETER_VALUE "alias ... not found"; a missing model is
        # RESOURCE_DOES_NOT_EXIST.
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            raise NoChampionError(
                f"model {name} has no version with the alias @{CHAMPION}: run the training job first"
            ) from exc
        raise


def current_champion(client: MlflowClient, name: str):
    """The @champion version, or None."""
    try:
        return champion_version(client, name)
    except NoChampionError:
        return None


def model_version(client: MlflowClient, name: str, version: int | str):
    """That version, or an error naming the versions that do exist."""
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
        existing = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise ModelVersionNotFoundError(
            f"model {name} has no version {version} (its versions: {existing or 'none'})"
        ) from exc


def decide(
    metric: str, challenger_value: float, champion: str | None, champion_value: float | None, config: GateConfig
) -> tuple[bool, str]:
    """(promoted, reason): the absolute threshold first, then the comparison with the champion."""
    floor, ceiling = config.floors.get(metric), config.ceilings.get(metric)
    if floor is not None and challenger_value < floor:
        return False, f"{metric} {challenger_value:.6f} is below the floor {floor}"
    if ceiling is not None and challenger_value > ceiling:
        return False, f"{metric} {challenger_value:.6f} is above the ceiling {ceiling}"
    if champion is None:
        return True, f"first version to pass the thresholds ({metric} {challenger_value:.6f})"
    better = is_better(challenger_value, champion_value, metric, config.margin)
    return better, (
        f"{metric} {challenger_value:.6f} {'beats' if better else 'does not beat'} champion v{champion} "
        f"({champion_value:.6f}) by more than {config.margin}"
    )


GATE_ROUNDS = 3  # evaluations against a champion that moved meanwhile, before the gate gives up


def gate(
    client: MlflowClient,
    name: str,
    challenger_version: str,
    metric: str,
    evaluate_version: Callable[[str], float],
    config: GateConfig,
) -> GateDecision:
    """Judge a new version against @champion on the same data; promote it only if it is better.

    `evaluate_version(version)` returns the primary metric of that version on the current test set. Both
    versions are evaluated before any alias moves: if an evaluation raises or gives no finite number, the
    version is tagged `gate.decision=failed` with the error, and @champion and @challenger stay as they were.
    Otherwise the version becomes @challenger, or @champion if promoted; the decision, the reason, both
    metrics and the number of rounds are tagged on it (`gate.*`).

    Compare-and-set: evaluating takes long, and a rollback or another gate may move @champion meanwhile.
    @champion is read again just before an alias moves; if it is no longer the version judged against, the
    challenger is judged again against the new champion (each version is evaluated once per call; the
    results are kept), at most GATE_ROUNDS rounds. If it moved every round, no alias moves: the version is
    tagged `gate.decision=conflict` and GateConflictError is raised. MLflow has no atomic compare-and-set
    of an alias, so this narrows the window to the milliseconds between that read and the write; runs that
    move @champion (training, rollback) are also serialized by Dagster's run-tag concurrency limits.
    """
    challenger_version = str(challenger_version)
    values: dict[str, float] = {}

    def value_of(version: str) -> float:
        if version not in values:
            values[version] = _finite(evaluate_version(version), metric, version)
        return values[version]

    champion_v = _champion_v(client, name)
    seen = [champion_v]
    for rounds in range(1, GATE_ROUNDS + 1):
        try:
            challenger_value = value_of(challenger_version)
            champion_value = value_of(champion_v) if champion_v else None
        except Exception as exc:
            reason = f"evaluation failed: {type(exc).__name__}: {exc}"[:4000]
            _tag(
                client,
                name,
                challenger_version,
                {"gate.decision": "failed", "gate.reason": reason, "gate.metric": metric, "gate.rounds": str(rounds)},
            )
            raise GateEvaluationError(
                f"gate for {name} v{challenger_version}: {reason}; the aliases are unchanged "
                f"(@champion: {'v' + champion_v if champion_v else 'none'})"
            ) from exc

        promoted, reason = decide(metric, challenger_value, champion_v, champion_value, config)
        _tag(
            client,
            name,
            challenger_version,
            {
                "gate.decision": "promoted" if promoted else "rejected",
                "gate.reason": reason,
                "gate.metric": metric,
                "gate.challenger_value": f"{challenger_value:.6f}",
                "gate.champion_version": champion_v or "",
                "gate.champion_value": "" if champion_value is None else f"{champion_value:.6f}",
                "gate.margin": str(config.margin),
                "gate.threshold": config.threshold(metric),
                "gate.rounds": str(rounds),
            },
        )
        now = _champion_v(client, name)  # compare ...
        if now == champion_v:
            if promoted:  # ... and set
                set_alias(client, name, CHAMPION, challenger_version)
                _drop_alias(client, name, CHALLENGER)  # the last loser no longer challenges the new champion
            else:
                set_alias(client, name, CHALLENGER, challenger_version)
            return GateDecision(
                promoted, reason, metric, challenger_version, challenger_value, champion_v, champion_value, rounds
            )
        champion_v = now
        seen.append(now)
        if now == challenger_version:
            break  # set @champion by hand meanwhile (an override): not the gate's to judge any more
    path = " -> ".join("v" + v if v else "none" for v in seen)
    if champion_v == challenger_version:
        why = f"@champion was set to v{challenger_version} itself by someone else during the gate ({path})"
    else:
        why = f"@champion moved during each of the {GATE_ROUNDS} evaluation rounds ({path})"
    _tag(
        client,
        name,
        challenger_version,
        {"gate.decision": "conflict", "gate.reason": why, "gate.metric": metric, "gate.rounds": str(len(seen) - 1)},
    )
    raise GateConflictError(
        f"gate for {name} v{challenger_version}: {why}: another gate or a rollback is moving it; the gate moved no "
        f"alias (@champion: {'v' + champion_v if champion_v else 'none'}). Run the gate again once it is done."
    )


def set_champion(
    client: MlflowClient,
    name: str,
    version: int | str,
    expected: ModelSignature,
    requested_by: str,
    reason: str,
    dagster_run_id: str = "",
    verify: Callable[[str], object] | None = None,
) -> ChampionChange:
    """Rollback or override: point @champion at an existing version, by hand, bypassing the gate.

    Refused, with @champion unchanged: an empty `requested_by` or `reason`, a version that does not exist,
    and a version whose signature scoring cannot feed (`expected` is what scoring gives a model: the dataset
    spec's features and their types). Who asked, why, and the previous champion are tagged on the version.
    A version whose model files cannot be read is refused with ModelLoadError. `verify(uri)`, if given, is
    called with `models:/<name>/<version>` after the signature check and before any tag or alias changes
    (e.g. `lambda uri: ml.scoring.smoke_score(uri, features.limit(100), spec)`: the version loads and
    scores); whatever it raises propagates, and nothing has changed.

    Compare-and-set: @champion is read first and again right before it is moved; if another gate or rollback
    moved it in between, ChampionMovedError is raised naming both versions, @champion stays where the other
    one put it and the `champion.*` tags written are taken back. MLflow has no atomic compare-and-set of an
    alias, so this narrows the window to the milliseconds between that read and the write; Dagster's
    run-tag concurrency limits serialize the runs that move @champion on top of it.
    """
    if not requested_by.strip() or not reason.strip():
        raise ValueError(f"setting @{CHAMPION} of {name} needs who asks (requested_by) and why (reason)")
    previous_v = _champion_v(client, name)
    target = model_version(client, name, version)
    target_v = str(target.version)
    import mlflow

    uri = f"models:/{name}/{target_v}"
    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:  # its MLmodel file is gone or unreadable: the artifacts are missing or damaged
        cause = str(exc).strip()[:500].rstrip(".")
        raise ModelLoadError(
            f"model {uri} cannot be loaded: {type(exc).__name__}: {cause}. "
            f"Its artifacts are missing or damaged: it cannot be @{CHAMPION}."
        ) from exc
    problems = signature_problems(info.signature, expected)
    if problems:
        raise SignatureMismatchError(
            f"{name} v{target_v} cannot be @{CHAMPION}: its signature does not match what scoring gives it: "
            + "; ".join(problems)
        )
    if verify is not None:
        verify(uri)
    _check_champion_unmoved(client, name, previous_v, target_v)
    tags = {
        "champion.set_by": requested_by,
        "champion.reason": reason,
        "champion.previous_version": previous_v or "",
        "champion.set_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "champion.dagster_run_id": dagster_run_id,
    }
    before = dict(client.get_model_version(name, target_v).tags)
    _tag(client, name, target_v, tags)
    try:
        _check_champion_unmoved(client, name, previous_v, target_v)
    except ChampionMovedError:
        _restore_tags(client, name, target_v, before, tags)
        raise
    set_alias(client, name, CHAMPION, target_v)
    if str(client.get_registered_model(name).aliases.get(CHALLENGER, "")) == target_v:
        _drop_alias(client, name, CHALLENGER)  # a version does not challenge itself
    return ChampionChange(name, target_v, previous_v, requested_by, reason)


def _champion_v(client: MlflowClient, name: str) -> str | None:
    champion = current_champion(client, name)
    return str(champion.version) if champion else None


def _check_champion_unmoved(client: MlflowClient, name: str, previous_v: str | None, target_v: str) -> None:
    now = _champion_v(client, name)
    if now != previous_v:
        raise ChampionMovedError(
            f"@{CHAMPION} of {name} moved from {'v' + previous_v if previous_v else 'none'} to "
            f"{'v' + now if now else 'none'} while it was being set to v{target_v} (another gate or rollback ran "
            f"meanwhile): it was left at {'v' + now if now else 'none'}. Check why, then ask again."
        )


def _restore_tags(
    client: MlflowClient, name: str, version: str, before: Mapping[str, str], written: Mapping[str, str]
) -> None:
    for key in written:
        if key in before:
            client.set_model_version_tag(name, version, key, before[key])
        else:
            client.delete_model_version_tag(name, version, key)


def _finite(value: float, metric: str, version: str) -> float:
    if value is None or not math.isfinite(value):
        raise ValueError(f"{metric} of v{version} is {value}, not a finite number (is the test set empty?)")
    return float(value)


def _tag(client: MlflowClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _drop_alias(client: MlflowClient, name: str, alias: str) -> None:
    if alias in client.get_registered_model(name).aliases:
        client.delete_registered_model_alias(name, alias)
