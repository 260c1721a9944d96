"""Two training runs racing to promote, and a rollback landing while a gate evaluates: real `dagster job execute`
processes on one deployment (tests/reliability/training.py), in this order, each on the registry the previous one left:

1. two training runs race to promote (the CLI executes in its process: no run queue, only the gate's compare-and-set);
2. a rollback lands while a gate evaluates.

A gate "while it evaluates" is a process stopped with SIGSTOP (its whole group, the JVM included) once MLflow has
downloaded the first version it evaluates, i.e. after its first read of @champion: a real process, paused at a real
point of its work, with no hook in the code. The other process runs to its end meanwhile, then the gate continues.
"""

from __future__ import annotations

import pytest

from ml.registry import CHALLENGER, CHAMPION, GateConfig, decide
from tests.reliability.processes import REGISTERED, materializations, observations, run_id_of
from tests.reliability.training import (
    CONSTANT,
    GOOD,
    MARGIN,
    SHORT,
    assert_trained_on_its_own_splits,
    first_to_register,
    stopped_while_evaluating,
    wait_until,
)

pytestmark = pytest.mark.reliability


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
