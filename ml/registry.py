"""Unity-Catalog-style registration (`catalog.schema.model`, aliases, no stages) and the champion/challenger gate."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml.metrics import HIGHER_IS_BETTER, is_better

CHAMPION = "champion"
CHALLENGER = "challenger"


class NoChampionError(LookupError):
    pass


@dataclass(frozen=True)
class GateConfig:
    margin: float = 0.0  # the challenger must beat the champion by more than this
    min_value: float | None = None  # absolute floor for higher-is-better metrics (e.g. AUC)
    max_value: float | None = None  # absolute ceiling for lower-is-better metrics (e.g. RMSE)


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None


def three_level_name(name: str) -> str:
    if len(name.split(".")) != 3 or not all(name.split(".")):
        raise ValueError(f"model name {name!r} must have three levels: catalog.schema.model")
    return name


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except Exception:
        return "unknown"


def register_version(client: MlflowClient, name: str, model_uri: str, run_id: str, description: str,
                     tags: dict[str, str]):
    """A new model version with lineage tags; a signature is required, as in Unity Catalog."""
    import mlflow

    three_level_name(name)
    if mlflow.models.get_model_info(model_uri).signature is None:
        raise ValueError(f"model {model_uri} has no signature: Unity Catalog requires one")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"{name}, trained and gated by the flightline pipeline")
    return client.create_model_version(
        name=name, source=model_uri, run_id=run_id, description=description,
        tags={k: str(v) for k, v in tags.items()},
    )


def champion_version(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            raise NoChampionError(f"model {name} has no version with the alias @{CHAMPION}: run the training job first") from exc
        raise


def gate(
    client: MlflowClient,
    name: str,
    challenger_version: str,
    metric: str,
    evaluate_version: Callable[[str], float],
    config: GateConfig,
) -> GateDecision:
    """Mark the version `challenger`, compare it with the champion on the same data, promote only if better.

    `evaluate_version(version)` returns the primary metric of that version on the current test set. If it
    raises, the champion is left as it was.
    """
    client.set_registered_model_alias(name, CHALLENGER, challenger_version)
    try:
        champion = champion_version(client, name)
    except NoChampionError:
        champion = None
    challenger_value = evaluate_version(challenger_version)
    champion_value = evaluate_version(champion.version) if champion else None

    higher = HIGHER_IS_BETTER[metric]
    if higher and config.min_value is not None and challenger_value < config.min_value:
        promoted, reason = False, f"{metric} {challenger_value:.4f} is below the floor {config.min_value}"
    elif not higher and config.max_value is not None and challenger_value > config.max_value:
        promoted, reason = False, f"{metric} {challenger_value:.4f} is above the ceiling {config.max_value}"
    elif champion is None:
        promoted, reason = True, f"first version to pass the thresholds ({metric} {challenger_value:.4f})"
    elif is_better(challenger_value, champion_value, metric, config.margin):
        promoted, reason = True, (f"{metric} {challenger_value:.6f} beats champion v{champion.version} "
                                  f"({champion_value:.6f}) by more than {config.margin}")
    else:
        promoted, reason = False, (f"{metric} {challenger_value:.6f} does not beat champion v{champion.version} "
                                   f"({champion_value:.6f}) by more than {config.margin}")

    decision = GateDecision(promoted, reason, metric, str(challenger_version), challenger_value,
                            champion.version if champion else None, champion_value)
    for key, value in {
        "gate.decision": "promoted" if promoted else "rejected",
        "gate.reason": reason,
        "gate.metric": metric,
        "gate.challenger_value": f"{challenger_value:.6f}",
        "gate.champion_version": decision.champion_version or "",
        "gate.champion_value": "" if champion_value is None else f"{champion_value:.6f}",
    }.items():
        client.set_model_version_tag(name, str(challenger_version), key, value)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(challenger_version))
        client.delete_registered_model_alias(name, CHALLENGER)
    return decision
