"""The tuning search space: the algorithm first, then that algorithm's own hyperparameters (a conditional space).

A space is plain data, `{algorithm: {param: ParamRange}}`, so it can be declared in run config. Every
algorithm of the task has a default range set; a config names the algorithms to search and may override ranges.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import optuna


@dataclass(frozen=True)
class ParamRange:
    kind: Literal["float", "int", "categorical", "fixed"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None  # for kind="fixed"

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        return self.value

    def grid(self, points: int) -> list[Any]:
        """`points` values spread over the range (log-spaced if `log`): the grid a CrossValidator would search."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return list(self.choices)
        if points == 1:
            return [self.low]
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            values = [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)]
        else:
            values = [self.low + (self.high - self.low) * i / (points - 1) for i in range(points)]
        if self.kind == "int":
            step = int(self.step or 1)
            values = sorted({int(self.low) + step * round((v - self.low) / step) for v in values})
        return values


Space = Mapping[str, Mapping[str, ParamRange]]

F, I = "float", "int"  # noqa: E741 (the kinds, short: the table below uses them on every line)
DEFAULT_SPACES: dict[str, dict[str, dict[str, ParamRange]]] = {
    "classification": {
        "logistic_regression": {
            "regParam": ParamRange(F, 1e-4, 1.0, log=True),
            "elasticNetParam": ParamRange(F, 0.0, 1.0),
            "maxIter": ParamRange("fixed", value=50),
        },
        "random_forest": {
            "numTrees": ParamRange(I, 10, 60, step=10),
            "maxDepth": ParamRange(I, 3, 10),
            "subsamplingRate": ParamRange(F, 0.5, 1.0),
        },
        "gbt": {
            "maxIter": ParamRange(I, 10, 40, step=10),
            "maxDepth": ParamRange(I, 3, 6),
            "stepSize": ParamRange(F, 0.05, 0.3, log=True),
        },
    },
}
DEFAULT_SPACES["regression"] = {
    "linear_regression": DEFAULT_SPACES["classification"]["logistic_regression"],
    "random_forest": DEFAULT_SPACES["classification"]["random_forest"],
    "gbt": DEFAULT_SPACES["classification"]["gbt"],
}


def resolve_space(
    task: str, algorithms: tuple[str, ...] = (), overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Space:
    """The task's default space, narrowed to `algorithms` (empty: all), with ranges replaced from `overrides`.

    `overrides` is `{algorithm: {param: {kind, low, high, log, step, choices, value}}}`, as in run config.
    """
    defaults = DEFAULT_SPACES[task]
    unknown = [a for a in (*algorithms, *(overrides or {})) if a not in defaults]
    if unknown:
        raise ValueError(f"algorithm(s) {unknown} are not available for {task}; choose from {sorted(defaults)}")
    space = {a: dict(defaults[a]) for a in (algorithms or tuple(defaults))}
    for algorithm, params in (overrides or {}).items():
        if algorithm not in space:
            continue
        for param, spec in params.items():
            space[algorithm][param] = spec if isinstance(spec, ParamRange) else ParamRange(**dict(spec))
    return space


def suggest(trial: optuna.Trial, space: Space) -> tuple[str, dict[str, Any]]:
    """The algorithm, then its own hyperparameters. Parameter names are prefixed by the algorithm in Optuna
    (`gbt.maxDepth`), so TPE never mixes the history of two algorithms' parameters."""
    algorithm = trial.suggest_categorical("algorithm", list(space))
    return algorithm, {p: r.suggest(trial, f"{algorithm}.{p}") for p, r in space[algorithm].items()}


def params_of(trial_params: Mapping[str, Any], space: Space) -> tuple[str, dict[str, Any]]:
    """The (algorithm, params) a finished trial stands for, from its Optuna params."""
    algorithm = trial_params["algorithm"]
    return algorithm, {
        p: (r.value if r.kind == "fixed" else trial_params[f"{algorithm}.{p}"]) for p, r in space[algorithm].items()
    }


def grid(space: Space, points: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """Every combination of `points` values per parameter, per algorithm: the equivalent grid search."""
    combos = []
    for algorithm, params in space.items():
        names = list(params)
        for values in itertools.product(*(params[n].grid(points) for n in names)):
            combos.append((algorithm, dict(zip(names, values, strict=True))))
    return combos


def describe(space: Space) -> dict[str, dict[str, dict[str, Any]]]:
    """The space as JSON-able data, for MLflow params and Dagster metadata."""
    return {
        a: {p: {k: v for k, v in asdict(r).items() if v not in (None, (), False)} for p, r in ps.items()}
        for a, ps in space.items()
    }
