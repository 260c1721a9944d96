"""Registration, the champion/challenger gate and rollback, on a real sqlite registry with real tiny Spark models."""

import dataclasses
import math
import pickle
import re
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ml.metrics import evaluate
from ml.registry import (
    CHALLENGER,
    CHAMPION,
    ChampionMovedError,
    GateConfig,
    GateConflictError,
    GateEvaluationError,
    ModelVersionNotFoundError,
    NoChampionError,
    champion_version,
    check_alias,
    gate,
    register_version,
    set_alias,
    set_champion,
)
from ml.scoring import ModelLoadError, SignatureMismatchError, evaluate_version, smoke_score
from ml.training import model_signature
from tests.unit.tiny import log_tiny_model, tiny_lineage, tiny_spec


@pytest.fixture()
def NAME(request):
    """A model name of the test's own, since the MLflow store is shared by the session."""
    return "main.tiny." + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:200]


@pytest.fixture(scope="module")
def models(spark, mlflow_store):
    """Per task, a good and a weak real model, logged with the signature scoring expects."""
    mlflow_store.configure()  # other modules' Dagster runs may have pointed MLflow elsewhere
    experiment = mlflow_store.experiment_id()
    out = {}
    for task in ("classification", "regression"):
        good_uri, good_run, good_model, test = log_tiny_model(spark, experiment, task)
        weak_uri, weak_run, weak_model, _ = log_tiny_model(spark, experiment, task, weak=True)
        out[task] = {"good": (good_uri, good_run, good_model), "weak": (weak_uri, weak_run, weak_model), "test": test}
    return out


def register(client, name, logged):
    """Register a logged model (log_tiny_model's URI and run id first) with its lineage; the version, as a str."""
    uri, run_id = logged[:2]
    return str(register_version(client, name, uri, run_id, f"tiny model of run {run_id}", tiny_lineage(run_id)).version)


def aliases(client, name):
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


# --- registration ---------------------------------------------------------------------------------------------


def test_concurrent_first_registrations_and_experiments_all_succeed(models, mlflow_store, NAME):
    """Two training runs that start together on a new model (or a new store) both create it: the loser of each race
    reads what the winner created. Real threads on the session's sqlite store; without the catch, about 8 of the 10
    rounds of 4 creators raised RESOURCE_ALREADY_EXISTS."""
    import threading

    from orchestration.resources import MLflowResource

    client, logged = mlflow_store.client, models["classification"]["good"]
    errors, versions, experiments = [], [], {}

    def run(target, *args):
        try:
            target(*args)
        except Exception as exc:  # noqa: BLE001 - collected, then asserted empty
            errors.append(repr(exc))

    def first_experiment(name):
        resource = MLflowResource(tracking_uri=mlflow_store.tracking_uri, experiment=name)
        experiments.setdefault(name, set()).add(resource.experiment_id())

    for round_ in range(5):
        threads = [threading.Thread(target=run, args=(first_experiment, f"{NAME}.{round_}")) for _ in range(4)]
        threads += [
            threading.Thread(
                target=run, args=(lambda n: versions.append(register(client, n, logged)), f"{NAME}_{round_}")
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert {name: len(ids) for name, ids in experiments.items()} == {f"{NAME}.{r}": 1 for r in range(5)}
    assert sorted(versions) == ["1"] * 5 + ["2"] * 5  # each model: two versions, one per registration
    mlflow_store.configure()  # the resources above pointed MLflow at the same store; leave it as the session had it


def test_a_version_carries_its_lineage_and_description(models, mlflow_store, NAME):
    client = mlflow_store.client
    uri, run_id, _ = models["classification"]["good"]
    v = register(client, NAME, models["classification"]["good"])
    version = client.get_model_version(NAME, v)
    assert version.run_id == run_id and version.description == f"tiny model of run {run_id}"
    assert {
        k: version.tags[k]
        for k in (
            "mlflow.run_id",
            "dagster.run_id",
            "dataset.name",
            "dataset.spec_fingerprint",
            "input.test_set.path",
            "input.test_set.delta_version",
        )
    } == {
        "mlflow.run_id": run_id,
        "dagster.run_id": "dagster-run-1",
        "dataset.name": "tiny",
        "dataset.spec_fingerprint": tiny_spec().fingerprint(),
        "input.test_set.path": "/lakehouse/main/tiny/test_set",
        "input.test_set.delta_version": "3",
    }
    assert re.fullmatch(r"[0-9a-f]{40}", version.tags["code.version"])  # the git sha of this checkout
    assert client.get_registered_model(NAME).description == f"{NAME}, trained and gated by the flightline pipeline"


@pytest.mark.parametrize(
    "drop, named",
    [
        ("dagster.run_id", "['dagster.run_id']"),
        ("code.version", "['code.version']"),
        ("input.test_set.delta_version", "['input.<table>.delta_version']"),
    ],
)
def test_a_version_without_its_lineage_is_refused(models, mlflow_store, NAME, drop, named):
    _, run_id, _ = models["classification"]["good"]
    tags = {k: v for k, v in tiny_lineage(run_id).items() if k != drop}
    with pytest.raises(ValueError, match=re.escape(f"cannot register {NAME}: lineage tags {named} are missing")):
        register_version(mlflow_store.client, NAME, models["classification"]["good"][0], run_id, "d", tags)
    assert mlflow_store.client.search_model_versions(f"name='{NAME}'") == []


def test_a_model_without_signature_is_refused(spark, models, mlflow_store, NAME):
    import mlflow

    from ml.training import pip_requirements

    _, _, fitted = models["classification"]["good"]
    with mlflow.start_run(experiment_id=mlflow_store.experiment_id()) as run:
        info = mlflow.spark.log_model(fitted, artifact_path="model", pip_requirements=pip_requirements())
    with pytest.raises(
        ValueError, match=re.escape(f"model {info.model_uri} has no signature: Unity Catalog requires one")
    ):
        register_version(mlflow_store.client, NAME, info.model_uri, run.info.run_id, "d", tiny_lineage(run.info.run_id))
    assert mlflow_store.client.search_model_versions(f"name='{NAME}'") == []


def test_an_empty_description_and_a_two_level_name_are_refused(models, mlflow_store, NAME):
    uri, run_id, _ = models["classification"]["good"]
    with pytest.raises(ValueError, match=f"cannot register {NAME}: a version needs a description"):
        register_version(mlflow_store.client, NAME, uri, run_id, "  ", tiny_lineage(run_id))
    with pytest.raises(ValueError, match="model name 'tiny.model' must have three levels: catalog.schema.model"):
        register_version(mlflow_store.client, "tiny.model", uri, run_id, "d", tiny_lineage(run_id))


@pytest.mark.parametrize("alias", ["latest", "Latest", "v1", "V12"])
def test_reserved_aliases_are_refused(models, mlflow_store, NAME, alias):
    client = mlflow_store.client
    v = register(client, NAME, models["classification"]["good"])
    set_alias(client, NAME, CHAMPION, v)
    with pytest.raises(ValueError, match=re.escape(f"alias {alias!r} is reserved")):
        set_alias(client, NAME, alias, v)
    assert aliases(client, NAME) == {CHAMPION: v}
    assert check_alias("champion_2") == "champion_2"


# --- the gate's configuration --------------------------------------------------------------------------------------


def test_the_gate_defaults_are_the_pipelines_and_a_floor_is_per_metric():
    config = GateConfig()
    assert (config.margin, dict(config.floors), dict(config.ceilings)) == (0.001, {"auc": 0.55}, {})
    assert [config.threshold(m) for m in ("auc", "pr_auc", "r2", "rmse", "log_loss")] == [
        "auc >= 0.55",
        "none",
        "none",
        "none",
        "none",
    ]
    both = GateConfig(margin=0.0, floors={"auc": 0.6, "r2": 0.5}, ceilings={"rmse": 1, "log_loss": 0.69})
    assert [both.threshold(m) for m in ("auc", "r2", "rmse", "log_loss", "f1", "mae")] == [
        "auc >= 0.6",
        "r2 >= 0.5",
        "rmse <= 1.0",
        "log_loss <= 0.69",
        "none",
        "none",
    ]
    assert hash(both) == hash(
        GateConfig(margin=0.0, floors={"r2": 0.5, "auc": 0.6}, ceilings={"log_loss": 0.69, "rmse": 1.0})
    )
    with pytest.raises(TypeError):
        both.floors["auc"] = 0.0  # read-only: a frozen config's limits cannot change behind the gate's back
    again = pickle.loads(pickle.dumps(both))
    assert again == both and again.floors == {"auc": 0.6, "r2": 0.5} and again.threshold("rmse") == "rmse <= 1.0"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"floors": {"rmse": 1.0}},
            "gate floor for 'rmse': rmse is lower-is-better, so it takes a ceiling, not a floor",
        ),
        (
            {"floors": {"log_loss": 0.7}},
            "gate floor for 'log_loss': log_loss is lower-is-better, so it takes a ceiling, not a floor",
        ),
        (
            {"ceilings": {"auc": 0.9}},
            "gate ceiling for 'auc': auc is higher-is-better, so it takes a floor, not a ceiling",
        ),
        (
            {"ceilings": {"r2": 0.9}},
            "gate ceiling for 'r2': r2 is higher-is-better, so it takes a floor, not a ceiling",
        ),
        (
            {"floors": {"accuracy": 0.9}},
            "gate floor for unknown metric 'accuracy': the metrics are "
            "['auc', 'f1', 'log_loss', 'mae', 'pr_auc', 'r2', 'rmse']",
        ),
        (
            {"ceilings": {"mse": 2.0}},
            "gate ceiling for unknown metric 'mse': the metrics are "
            "['auc', 'f1', 'log_loss', 'mae', 'pr_auc', 'r2', 'rmse']",
        ),
        ({"floors": {"auc": "high"}}, "gate floor for 'auc' is 'high', not a finite number"),
        ({"ceilings": {"rmse": math.inf}}, "gate ceiling for 'rmse' is inf, not a finite number"),
        ({"margin": -0.01}, "gate margin is -0.01: it must be a finite number >= 0"),
    ],
)
def test_a_misplaced_or_unknown_gate_limit_is_refused(kwargs, message):
    with pytest.raises(ValueError) as raised:
        GateConfig(**kwargs)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "task, metric, value",
    [
        ("regression", "r2", 0.30),  # below the AUC floor's number: still no floor for R2
        ("regression", "rmse", 5.0),
        ("classification", "pr_auc", 0.40),
    ],
)
def test_the_default_auc_floor_does_not_apply_to_other_metrics(models, mlflow_store, NAME, task, metric, value):
    client = mlflow_store.client
    v1 = register(client, NAME, models[task]["good"])
    decision = gate(client, NAME, v1, metric, {v1: value}.__getitem__, GateConfig())
    assert (decision.promoted, decision.reason) == (
        True,
        f"first version to pass the thresholds ({metric} {value:.6f})",
    )
    assert aliases(client, NAME) == {CHAMPION: v1}
    assert client.get_model_version(NAME, v1).tags["gate.threshold"] == "none"
    v2 = register(client, NAME, models[task]["good"])
    low_auc = gate(client, NAME, v2, "auc", {v1: 0.6, v2: 0.54}.__getitem__, GateConfig())  # the floor where it applies
    assert (low_auc.promoted, low_auc.reason) == (False, "auc 0.540000 is below the floor 0.55")


# --- the gate, driven by metric pairs ----------------------------------------------------------------------------

CLS = GateConfig(margin=0.01, floors={"auc": 0.6})
REG = GateConfig(margin=0.01, floors={}, ceilings={"rmse": 1.0})
LOG_LOSS = GateConfig(margin=0.0, floors={}, ceilings={"log_loss": 0.69})
PAIRS = [
    # task, metric, config, champion's value, challenger's value, promoted
    ("classification", "auc", CLS, 0.80, 0.70, False),  # worse
    ("classification", "auc", CLS, 0.80, 0.80, False),  # equal
    ("classification", "auc", CLS, 0.80, 0.805, False),  # better, but not by more than the margin
    ("classification", "auc", CLS, 0.80, 0.81, False),  # better by exactly the margin
    ("classification", "auc", CLS, 0.80, 0.85, True),  # better by more than the margin
    ("classification", "auc", CLS, 0.61, 0.59, False),  # worse and below the floor
    ("classification", "log_loss", LOG_LOSS, 0.40, 0.45, False),  # lower is better
    ("classification", "log_loss", LOG_LOSS, 0.40, 0.30, True),
    ("regression", "rmse", REG, 0.50, 0.60, False),  # worse
    ("regression", "rmse", REG, 0.50, 0.50, False),  # equal
    ("regression", "rmse", REG, 0.50, 0.495, False),  # better, but not by more than the margin
    ("regression", "rmse", REG, 0.50, 0.45, True),  # better by more than the margin
    ("regression", "rmse", REG, 0.90, 1.20, False),  # worse and above the ceiling
    ("regression", "r2", GateConfig(margin=0.0, floors={"r2": 0.5}), 0.80, 0.79, False),  # higher is better
    ("regression", "r2", GateConfig(margin=0.0, floors={"r2": 0.5}), 0.80, 0.90, True),
]


@pytest.mark.parametrize("task, metric, config, champion_value, challenger_value, promoted", PAIRS)
def test_only_a_challenger_better_by_more_than_the_margin_is_promoted(
    models, mlflow_store, NAME, task, metric, config, champion_value, challenger_value, promoted
):
    client = mlflow_store.client
    v1 = register(client, NAME, models[task]["good"])
    v2 = register(client, NAME, models[task]["good"])
    values = {v1: champion_value, v2: challenger_value}
    assert gate(client, NAME, v1, metric, values.__getitem__, config).promoted  # the first version, above the threshold

    decision = gate(client, NAME, v2, metric, values.__getitem__, config)

    assert decision.promoted is promoted
    assert (decision.champion_version, decision.champion_value, decision.challenger_value) == (
        v1,
        champion_value,
        challenger_value,
    )
    below_floor = metric in config.floors and challenger_value < config.floors[metric]
    above_ceiling = metric in config.ceilings and challenger_value > config.ceilings[metric]
    if below_floor:
        assert decision.reason == f"{metric} {challenger_value:.6f} is below the floor {config.floors[metric]}"
    elif above_ceiling:
        assert decision.reason == f"{metric} {challenger_value:.6f} is above the ceiling {config.ceilings[metric]}"
    else:
        verdict = "beats" if promoted else "does not beat"
        assert decision.reason == (
            f"{metric} {challenger_value:.6f} {verdict} champion v{v1} ({champion_value:.6f}) "
            f"by more than {config.margin}"
        )
    assert aliases(client, NAME) == ({CHAMPION: v2} if promoted else {CHAMPION: v1, CHALLENGER: v2})
    tags = client.get_model_version(NAME, v2).tags
    assert {
        k: tags[k]
        for k in (
            "gate.decision",
            "gate.reason",
            "gate.metric",
            "gate.challenger_value",
            "gate.champion_version",
            "gate.champion_value",
        )
    } == {
        "gate.decision": "promoted" if promoted else "rejected",
        "gate.reason": decision.reason,
        "gate.metric": metric,
        "gate.challenger_value": f"{challenger_value:.6f}",
        "gate.champion_version": v1,
        "gate.champion_value": f"{champion_value:.6f}",
    }


@pytest.mark.parametrize(
    "task, metric, config, first, second",
    [
        ("classification", "auc", GateConfig(margin=0.0, floors={"auc": 0.55}), 0.54, 0.56),
        ("regression", "rmse", GateConfig(margin=0.0, floors={}, ceilings={"rmse": 1.0}), 1.2, 0.9),
    ],
)
def test_the_first_version_is_promoted_only_if_it_passes_the_threshold(
    models, mlflow_store, NAME, task, metric, config, first, second
):
    client = mlflow_store.client
    v1, v2 = register(client, NAME, models[task]["good"]), register(client, NAME, models[task]["good"])
    values = {v1: first, v2: second}
    with pytest.raises(
        NoChampionError, match=f"model {NAME} has no version with the alias @champion: run the training job first"
    ):
        champion_version(client, NAME)
    rejected = gate(client, NAME, v1, metric, values.__getitem__, config)
    assert not rejected.promoted and rejected.champion_version is None
    assert aliases(client, NAME) == {CHALLENGER: v1}
    promoted = gate(client, NAME, v2, metric, values.__getitem__, config)
    assert promoted.promoted and promoted.reason == f"first version to pass the thresholds ({metric} {second:.6f})"
    assert aliases(client, NAME) == {CHAMPION: v2}


@pytest.mark.parametrize(
    "task, metric, old, new, champion_value, challenger_value",
    [
        (
            "classification",
            "auc",
            GateConfig(margin=0.0, floors={"auc": 0.55}),
            GateConfig(margin=0.0, floors={"auc": 0.65}),
            0.60,
            0.62,
        ),
        (
            "regression",
            "rmse",
            GateConfig(margin=0.0, floors={}, ceilings={"rmse": 1.0}),
            GateConfig(margin=0.0, floors={}, ceilings={"rmse": 0.7}),
            0.90,
            0.80,
        ),
    ],
)
def test_a_better_challenger_that_misses_a_stricter_threshold_is_not_promoted(
    models, mlflow_store, NAME, task, metric, old, new, champion_value, challenger_value
):
    client = mlflow_store.client
    v1, v2 = register(client, NAME, models[task]["good"]), register(client, NAME, models[task]["good"])
    values = {v1: champion_value, v2: challenger_value}
    assert gate(client, NAME, v1, metric, values.__getitem__, old).promoted
    decision = gate(client, NAME, v2, metric, values.__getitem__, new)
    assert not decision.promoted and ("floor" in decision.reason or "ceiling" in decision.reason)
    assert aliases(client, NAME) == {CHAMPION: v1, CHALLENGER: v2}


def broken(version):
    raise OSError("test_set is unreadable")


@pytest.mark.parametrize(
    "failure, message",
    [
        ("challenger raises", "OSError: test_set is unreadable"),
        ("champion raises", "OSError: test_set is unreadable"),
        ("challenger gives NaN", "auc of v3 is nan, not a finite number (is the test set empty?)"),
    ],
)
def test_a_failing_evaluation_moves_no_alias(models, mlflow_store, NAME, failure, message):
    client = mlflow_store.client
    v1, v2, v3 = (register(client, NAME, models["classification"]["good"]) for _ in range(3))
    gate(client, NAME, v1, "auc", {v1: 0.8}.__getitem__, CLS)
    gate(client, NAME, v2, "auc", {v1: 0.8, v2: 0.7}.__getitem__, CLS)
    before = aliases(client, NAME)
    assert before == {CHAMPION: v1, CHALLENGER: v2}

    def evaluate_version(v):
        if (failure.startswith("challenger") and v == v3) or (failure == "champion raises" and v == v1):
            return broken(v) if "raises" in failure else math.nan
        return 0.95

    with pytest.raises(GateEvaluationError) as raised:
        gate(client, NAME, v3, "auc", evaluate_version, CLS)
    assert str(raised.value) == (
        f"gate for {NAME} v{v3}: evaluation failed: "
        f"{'ValueError: ' if 'NaN' in failure else ''}{message}; "
        f"the aliases are unchanged (@champion: v{v1})"
    )
    assert aliases(client, NAME) == before
    tags = client.get_model_version(NAME, v3).tags
    assert tags["gate.decision"] == "failed" and message in tags["gate.reason"]


# --- compare-and-set: @champion moved by someone else during the gate --------------------------------------------


def test_the_gate_judges_again_when_the_champion_moves_during_the_evaluation(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = (register(client, NAME, models["classification"]["good"]) for _ in range(3))
    values = {v1: 0.70, v2: 0.90, v3: 0.80}
    gate(client, NAME, v1, "auc", values.__getitem__, CLS)
    evaluated = []

    def evaluate_version(v):
        evaluated.append(v)
        if v == v3:  # while the challenger is evaluated, a rollback (another client) points @champion at v2
            MlflowClient(mlflow_store.tracking_uri).set_registered_model_alias(NAME, CHAMPION, v2)
        return values[v]

    decision = gate(client, NAME, v3, "auc", evaluate_version, CLS)

    assert evaluated == [v3, v1, v2]  # v3 beat v1, but v1 was no longer the champion: judged again, v3 once only
    assert (decision.promoted, decision.rounds, decision.champion_version, decision.champion_value) == (
        False,
        2,
        v2,
        0.90,
    )
    assert decision.reason == f"auc 0.800000 does not beat champion v{v2} (0.900000) by more than 0.01"
    assert aliases(client, NAME) == {CHAMPION: v2, CHALLENGER: v3}
    tags = client.get_model_version(NAME, v3).tags
    assert {
        k: tags[k]
        for k in ("gate.decision", "gate.rounds", "gate.champion_version", "gate.champion_value", "gate.reason")
    } == {
        "gate.decision": "rejected",
        "gate.rounds": "2",
        "gate.champion_version": v2,
        "gate.champion_value": "0.900000",
        "gate.reason": decision.reason,
    }
    assert client.get_model_version(NAME, v1).tags["gate.rounds"] == "1"


def test_the_gate_gives_up_when_the_champion_moves_every_round(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3, v4, v5 = (register(client, NAME, models["classification"]["good"]) for _ in range(5))
    values = {v1: 0.70, v2: 0.72, v3: 0.74, v4: 0.76, v5: 0.90}
    gate(client, NAME, v1, "auc", values.__getitem__, CLS)
    other = MlflowClient(mlflow_store.tracking_uri)
    moves = iter([v2, v3, v4, v1])
    evaluated = []

    def evaluate_version(v):  # every evaluation, another writer moves @champion again
        evaluated.append(v)
        other.set_registered_model_alias(NAME, CHAMPION, next(moves))
        return values[v]

    with pytest.raises(GateConflictError) as raised:
        gate(client, NAME, v5, "auc", evaluate_version, CLS)

    assert str(raised.value) == (
        f"gate for {NAME} v{v5}: @champion moved during each of the 3 evaluation rounds (v{v1} -> v{v3} -> v{v4} -> v{v1}): "
        f"another gate or a rollback is moving it; the gate moved no alias (@champion: v{v1}). "
        "Run the gate again once it is done."
    )
    assert evaluated == [v5, v1, v3, v4]
    assert aliases(client, NAME) == {CHAMPION: v1}  # the other writer's last move; no @challenger, no promotion
    tags = client.get_model_version(NAME, v5).tags
    assert (tags["gate.decision"], tags["gate.rounds"]) == ("conflict", "3")
    assert (
        tags["gate.reason"]
        == f"@champion moved during each of the 3 evaluation rounds (v{v1} -> v{v3} -> v{v4} -> v{v1})"
    )


class RacingClient(MlflowClient):
    """A real client: right after it writes the tag `champion.set_by`, another writer moves @champion to `move_to`
    (a gate promoting a version between set_champion's first read and its alias write)."""

    def __init__(self, tracking_uri, move_to):
        super().__init__(tracking_uri)
        self.move_to = move_to

    def set_model_version_tag(self, name, version, key, value):
        super().set_model_version_tag(name, version, key, value)
        if key == "champion.set_by" and self.move_to:
            MlflowClient(self.tracking_uri).set_registered_model_alias(name, CHAMPION, self.move_to)
            self.move_to = None


def test_rollback_refuses_to_overwrite_a_champion_moved_meanwhile(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])
    v4 = register(client, NAME, models["classification"]["good"])
    client.set_model_version_tag(NAME, v1, "champion.reason", "an earlier rollback")
    racing = RacingClient(mlflow_store.tracking_uri, move_to=v4)

    with pytest.raises(ChampionMovedError) as raised:
        set_champion(racing, NAME, v1, EXPECTED, requested_by="alice", reason="INC-43")

    assert str(raised.value) == (
        f"@champion of {NAME} moved from v{v2} to v{v4} while it was being set to v{v1} (another gate or rollback ran "
        f"meanwhile): it was left at v{v4}. Check why, then ask again."
    )
    assert aliases(client, NAME) == {CHAMPION: v4, CHALLENGER: v3}
    tags = client.get_model_version(NAME, v1).tags
    assert tags["champion.reason"] == "an earlier rollback"  # the tags written were taken back
    assert not {"champion.set_by", "champion.previous_version", "champion.set_at", "champion.dagster_run_id"} & set(
        tags
    )

    change = set_champion(racing, NAME, v1, EXPECTED, requested_by="alice", reason="INC-43")  # nobody races now
    assert (change.version, change.previous_version) == (v1, v4)
    assert aliases(client, NAME) == {CHAMPION: v1, CHALLENGER: v3}


# --- the gate, on real models evaluated on a real test set ------------------------------------------------------


@pytest.mark.parametrize("task, metric", [("classification", "auc"), ("regression", "rmse")])
def test_the_gate_on_real_evaluations_keeps_the_better_model(models, mlflow_store, NAME, task, metric):
    client = mlflow_store.client
    test = models[task]["test"]
    truth = {
        kind: evaluate(models[task][kind][2].transform(test), task, (metric,))[metric] for kind in ("good", "weak")
    }
    assert truth["good"] != truth["weak"]

    def evaluate_registered(v):
        return evaluate_version(NAME, v, test, task, metric)

    config = GateConfig(margin=0.001, floors={})
    good = register(client, NAME, models[task]["good"])
    weak = register(client, NAME, models[task]["weak"])
    good_again = register(client, NAME, models[task]["good"])
    decisions = [gate(client, NAME, v, metric, evaluate_registered, config) for v in (good, weak, good_again)]

    assert [d.promoted for d in decisions] == [True, False, False]  # first; worse; equal
    assert decisions[0].challenger_value == pytest.approx(truth["good"])
    assert decisions[1].challenger_value == pytest.approx(truth["weak"])
    assert decisions[1].champion_value == pytest.approx(truth["good"])
    assert decisions[2].challenger_value == pytest.approx(decisions[2].champion_value)
    assert aliases(client, NAME) == {CHAMPION: good, CHALLENGER: good_again}


# --- rollback and override ----------------------------------------------------------------------------------------

EXPECTED = model_signature(tiny_spec())


def champion_with_history(client, name, logged):
    """v1 promoted, v2 promoted over it, v3 rejected: @champion v2, @challenger v3."""
    v1, v2, v3 = (register(client, name, logged) for _ in range(3))
    values = {v1: 0.7, v2: 0.8, v3: 0.75}
    for v in (v1, v2, v3):
        gate(client, name, v, "auc", values.__getitem__, GateConfig(margin=0.0, floors={}))
    assert aliases(client, name) == {CHAMPION: v2, CHALLENGER: v3}
    return v1, v2, v3


def test_rollback_sets_the_champion_and_records_who_and_why(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])

    change = set_champion(
        client,
        NAME,
        int(v1),
        EXPECTED,
        requested_by="alice@example.com",
        reason="INC-42: v2 drifts",
        dagster_run_id="run-9",
    )

    assert (change.version, change.previous_version) == (v1, v2)
    assert str(champion_version(client, NAME).version) == v1  # what batch_predictions resolves
    assert aliases(client, NAME) == {CHAMPION: v1, CHALLENGER: v3}
    tags = client.get_model_version(NAME, v1).tags
    assert {
        k: tags[k]
        for k in ("champion.set_by", "champion.reason", "champion.previous_version", "champion.dagster_run_id")
    } == {
        "champion.set_by": "alice@example.com",
        "champion.reason": "INC-42: v2 drifts",
        "champion.previous_version": v2,
        "champion.dagster_run_id": "run-9",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", tags["champion.set_at"])

    # An override to the rejected challenger: it stops being @challenger.
    set_champion(client, NAME, v3, EXPECTED, requested_by="bob", reason="override")
    assert aliases(client, NAME) == {CHAMPION: v3}


def test_rollback_to_a_missing_version_is_refused(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])
    with pytest.raises(
        ModelVersionNotFoundError, match=re.escape(f"model {NAME} has no version 7 (its versions: [{v1}, {v2}, {v3}])")
    ):
        set_champion(client, NAME, 7, EXPECTED, requested_by="alice", reason="typo")
    with pytest.raises(
        ModelVersionNotFoundError, match=re.escape("model main.tiny.nothing_here has no version 1 (its versions: none)")
    ):
        set_champion(client, "main.tiny.nothing_here", 1, EXPECTED, requested_by="alice", reason="typo")
    assert aliases(client, NAME) == {CHAMPION: v2, CHALLENGER: v3}


def test_rollback_to_a_version_scoring_cannot_feed_is_refused(spark, models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])
    renamed = dataclasses.replace(tiny_spec(), categorical_features=("colour",))  # an older spec's column
    other = log_tiny_model(spark, mlflow_store.experiment_id(), spec=renamed)
    v4 = register(client, NAME, other)

    with pytest.raises(SignatureMismatchError) as raised:
        set_champion(client, NAME, v4, EXPECTED, requested_by="alice", reason="try the old one")

    assert str(raised.value) == (
        f"{NAME} v{v4} cannot be @champion: its signature does not match what scoring gives it: "
        "it expects columns ['colour'] that scoring does not give (it gives ['color', 'x1', 'x2'])"
    )
    assert aliases(client, NAME) == {CHAMPION: v2, CHALLENGER: v3}
    assert "champion.set_by" not in client.get_model_version(NAME, v4).tags


def test_rollback_without_who_or_why_is_refused(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])
    with pytest.raises(
        ValueError, match=re.escape(f"setting @champion of {NAME} needs who asks (requested_by) and why (reason)")
    ):
        set_champion(client, NAME, v1, EXPECTED, requested_by="alice", reason=" ")
    assert aliases(client, NAME) == {CHAMPION: v2, CHALLENGER: v3}


# --- rollback proves that the version loads and scores ------------------------------------------------------------


def test_rollback_verifies_that_the_version_loads_and_scores(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])
    sample = models["classification"]["test"].limit(100)
    verified = []

    def verify(uri):
        verified.append((uri, smoke_score(uri, sample, tiny_spec())))

    change = set_champion(client, NAME, v1, EXPECTED, requested_by="alice", reason="INC-44", verify=verify)

    assert verified == [(f"models:/{NAME}/{v1}", sample.count())]  # every test row got a finite prediction
    assert (change.version, change.previous_version) == (v1, v2)
    assert aliases(client, NAME) == {CHAMPION: v1, CHALLENGER: v3}


def model_files(client, name, version) -> Path:
    """The folder holding a version's model files (MLmodel, sparkml/, ...) in the local artifact store: the
    `model` folder of its run's artifacts (log_tiny_model logs it there)."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    source = client.get_model_version(name, version).source
    folder = Path(RunsArtifactRepository.get_underlying_uri(source).removeprefix("file://"))
    assert (folder / "MLmodel").is_file() and (folder / "sparkml").is_dir()
    return folder


@pytest.mark.parametrize("damage", ["model data deleted", "whole folder deleted"])
def test_rollback_to_a_version_whose_artifacts_are_gone_is_refused(spark, models, mlflow_store, NAME, damage):
    client = mlflow_store.client
    v1, v2, v3 = champion_with_history(client, NAME, models["classification"]["good"])
    v4 = register(client, NAME, log_tiny_model(spark, mlflow_store.experiment_id()))  # its own files, to delete
    folder = model_files(client, NAME, v4)
    shutil.rmtree(folder / "sparkml" if damage == "model data deleted" else folder)
    sample = models["classification"]["test"].limit(100)
    verified = []

    def verify(uri):
        verified.append(uri)
        return smoke_score(uri, sample, tiny_spec())

    with pytest.raises(ModelLoadError) as raised:
        set_champion(client, NAME, v4, EXPECTED, requested_by="alice", reason="INC-45", verify=verify)

    uri = f"models:/{NAME}/{v4}"
    if damage == "model data deleted":  # MLmodel is there, so the signature check passes; loading fails
        assert verified == [uri]
        assert re.fullmatch(
            re.escape(f"model {uri} cannot be loaded: AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/")
            + r"\S+/sparkml/metadata\. SQLSTATE: 42K03"
            + re.escape(". Its artifacts are missing or damaged: it cannot serve."),
            str(raised.value),
        )
    else:  # not even MLmodel: refused before verify
        assert verified == []
        assert str(raised.value) == (
            f"model {uri} cannot be loaded: MlflowException: Failed to download artifacts from path 'MLmodel', please "
            "ensure that the path is correct. Its artifacts are missing or damaged: it cannot be @champion."
        )
    assert aliases(client, NAME) == {CHAMPION: v2, CHALLENGER: v3}
    assert not [k for k in client.get_model_version(NAME, v4).tags if k.startswith("champion.")]


def test_a_sample_the_model_cannot_score_is_a_model_load_error(models, mlflow_store, NAME):
    client = mlflow_store.client
    v1 = register(client, NAME, models["classification"]["good"])
    uri = f"models:/{NAME}/{v1}"
    test = models["classification"]["test"]
    assert smoke_score(uri, test.limit(7), tiny_spec()) == 7
    with pytest.raises(ModelLoadError) as raised:
        smoke_score(uri, test.drop("x1").limit(7), tiny_spec())
    assert str(raised.value).startswith(f"model {uri} loads but cannot score the sample: ")
    assert "IllegalArgumentException: [FIELD_NOT_FOUND] No such struct field `x1`" in str(raised.value)
    with pytest.raises(ModelLoadError) as raised:
        smoke_score(uri, test.limit(0), tiny_spec())
    assert str(raised.value) == f"model {uri}: the sample has no rows, so nothing shows that it can score"
