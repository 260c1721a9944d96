"""What the tests of training and rollback runs as real processes share (`dagster job execute`, `dagster-daemon run`):
a deployment of their own per module (a Dagster instance with infra/dagster.yaml, a lakehouse with three real days of
features, an MLflow store and an Optuna storage), the fixed models whose quality is known, and the waits on a process.

The models are logistic regressions with fixed parameters, so their quality is known: `CONSTANT` (L1 penalty 1.0: no
coefficient survives, every row gets the same score, AUC 0.5) is clearly worse than `GOOD`, which is worse than
`SHORT` (one iteration) on this test day. The gate has no floor here (these tiny models are near chance); it
compares with the champion, with the default margin.

The modules are test_training_runs.py (two runs racing to promote; a rollback during a gate), test_training_queue.py
(the daemon's run queue) and test_training_crashes.py (SIGKILL mid-study and mid-registration): each on a deployment
of its own, so that two pytest workers run them at once (`make test-heavy`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from assets.splits import SPLIT_TABLES
from ml.datasets.flights import SPEC
from ml.registry import GateConfig
from orchestration.deployments import local_mlflow
from tests.reliability.conftest import DAYS
from tests.reliability.processes import MODEL, REGISTERED, Deployment, Process, deployment, materializations, run_id_of

MODULE = "orchestration.definitions"
SPLIT = {"end_date": DAYS[-1], "train_days": 1, "validation_days": 1, "test_days": 1}
GATE = {"floors": {}}
MARGIN = GateConfig().margin


def fixed(reg: float, elastic_net: float, max_iter: int = 50) -> dict:
    return {
        "logistic_regression": {
            "regParam": {"kind": "fixed", "value": reg},
            "elasticNetParam": {"kind": "fixed", "value": elastic_net},
            "maxIter": {"kind": "fixed", "value": max_iter},
        }
    }


CONSTANT, GOOD, SHORT = fixed(1.0, 1.0), fixed(0.001, 0.0), fixed(0.001, 0.0, max_iter=1)


def training_config(search_space: dict | None, n_trials: int = 1) -> dict:
    tuning = {"n_trials": n_trials, "algorithms": ["logistic_regression"]}
    if search_space:
        tuning["search_space"] = search_space
    return {
        "ops": {
            "splits": {"config": SPLIT},
            "tuned_pipeline": {"config": tuning},
            "registered_model": {"config": GATE},
        }
    }


@dataclass
class World:
    d: Deployment
    client: MlflowClient
    optuna_url: str

    def train(self, name: str, search_space: dict | None, n_trials: int = 1, tags: dict | None = None) -> Process:
        config = self.d.config(name, training_config(search_space, n_trials))
        extra = ["--tags", json.dumps(tags)] if tags else []
        return self.d.dagster(name, "job", "execute", "-m", MODULE, "-j", "training_job", "-c", str(config), *extra)

    def rollback(self, name: str, version: str, requested_by: str, reason: str) -> Process:
        op = {"config": {"version": int(version), "requested_by": requested_by, "reason": reason}}
        config = self.d.config(name, {"ops": {"set_champion_version": op}})
        return self.d.dagster(name, "job", "execute", "-m", MODULE, "-j", "rollback_job", "-c", str(config))

    def versions(self) -> list[str]:
        return sorted((str(v.version) for v in self.client.search_model_versions(f"name='{MODEL}'")), key=int)

    def aliases(self) -> dict[str, str]:
        if not self.client.search_registered_models(f"name='{MODEL}'"):
            return {}
        return {k: str(v) for k, v in self.client.get_registered_model(MODEL).aliases.items()}

    def tags(self, version: str, prefix: str = "gate.") -> dict[str, str]:
        return {k: v for k, v in self.client.get_model_version(MODEL, version).tags.items() if k.startswith(prefix)}

    def value(self, version: str) -> float:
        return float(self.tags(version)["gate.challenger_value"])


def wait_until(condition, proc: Process, what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.popen.poll() is None, f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"{proc.name}: no {what} within {timeout} s:\n{proc.tail()}"
        time.sleep(0.02)


def first_to_register(procs: list[Process], timeout: float = 900) -> tuple[Process, str]:
    """The process whose `registered <model> vN` line comes first, and N."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            found = REGISTERED.search(p.text())
            if found:
                return p, found.group(1)
            assert p.popen.poll() is None, f"{p.name} exited ({p.popen.returncode}) before registering:\n{p.tail()}"
        time.sleep(0.05)
    raise AssertionError(f"no process registered a version within {timeout} s")


def stopped_while_evaluating(world: World, proc: Process, version: str) -> None:
    """SIGSTOP `proc` once its gate has begun evaluating `version` (it has read @champion); nothing decided yet."""
    proc.wait_for_model_download(nth=2)  # the export's load of the version, then the gate's
    proc.stop()
    assert world.tags(version) == {}, f"{proc.name} had decided already: {world.tags(version)}"


def assert_trained_on_its_own_splits(world: World, proc: Process, version: str) -> dict[str, dict]:
    """The run trained, registered and gated on the split versions that its own splits step wrote."""
    run_id = run_id_of(proc)
    meta = materializations(world.d.instance(), run_id)
    written = {t: meta[t]["delta_version"] for t in SPLIT_TABLES}
    assert {t: meta["tuned_pipeline"][f"{t}_delta_version"] for t in SPLIT_TABLES} == written
    assert meta["registered_model"]["test_set_delta_version"] == written["test_set"]
    assert str(meta["registered_model"]["model_version"]) == version
    tags = world.client.get_model_version(MODEL, version).tags
    assert tags["dagster.run_id"] == run_id and tags["mlflow.run_id"] == meta["tuned_pipeline"]["mlflow_run_id"]
    assert {t: tags[f"input.{t}.delta_version"] for t in SPLIT_TABLES} == {t: str(v) for t, v in written.items()}
    return meta


def write_splits_in_process(world: World) -> None:
    """The split tables of SPLIT, written once by an in-process run on the deployment, as a deployment that has
    trained before holds them: a test can then check that a killed run leaves their earlier versions whole."""
    from dagster import materialize

    from assets.splits import splits
    from tests.conftest import world_definitions
    from tests.world import ALL_ASSETS

    _, resources = world_definitions(world.d.state)
    resources = {**resources, "lakehouse": resources["lakehouse"].replaced(source_location=str(world.d.source))}
    result = materialize(
        ALL_ASSETS,
        selection=[splits],
        instance=world.d.instance(),
        resources=resources,
        run_config={"ops": {"splits": {"config": SPLIT}}},
    )
    assert result.success


def training_world(seeded_lakehouse, flights_source, tmp_path_factory) -> World:
    """A deployment of its own for a test module: the seeded lakehouse copied, and its stores created before two
    processes open them at once."""
    from tests.conftest import forget_mlflow_uris

    d = deployment(tmp_path_factory.mktemp("training"), flights_source.folder, seeded_lakehouse)
    # The stores exist before two processes open them at once, as in a deployment that has run before: the
    # Dagster instance's storage, MLflow's tables and experiment (as the local deployment makes it) and Optuna's.
    assert d.instance().get_runs() == []
    # The deployment's own store: `mlflow.set_tracking_uri` in this process (an earlier module's deployment, a
    # world's run) exported MLFLOW_TRACKING_URI, which the local deployment would take for a server to use.
    forget_mlflow_uris()
    resource = local_mlflow(SPEC, d.state)
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        resource.experiment_id()
    finally:
        mlflow.set_tracking_uri(tracking)  # experiment_id() configured this process's URIs: give them back
        mlflow.set_registry_uri(registry)
    optuna_url = f"sqlite:///{d.state / 'optuna' / 'studies.db'}"
    (d.state / "optuna").mkdir()
    optuna.storages.RDBStorage(optuna_url)
    return World(d, MlflowClient(resource.tracking_uri, resource.tracking_uri), optuna_url)
