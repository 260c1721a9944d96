"""Training and rollback runs as real processes (`dagster job execute`, `dagster-daemon run`) on one deployment: a
Dagster instance with infra/dagster.yaml, a lakehouse with three real days of features (tests/reliability/conftest.py),
an MLflow store and an Optuna storage. The tests run in this order, each on the registry the previous one left:

1. two training runs race to promote (the CLI executes in its process: no run queue, only the gate's compare-and-set);
2. a rollback lands while a gate evaluates;
3. the daemon's run queue serializes two training runs (the `flightline/promotion` tag limit of infra/dagster.yaml);
4. a training run is SIGKILLed during its Optuna study, its rerun during its registration, and the next rerun succeeds.
   (Last: a run killed outside the daemon stays STARTED in the instance, and the queue would count it as running.)

A gate "while it evaluates" is a process stopped with SIGSTOP (its whole group, the JVM included) once MLflow has
downloaded the first version it evaluates, i.e. after its first read of @champion: a real process, paused at a real
point of its work, with no hook in the code. The other process runs to its end meanwhile, then the gate continues.

The models are logistic regressions with fixed parameters, so their quality is known: `CONSTANT` (L1 penalty 1.0: no
coefficient survives, every row gets the same score, AUC 0.5) is clearly worse than `GOOD`, which is worse than
`SHORT` (one iteration) on this test day. The gate has no floor here (these tiny models are near chance); it
compares with the champion, with the default margin.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass

import mlflow
import optuna
import pytest
from delta.tables import DeltaTable
from mlflow.tracking import MlflowClient

from assets.splits import SPLIT_TABLES
from ml.datasets.flights import SPEC
from ml.registry import CHALLENGER, CHAMPION, GateConfig, decide
from orchestration.deployments import local_mlflow
from orchestration.rollback import MAX_RUNTIME_TAG, PROMOTION_MAX_RUNTIME_SECONDS, PROMOTION_TAG
from tests.reliability.conftest import DAYS
from tests.reliability.processes import (
    MODEL,
    REGISTERED,
    Deployment,
    Process,
    deployment,
    materializations,
    observations,
    run_id_of,
)

pytestmark = pytest.mark.reliability

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


@pytest.fixture(scope="module")
def world(seeded_lakehouse, flights_source, tmp_path_factory):
    d = deployment(tmp_path_factory.mktemp("training"), flights_source.folder, seeded_lakehouse)
    # The stores exist before two processes open them at once, as in a deployment that has run before: the
    # Dagster instance's storage, MLflow's tables and experiment (as the local deployment makes it) and Optuna's.
    assert d.instance().get_runs() == []
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
    yield World(d, MlflowClient(resource.tracking_uri, resource.tracking_uri), optuna_url)


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


def test_two_training_runs_racing_to_promote_end_with_the_better_champion(world):
    assert world.client.search_registered_models() == []
    instance = world.d.instance()
    test_set = world.d.state / "lakehouse" / "main" / "flights" / "test_set"
    good = world.train("race-good", GOOD)
    constant = None
    try:
        # Pinned splits: `constant` writes train_set and validation_set while `good` is stopped in the middle of its
        # test_set write (its train_set and validation_set are written, its values stored). `good` must still train,
        # and be gated, on the split versions it wrote itself.
        good.wait_for(r"splits - validation_set: \d+ rows, Delta v\d+")
        wait_until(lambda: any(test_set.glob("*.parquet")), good, "its test_set write")
        good.stop()  # holding test_set's writer lock, in the JVM
        constant = world.train("race-constant", CONSTANT)
        constant_run = run_id_of(constant)
        wait_until(lambda: "validation_set" in materializations(instance, constant_run), constant, "validation_set")
        good.resume()  # its test_set commit; then `constant`, which waited for the lock, writes its own
        first, first_v = first_to_register([constant, good])
        stopped_while_evaluating(world, first, first_v)  # it read @champion: none yet
        other = good if first is constant else constant
        other.succeeded()  # registers, finds no champion, is promoted
        other_v = REGISTERED.search(other.text()).group(1)
        assert world.aliases() == {CHAMPION: other_v}
        first.resume()  # its gate goes on: @champion is no longer what it read
        first.succeeded()
    finally:
        for p in (constant, good):
            if p is not None:
                p.end()

    assert world.versions() == ["1", "2"] and {first_v, other_v} == {"1", "2"}
    good_v = other_v if other is good else first_v
    constant_v = first_v if good_v == other_v else other_v
    assert world.value(constant_v) == 0.5 and world.value(good_v) > 0.5 + MARGIN  # as built

    # The one gated while the other was stopped: first version, promoted against no champion.
    other_tags = world.tags(other_v)
    assert (other_tags["gate.decision"], other_tags["gate.rounds"], other_tags["gate.champion_version"]) == (
        "promoted",
        "1",
        "",
    )
    assert (
        other_tags["gate.reason"] == f"first version to pass the thresholds (auc {other_tags['gate.challenger_value']})"
    )
    # The one stopped mid-gate: @champion moved (none -> other) before its compare-and-set, so it was judged again,
    # against the new champion, on its own test set.
    tags = world.tags(first_v)
    promoted, reason = decide("auc", world.value(first_v), other_v, world.value(other_v), GateConfig(floors={}))
    assert (tags["gate.rounds"], tags["gate.champion_version"], tags["gate.champion_value"]) == (
        "2",
        other_v,
        other_tags["gate.challenger_value"],  # the other version scores the same on either run's (identical) test set
    )
    assert (tags["gate.decision"], tags["gate.reason"]) == ("promoted" if promoted else "rejected", reason)
    # The better model is champion, whatever the order; the other is challenger only if it lost.
    assert world.aliases() == {CHAMPION: good_v, **({CHALLENGER: constant_v} if first_v == constant_v else {})}

    instance = world.d.instance()
    for proc, version in ((first, first_v), (other, other_v)):
        meta = assert_trained_on_its_own_splits(world, proc, version)["registered_model"]
        version_tags = world.tags(version)
        assert (meta["gate_decision"], meta["gate_reason"]) == (
            version_tags["gate.decision"],
            version_tags["gate.reason"],
        )
        assert meta["previous_champion_version"] == version_tags["gate.champion_version"]
        assert f"{meta['challenger_metric']:.6f}" == version_tags["gate.challenger_value"]
    assert {r.dagster_run.status.value for r in instance.get_run_records()} == {"SUCCESS"}
    print(
        f"\nrace: {first.name} registered v{first_v} first and was stopped mid-gate; {other.name} v{other_v} was "
        f"promoted meanwhile; v{first_v} re-evaluated (rounds 2) against v{other_v}: {tags['gate.decision']}; "
        f"champion v{good_v} (auc {world.value(good_v):.6f}), CONSTANT auc 0.5"
    )


def test_a_rollback_landing_during_a_gate_is_judged_against_not_overwritten(world):
    aliases = world.aliases()
    assert CHAMPION in aliases and len(world.versions()) >= 2, "runs after the race test: it makes two versions"
    champion = aliases[CHAMPION]
    earlier = next(v for v in world.versions() if v != champion)  # the version an operator rolls back to
    before = set(world.versions())
    training = world.train("gate-short", SHORT)
    rollback = None
    try:
        version = training.wait_for(REGISTERED).group(1)
        stopped_while_evaluating(world, training, version)  # it read @champion = champion
        assert world.aliases() == aliases
        rollback = world.rollback("rollback", earlier, "oncall@example.com", "INC-21: roll back during a gate")
        rollback.succeeded()
        assert world.aliases()[CHAMPION] == earlier
        training.resume()
        training.succeeded()
    finally:
        for p in (training, rollback):
            if p is not None:
                p.end()

    assert set(world.versions()) == before | {version}
    rolled = world.tags(earlier, "champion.")
    assert (rolled["champion.set_by"], rolled["champion.reason"], rolled["champion.previous_version"]) == (
        "oncall@example.com",
        "INC-21: roll back during a gate",
        champion,
    )
    assert rolled["champion.dagster_run_id"] == run_id_of(rollback)
    [seen] = observations(world.d.instance(), run_id_of(rollback))
    assert (seen["action"], seen["champion_version"], seen["previous_champion_version"]) == (
        "set_champion",
        earlier,
        champion,
    )

    # The gate saw @champion move (champion -> earlier) and judged the new version again, against the rolled-back
    # champion, not the one it first read: the rollback is in its record, and the rules decide from there.
    tags = world.tags(version)
    rolled_value = f"{world.value(earlier):.6f}"
    assert (tags["gate.rounds"], tags["gate.champion_version"], tags["gate.champion_value"]) == (
        "2",
        earlier,
        rolled_value,
    )
    promoted, reason = decide("auc", world.value(version), earlier, world.value(earlier), GateConfig(floors={}))
    assert (tags["gate.decision"], tags["gate.reason"]) == ("promoted" if promoted else "rejected", reason)
    assert world.aliases() == ({CHAMPION: version} if promoted else {CHAMPION: earlier, CHALLENGER: version})
    assert promoted  # SHORT beats the rolled-back version on this test day
    meta = assert_trained_on_its_own_splits(world, training, version)["registered_model"]
    assert (meta["gate_decision"], meta["previous_champion_version"], meta["champion_version"]) == (
        "promoted",
        earlier,
        version,
    )
    print(
        f"\nrollback v{champion} -> v{earlier} landed while the gate of v{version} evaluated; the gate re-evaluated "
        f"(rounds 2) against v{earlier}: {tags['gate.decision']} ({tags['gate.reason']})"
    )


def test_the_daemon_runs_two_training_runs_of_one_model_one_after_the_other(world):
    """`dagster job launch` submits to the instance's run queue (QueuedRunCoordinator, infra/dagster.yaml); the daemon
    dequeues a run only while no other run with the same `flightline/promotion` tag is in progress."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    instance = world.d.instance()
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"  # Dagster's default, with our limit:
    assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits == [
        {"key": PROMOTION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    known = {r.run_id for r in instance.get_runs()}
    champion = world.aliases().get(CHAMPION, "")  # the race test's, or none when this test runs alone
    daemon = world.d.start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")
    try:
        daemon.wait_for(r"QueuedRunCoordinatorDaemon", timeout=300)
        config = world.d.config("queued", training_config(GOOD))
        for n in (1, 2):
            launch = world.d.dagster(
                f"launch-{n}", "job", "launch", "-w", "workspace.yaml", "-j", "training_job", "-c", str(config)
            )
            launch.succeeded(timeout=300)
        runs = sorted(
            (r for r in instance.get_runs(RunsFilter(job_name="training_job")) if r.run_id not in known),
            key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp,
        )
        assert len(runs) == 2
        ids = [r.run_id for r in runs]
        seen = set()
        deadline = time.monotonic() + 1500
        while True:
            statuses = tuple(instance.get_run_by_id(i).status for i in ids)
            seen.add(statuses)
            if all(
                s in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED) for s in statuses
            ):
                break
            assert time.monotonic() < deadline and daemon.popen.poll() is None, f"{statuses}:\n{daemon.tail()}"
            time.sleep(0.5)
    finally:
        daemon.shut_down()

    assert statuses == (DagsterRunStatus.SUCCESS, DagsterRunStatus.SUCCESS)
    assert (DagsterRunStatus.STARTED, DagsterRunStatus.QUEUED) in seen  # the second waited in the queue
    records = [instance.get_run_record_by_id(i) for i in ids]
    assert all(r.dagster_run.tags[PROMOTION_TAG] == SPEC.model_name for r in records)
    assert records[1].start_time >= records[0].end_time  # started only after the first had ended

    def when(run_id, event_type):
        [record] = instance.get_records_for_run(run_id, of_type=event_type).records
        return record.event_log_entry.timestamp

    # The second was in the queue before the first ended, and was launched (RUN_STARTING) only after it ended.
    assert when(ids[1], DagsterEventType.RUN_ENQUEUED) < when(ids[0], DagsterEventType.RUN_SUCCESS)
    assert when(ids[1], DagsterEventType.RUN_STARTING) >= when(ids[0], DagsterEventType.RUN_SUCCESS)
    decisions = []
    for run_id in ids:
        meta = materializations(instance, run_id)["registered_model"]
        version = str(meta["model_version"])
        tags = world.tags(version)
        assert tags["gate.rounds"] == "1"  # one after the other: no gate saw @champion move
        decisions.append((version, tags["gate.champion_version"], tags["gate.decision"]))
    assert decisions[0][1] == champion
    assert decisions[1][1] == (decisions[0][0] if decisions[0][2] == "promoted" else champion)
    print(
        f"\ndaemon: run 2 queued while run 1 ran; run 1 {records[0].start_time:.0f}-{records[0].end_time:.0f}, "
        f"run 2 started {records[1].start_time - records[0].end_time:.1f} s after run 1 ended; gates {decisions}"
    )


def split_state(spark, world: World) -> dict[str, tuple[int, int]]:
    """Each split table's current version and its row count at that version."""
    state = {}
    for t in SPLIT_TABLES:
        path = str(world.d.state / "lakehouse" / "main" / "flights" / t)
        version = DeltaTable.forPath(spark, path).history(1).first()["version"]
        state[t] = (version, spark.read.format("delta").option("versionAsOf", version).load(path).count())
    return state


def split_history(spark, world: World, table: str) -> list[int]:
    path = str(world.d.state / "lakehouse" / "main" / "flights" / table)
    return sorted(r["version"] for r in DeltaTable.forPath(spark, path).history().select("version").collect())


def study_trials(storage: optuna.storages.RDBStorage, name: str) -> list[tuple[int, str, float | None]]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state.name, t.value) for t in study.get_trials(deepcopy=False)]


def test_training_killed_mid_study_then_mid_registration_resumes_and_leaves_the_champion(spark, world, flights_source):
    storage = optuna.storages.RDBStorage(world.optuna_url)
    studies_before = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    aliases, versions = world.aliases(), world.versions()
    labelled = flights_source.labelled_per_day
    rows = dict(zip(SPLIT_TABLES, (labelled[day] for day in DAYS), strict=True))  # train, validation, test: a day each
    before = split_state(spark, world)
    assert {t: n for t, (_, n) in before.items()} == rows

    # 1. SIGKILL during the study: trial 0 is done (in the storage), trial 1 of 3 is running. The killed runs get a
    # short maximum runtime (step 4: run monitoring fails them once it has passed); the others keep the job's.
    short = {MAX_RUNTIME_TAG: "20"}
    first = world.train("study-killed", None, n_trials=3, tags=short)
    try:
        first.wait_for(r"trial 1/3 COMPLETE")
        deadline = time.monotonic() + 300
        while True:
            new = {s.study_name for s in optuna.get_all_study_summaries(storage)} - studies_before
            trials = study_trials(storage, next(iter(new))) if new else []
            if [state for _, state, _ in trials] == ["COMPLETE", "RUNNING"]:
                break
            assert time.monotonic() < deadline and first.popen.poll() is None, f"trials {trials}:\n{first.tail()}"
            time.sleep(0.05)
        first.kill()
    finally:
        first.end()
    assert first.popen.returncode == -signal.SIGKILL
    [study] = new
    first_trial = trials[0]
    meta = materializations(world.d.instance(), run_id_of(first))
    assert set(meta) == set(SPLIT_TABLES)  # the splits step was done; tuned_pipeline was not
    after = split_state(spark, world)
    assert after == {t: (meta[t]["delta_version"], rows[t]) for t in SPLIT_TABLES}  # its commits are whole
    for t in SPLIT_TABLES:  # and the versions before it are still there, with the same rows
        assert split_history(spark, world, t) == list(range(after[t][0] + 1))
        path = str(world.d.state / "lakehouse" / "main" / "flights" / t)
        assert spark.read.format("delta").option("versionAsOf", before[t][0]).load(path).count() == before[t][1]
    assert (world.versions(), world.aliases()) == (versions, aliases)  # nothing registered, nothing moved

    # 2. The rerun resumes the study (2 new trials of 3) and is SIGKILLed while its gate evaluates the new version.
    second = world.train("registration-killed", None, n_trials=3, tags=short)
    try:
        orphan = second.wait_for(REGISTERED).group(1)
        second.wait_for_model_download()
        second.kill()
    finally:
        second.end()
    tuned = materializations(world.d.instance(), run_id_of(second))["tuned_pipeline"]
    assert tuned["study_name"] == study
    assert (tuned["n_new_trials"], tuned["n_complete_trials"], tuned["n_trials"]) == (2, 3, 4)  # 4: the killed one
    trials = study_trials(storage, study)
    assert trials[0] == first_trial and [n for n, _, _ in trials] == [0, 1, 2, 3]
    # The killed trial stays RUNNING until its heartbeat is 90 s old; a later run then marks it FAIL.
    assert trials[1][1] in ("RUNNING", "FAIL") and [s for _, s, _ in trials[2:]] == ["COMPLETE", "COMPLETE"]
    assert world.versions() == [*versions, orphan]
    assert world.tags(orphan) == {}  # registered, never judged
    assert world.aliases() == aliases  # and neither @champion nor @challenger
    for t, (version, n) in split_state(spark, world).items():
        assert n == rows[t] and split_history(spark, world, t) == list(range(version + 1))

    # 3. The next rerun succeeds: the study is complete (no new trial), the new version is gated as usual.
    third = world.train("rerun", None, n_trials=3)
    try:
        third.succeeded()
    finally:
        third.end()
    meta = assert_trained_on_its_own_splits(world, third, str(int(orphan) + 1))
    tuned = meta["tuned_pipeline"]
    assert (tuned["study_name"], tuned["n_new_trials"], tuned["n_complete_trials"]) == (study, 0, 3)
    version = str(meta["registered_model"]["model_version"])
    assert world.versions() == [*versions, orphan, version]
    tags = world.tags(version)
    champion = aliases.get(CHAMPION)  # the earlier tests', or none when this test runs alone
    promoted, reason = decide(
        "auc", world.value(version), champion, world.value(champion) if champion else None, GateConfig(floors={})
    )
    assert (tags["gate.rounds"], tags["gate.champion_version"], tags["gate.reason"]) == ("1", champion or "", reason)
    assert world.aliases() == ({CHAMPION: version} if promoted else {CHAMPION: champion, CHALLENGER: version})
    assert world.tags(orphan) == {} and orphan not in world.aliases().values()

    # 4. The killed runs are still STARTED: their processes died with them. The daemon's run monitoring
    # (infra/dagster.yaml) fails each once it is past its maximum runtime, which frees the promotion queue.
    from dagster import DagsterRunStatus

    instance = world.d.instance()
    killed = [run_id_of(first), run_id_of(second)]
    assert [instance.get_run_by_id(r).status for r in killed] == [DagsterRunStatus.STARTED] * 2
    assert instance.get_run_by_id(run_id_of(third)).tags[MAX_RUNTIME_TAG] == str(PROMOTION_MAX_RUNTIME_SECONDS)
    daemon = world.d.start("monitor", "dagster-daemon", "run", "-w", "workspace.yaml")
    try:
        deadline = time.monotonic() + 300
        while {instance.get_run_by_id(r).status for r in killed} != {DagsterRunStatus.FAILURE}:
            assert time.monotonic() < deadline and daemon.popen.poll() is None, daemon.tail()
            time.sleep(1)
    finally:
        daemon.shut_down()
    assert instance.get_run_by_id(run_id_of(third)).status == DagsterRunStatus.SUCCESS  # a finished run is untouched
    print(
        f"\nstudy {study}: killed in trial 2 of 3 (trial 0 kept: {first_trial}); the rerun ran 2 new trials, was "
        f"killed while its gate evaluated v{orphan} (left ungated, no alias); the next rerun ran 0 new trials and "
        f"registered v{version}: {tags['gate.decision']}"
    )
