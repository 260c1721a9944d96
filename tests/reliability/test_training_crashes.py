"""A training run SIGKILLed (its whole group: the CLI and its JVM) during its Optuna study, its rerun during its
registration, and the next rerun succeeds: real `dagster job execute` processes on a deployment of their own
(tests/reliability/training.py). Last: the killed runs stay STARTED in the instance, and the daemon's run monitoring
fails them, which frees the promotion queue."""

from __future__ import annotations

import signal
import time

import optuna
import pytest
from delta.tables import DeltaTable

from assets.splits import SPLIT_TABLES
from ml.registry import CHALLENGER, CHAMPION, GateConfig, decide
from orchestration.rollback import MAX_RUNTIME_TAG, PROMOTION_MAX_RUNTIME_SECONDS
from tests.reliability.conftest import DAYS
from tests.reliability.processes import REGISTERED, materializations, run_id_of
from tests.reliability.training import World, assert_trained_on_its_own_splits, write_splits_in_process

pytestmark = pytest.mark.reliability


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
    write_splits_in_process(world)  # this module's deployment has not trained yet
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
