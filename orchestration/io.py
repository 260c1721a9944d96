"""The code location's IO manager: each run's asset values (the splits' Delta versions, the tuned pipeline's handoff)
kept apart, so two runs at once never read each other's.

Dagster's default filesystem IO manager keeps one file per asset, `<storage>/<asset>`, written by whichever run
wrote last. Two training runs at once (a manual one and the drift sensor's) would then hand each other their
values between two steps: a run's tuned_pipeline could train on the split versions of the other run, and its
registered_model register the other run's model. Here a value lives at `<storage>/runs/<run id>/<asset>` (an
op's output, which has no asset key, at `<storage>/ops/<run id>/<step>/<output>`):
- a step's output is written under its own run;
- an input that a step of the same run produced is read from that run (re-executed, from the parent run that
  produced it, as Dagster tells);
- an input this run did not produce (`registered_model` materialized alone) is read from the run that
  materialized the asset last, from the event log.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    DagsterInvariantViolationError,
    InitResourceContext,
    InputContext,
    IOManager,
    OutputContext,
)
from pydantic import Field

from assets.dagster_adapter import RUN_ID_PLACEHOLDER


class RunValuesIOManager(ConfigurableIOManagerFactory):
    """Pickles under the instance's storage folder (as Dagster's FilesystemIOManager), one folder per run."""

    base_dir: str | None = Field(default=None, description="empty: the Dagster instance's storage folder")

    def create_io_manager(self, context: InitResourceContext) -> IOManager:
        return _PerRun(Path(self.base_dir or context.instance.storage_directory()))


class _PerRun(IOManager):
    def __init__(self, base_dir: Path):
        self.base_dir = base_dir

    def path(self, context: InputContext | OutputContext) -> Path:
        if not context.has_asset_key:  # an op's output (rollback_job, reproduce_job): run id, step, output name
            output = context if isinstance(context, OutputContext) else context.upstream_output
            return self.base_dir.joinpath("ops", *output.get_identifier())
        return self.base_dir.joinpath("runs", producing_run(context), *context.asset_key.path)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: a run killed mid-write leaves no half pickle for a re-execution to read.
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            try:
                pickle.dump(obj, tmp, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:
                os.unlink(tmp.name)  # an unpicklable value leaves no stray temporary file
                raise
        os.replace(tmp.name, path)
        context.add_output_metadata({"path": str(path)})

    def load_input(self, context: InputContext) -> Any:
        path = self.path(context)
        if not path.exists():
            what = context.asset_key.to_user_string() if context.has_asset_key else context.upstream_output.name
            raise DagsterInvariantViolationError(f"no value of {what} at {path}: the run that produced it kept none")
        with open(path, "rb") as fh:
            return pickle.load(fh)


def producing_run(context: InputContext | OutputContext) -> str:
    """The run whose value this is: the writer's own run, or for an input the run that produced it."""
    if isinstance(context, OutputContext):
        return context.run_id
    # A step of this run, or of the parent run of a re-execution, produced it; an asset that no step of the plan
    # produces gets a stand-in context whose run id is Dagster's placeholder.
    try:
        run_id = context.upstream_output.run_id
    except (AttributeError, DagsterInvariantViolationError):  # no upstream output, or no run recorded for it
        run_id = None
    if run_id and run_id != RUN_ID_PLACEHOLDER:
        return run_id
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None:
        raise DagsterInvariantViolationError(
            f"asset {context.asset_key.to_user_string()} was never materialized: there is no value to load"
        )
    return event.run_id
