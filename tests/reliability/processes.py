"""Real `dagster` processes (the CLI, the daemon) on a temporary deployment: a Dagster instance (DAGSTER_HOME with
infra/dagster.yaml), a state folder (lakehouse, MLflow store, Optuna storage) and a source folder of a few real days.

Each process runs in a session of its own, so that its whole group (the CLI and the JVM it starts) can be stopped
(SIGSTOP), continued or killed (SIGKILL) at once, and writes its output to a log file of its own, which the tests
read to know where it is (Dagster's log lines: `registered <model> v3`, `trial 1/3 COMPLETE`, ...). Each has its own
temporary folder (TMPDIR) as well: MLflow downloads a model there to load it, which tells when a gate has begun
evaluating (`Process.wait_for_model_download`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestration.deployments import REPO_ROOT

BIN = Path(sys.executable).parent
# Short-lived JVMs start faster with the client compiler only and the serial collector; what they compute is the same.
# A process stopped (SIGSTOP) for minutes must not find its own local executor "lost" when it continues: Spark's
# heartbeat timeout (spark.network.timeout, 120 s) counts the pause, as it would a laptop's sleep.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dspark.network.timeout=3600s"
MODEL = "main.flights.arrival_delay"
REGISTERED = re.compile(rf"registered {re.escape(MODEL)} v(\d+)")


@dataclass
class Deployment:
    """The folders of one temporary deployment and the environment its processes get."""

    root: Path
    source: Path

    @property
    def home(self) -> Path:
        return self.root / "dagster"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def env(self, tmpdir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FLIGHTLINE_", "DAGSTER_"))}
        return {
            **env,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "FLIGHTLINE_STATE_DIR": str(self.state),
            "FLIGHTLINE_SOURCE_LOCATION": str(self.source),
            "PYTHONPATH": str(REPO_ROOT),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "JAVA_TOOL_OPTIONS": JVM_OPTIONS,
            "TMPDIR": str(tmpdir),
        }

    def config(self, name: str, run_config: dict) -> Path:
        path = self.root / "config" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(run_config, sort_keys=False))
        return path

    def start(self, name: str, program: str, *args: str) -> Process:
        """`program` (dagster, dagster-daemon) with `args`, from the repository root, in a session of its own."""
        log = self.root / "logs" / f"{name}.log"
        tmpdir = self.root / "tmp" / name
        log.parent.mkdir(parents=True, exist_ok=True)
        tmpdir.mkdir(parents=True)
        with open(log, "w") as out:
            popen = subprocess.Popen(
                [str(BIN / program), *args],
                cwd=REPO_ROOT,
                env=self.env(tmpdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Process(name, popen, log, tmpdir)

    def dagster(self, name: str, *args: str) -> Process:
        return self.start(name, "dagster", *args)

    def instance(self):
        from dagster import DagsterInstance

        return DagsterInstance.from_config(str(self.home))


def deployment(root: Path, source: Path, lakehouse: Path | None = None) -> Deployment:
    """A fresh deployment under `root`: the Dagster instance with infra/dagster.yaml, and a copy of `lakehouse`."""
    d = Deployment(root, source)
    d.home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "infra" / "dagster.yaml", d.home / "dagster.yaml")
    d.state.mkdir()
    if lakehouse is not None:
        shutil.copytree(lakehouse, d.state / "lakehouse")
    return d


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    tmpdir: Path
    stopped_at: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 900) -> re.Match:
        """The first match of `pattern` in the log; fails if the process ends, or `timeout` passes, first."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.text())
            if found:
                return found
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before {pattern.pattern!r}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {pattern.pattern!r} within {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def wait_for_model_download(self, timeout: float = 300, nth: int = 1) -> Path:
        """Wait until MLflow downloads a whole model (`MLmodel` and the Spark model next to it) into this process's
        TMPDIR: after `registered ... vN`, that is the gate loading a version to evaluate it, so its first read of
        @champion is done. (Registering reads the MLmodel file alone; the model the run logged was written to a
        temporary folder that is gone by then.) `nth`: the nth whole download: registered_model's ONNX export loads
        the version first, and the gate's evaluation loads it again."""
        deadline = time.monotonic() + timeout
        seen: list[Path] = []  # every whole download so far, in order (a finished one's folder may be gone already)
        while True:
            for p in self.tmpdir.rglob("MLmodel"):
                if (p.parent / "sparkml").is_dir() and p.parent not in seen:
                    seen.append(p.parent)
            if len(seen) >= nth:
                return seen[nth - 1]
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited before it downloaded a model:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no model download within {timeout} s:\n{self.tail()}")
            time.sleep(0.02)

    def signal_group(self, sig: signal.Signals) -> None:
        os.killpg(self.pid, sig)

    def stop(self) -> None:
        """SIGSTOP the whole group: the CLI and its JVM stand still where they are, holding what they hold."""
        self.signal_group(signal.SIGSTOP)
        self.stopped_at.append(time.time())

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole group: nothing gets to clean up, as in an OOM kill."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=60)

    def wait(self, timeout: float = 900) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.tail()}") from None

    def succeeded(self, timeout: float = 900) -> None:
        code = self.wait(timeout)
        assert code == 0, f"{self.name} exited {code}:\n{self.tail()}"

    def shut_down(self, timeout: float = 60) -> None:
        """SIGTERM the group of a process that runs until told (the daemon), give it `timeout` to stop, then end()."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.end()

    def end(self) -> None:
        """Make sure nothing of this process's group is left (a test that failed midway)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGCONT)
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=60)


RUN_START = re.compile(r" - (\w+) - ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) - \d+ - RUN_START ")


def run_id_of(proc: Process) -> str:
    """The Dagster run that a `dagster job execute` / `asset materialize` process executed (from its log)."""
    return proc.wait_for(RUN_START, timeout=600).group(2)


def materializations(instance, run_id: str) -> dict[str, dict]:
    """The metadata of each asset materialized by a run, as plain values, by asset name."""
    from dagster import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    found = {}
    for r in records:
        m = r.event_log_entry.dagster_event.event_specific_data.materialization
        found[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return found


def observations(instance, run_id: str) -> list[dict]:
    from dagster import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_OBSERVATION).records
    return [
        {k: v.value for k, v in r.event_log_entry.dagster_event.event_specific_data.asset_observation.metadata.items()}
        for r in records
    ]
