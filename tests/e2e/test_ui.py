"""The Dagster UI as a person sees it (make test-e2e): `dagster dev` on 127.0.0.1, driven by headless Chromium.

A small slice is materialized first from the command line (`make run`'s script: ingest, training with a champion,
scoring), as an operator would have done. The browser then opens the asset graph, launches one more daily
partition from the UI, waits for the run to succeed, and finds the checks and the lineage metadata of that
partition on the asset pages. Last, it launches a day whose source rows were broken on purpose, as a new user
would break them (a source folder of their own, FLIGHTLINE_SOURCE_LOCATION), and finds the failed check with its
reason. Screenshots go to test-artifacts/e2e/.
"""

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from orchestration.deployments import REPO_ROOT
from tests.conftest import child_env
from tests.listening import group_members, listening, on_loopback

pytestmark = pytest.mark.e2e

SEEDED = ("2013-01-01", "2013-01-06")
PARTITION = "2013-01-07"  # launched from the UI
BROKEN = "2013-01-08"  # launched from the UI too: a tenth of its flights have a negative distance
ASSETS = (
    "raw_data",
    "raw_quarantine",
    "validated_features",
    "quarantine",
    "train_set",
    "validation_set",
    "test_set",
    "tuned_pipeline",
    "registered_model",
    "batch_predictions",
    "incremental_predictions",
    "segment_models",
    "segment_predictions",
    "segment_performance",
)
SHOTS = REPO_ROOT / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("FLIGHTLINE_CHROMIUM", "/usr/bin/chromium")
GIT_URL = "https://github.com/example/flightline"
RUN_TIMEOUT_S = 900  # a run launched by the UI starts its own process and JVM; the machine may be shared


DEV: dict = {}  # the running `dagster dev`: its process group and the webserver's port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broken_source(folder: Path) -> Path:
    """The packaged flights of Jan 1-8 as a source folder of one's own, with Jan 8 broken: a tenth of its
    distances negative, over the spec's 5% quarantine budget."""
    from ml.datasets.flights import package_data_dir

    folder.mkdir()
    with zipfile.ZipFile(package_data_dir() / "flights.csv.zip") as zf, zf.open("flights.csv") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
        header = next(reader)
        rows = [r for r in reader if r[1] == "1" and int(r[2]) <= 8]
    jan8 = [r for r in rows if r[2] == "8"]
    for r in jan8[: len(jan8) // 10]:
        r[header.index("distance")] = "-100"
    with open(folder / "flights.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def state():
    """A local deployment's state folder with the slice materialized, and the Dagster instance that recorded it."""
    state = Path(tempfile.mkdtemp(prefix="flightline-e2e-"))
    (state / "dagster").mkdir()
    (state / "dagster" / "dagster.yaml").write_text((REPO_ROOT / "infra" / "dagster.yaml").read_text())
    env = child_env(
        FLIGHTLINE_STATE_DIR=str(state),
        DAGSTER_HOME=str(state / "dagster"),
        PYTHONPATH=str(REPO_ROOT),
        FLIGHTLINE_DEPLOYMENT="local",
        FLIGHTLINE_SOURCE_LOCATION=str(broken_source(state / "source")),
        FLIGHTLINE_GIT_URL=GIT_URL,  # code references become links to this repository at the checkout's commit
    )
    seed = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration.run_pipeline",
            "--start",
            SEEDED[0],
            "--end",
            SEEDED[1],
            "--trials",
            "2",
            "--train-days",
            "3",
            "--validation-days",
            "1",
            "--test-days",
            "2",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert seed.returncode == 0, seed.stdout[-3000:] + seed.stderr[-5000:]
    return state, env


@pytest.fixture(scope="module")
def webserver(state):
    """`dagster dev` (webserver + daemon) in a process group of its own, ended as a group at the end."""
    state_dir, env = state
    port = free_port()
    log = open(state_dir / "dagster-dev.log", "w")

    def default_signals():  # a background child could inherit ignored SIGINT/SIGTERM, and never stop
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=default_signals,
    )
    url = f"http://127.0.0.1:{port}"
    DEV.update(pgid=proc.pid, port=port)
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=5)
                break
            except OSError:
                assert proc.poll() is None, f"dagster dev exited: {(state_dir / 'dagster-dev.log').read_text()[-3000:]}"
                assert time.time() < deadline, "dagster dev did not answer /server_info within 300 s"
                time.sleep(2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def page(webserver):
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: run infra/ensure-chromium.sh (make test-e2e does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        # Tall: a group's graph draws only the nodes inside the view, and the daily group's reach below 1000 px
        page = browser.new_page(viewport={"width": 1600, "height": 1800})
        page.set_default_timeout(60_000)
        page.goto(f"{webserver}/asset-groups")
        try:  # the community/newsletter modal of a new instance
            page.get_by_role("button", name="Skip").click(timeout=20_000)
        except Exception:
            pass
        yield page
        browser.close()


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def instance_for(state):
    from dagster import DagsterInstance

    return DagsterInstance.from_config(str(state[0] / "dagster"))


def launch(page, webserver, state, partition, shot_name=None):
    """Launch one daily partition of daily_job from the job's page, and follow its run until it ends."""
    from dagster import DagsterRunStatus, RunsFilter

    page.goto(f"{webserver}/locations/flightline/jobs/daily_job")
    page.get_by_role("button", name="Materialize all").first.click()
    page.get_by_placeholder("ex: 2013-01-01").fill(partition)
    page.keyboard.press("Enter")
    launch = page.get_by_role("button", name="Launch 1 run")
    launch.wait_for()
    if shot_name:
        shot(page, shot_name)
    launch.click()

    instance = instance_for(state)
    deadline = time.time() + 120
    while not (runs := instance.get_runs(RunsFilter(tags={"dagster/partition": partition}))):
        assert time.time() < deadline, f"no run for partition {partition} was created by the UI"
        time.sleep(2)
    run_id = runs[0].run_id
    page.goto(f"{webserver}/runs/{run_id}")
    deadline = time.time() + RUN_TIMEOUT_S
    while instance.get_run_by_id(run_id).status not in (
        DagsterRunStatus.SUCCESS,
        DagsterRunStatus.FAILURE,
        DagsterRunStatus.CANCELED,
    ):
        assert time.time() < deadline, f"run {run_id} did not finish within {RUN_TIMEOUT_S} s"
        time.sleep(5)
    page.reload()
    return run_id, instance, instance.get_run_by_id(run_id).status


@pytest.fixture(scope="module")
def launched_run(webserver, page, state):
    """One daily partition launched from the job's page, and followed on its run page until it succeeds."""
    from dagster import DagsterRunStatus

    run_id, instance, status = launch(page, webserver, state, PARTITION, "02-launch-one-partition")
    page.get_by_text("Success", exact=True).first.wait_for()
    shot(page, "03-run-succeeded")
    assert status == DagsterRunStatus.SUCCESS
    return run_id, instance


def test_dagster_dev_listens_on_loopback_only(webserver):
    """The webserver, the daemon and the code server `dagster dev` starts: every listening socket on 127.0.0.1."""
    found = listening(group_members(DEV["pgid"]) | {DEV["pgid"]})
    addresses = sorted(a for per_pid in found.values() for a in per_pid)
    assert f"127.0.0.1:{DEV['port']}" in addresses  # the webserver was found: the check below is not vacuous
    assert [a for a in addresses if not on_loopback(a)] == [], addresses
    print(f"\ndagster dev listening: {addresses}")


def test_the_asset_graph_shows_every_asset_of_the_lineage(webserver, page):
    """Each group's graph shows its assets (the whole graph, 15 assets in five groups, draws only the nodes inside
    the view: at this size some fell outside it). The groups are the code location's own."""
    from orchestration.definitions import defs

    groups: dict[str, list[str]] = {}
    for assets_def in defs.assets:
        for key, group in assets_def.group_names_by_key.items():
            groups.setdefault(group, []).append(key.to_user_string())
    assert set(ASSETS) <= {a for names in groups.values() for a in names}
    for group, names in sorted(groups.items()):
        page.goto(f"{webserver}/locations/flightline/asset-groups/{group}")
        for asset in names:
            page.get_by_text(asset, exact=True).first.wait_for(state="visible")
        shot(page, f"01-asset-graph-{group}")


def latest_execution(page, webserver, asset, check):
    """The check's panel on the asset's Checks tab, from "Latest execution" on, as the page shows it."""
    page.goto(f"{webserver}/assets/{asset}?view=checks")
    page.get_by_text(check, exact=True).first.click()
    page.get_by_text("Latest execution").wait_for()
    page.get_by_text("Evaluation result").wait_for()
    body = page.inner_text("body")
    return body[body.index("Latest execution") :]


@pytest.mark.parametrize(
    "asset, check",
    [("raw_data", "raw_suite"), ("validated_features", "quarantine_budget"), ("validated_features", "feature_suite")],
)
def test_the_checks_of_the_launched_partition_are_shown_passed(webserver, page, launched_run, asset, check):
    panel = latest_execution(page, webserver, asset, check)
    shot(page, f"04-check-{asset}-{check}")
    lines = [line.strip() for line in panel.splitlines() if line.strip()]
    assert lines[lines.index("Evaluation result") + 1] == "Passed", panel[:500]
    assert lines[lines.index("Partition") + 1] == PARTITION, panel[:500]


def metadata_row(page, key):
    """The text of the metadata table's row whose first cell is `key`."""
    row = page.locator("tr", has=page.get_by_text(key, exact=True)).first
    row.wait_for()
    return row.inner_text()


def test_the_lineage_metadata_of_the_partition_is_shown(webserver, page, launched_run):
    from dagster import AssetKey

    run_id, instance = launched_run
    recorded = instance.get_latest_materialization_event(AssetKey("batch_predictions"))
    assert recorded.run_id == run_id and recorded.asset_materialization.partition == PARTITION
    meta = {k: v.value for k, v in recorded.asset_materialization.metadata.items()}

    page.goto(f"{webserver}/assets/batch_predictions?view=partitions&partition={PARTITION}")
    for key in ("delta_version", "model_name", "model_version", "model_run_id", "validated_features_delta_version"):
        assert str(meta[key]) in metadata_row(page, key), key
    shot(page, "05-batch-predictions-lineage")

    training = instance.get_latest_materialization_event(AssetKey("tuned_pipeline")).asset_materialization.metadata
    page.goto(f"{webserver}/assets/tuned_pipeline")
    assert training["mlflow_run_id"].value in metadata_row(page, "mlflow_run_id")
    assert meta["model_run_id"] == training["mlflow_run_id"].value  # the predictions' model came from that run
    shot(page, "06-tuned-pipeline-mlflow-run")


def test_an_asset_page_shows_its_owners_and_a_link_to_its_code(webserver, page):
    """The asset's overview: its owner team, and its code reference as a link to the definition's file and line at
    the checkout's commit (FLIGHTLINE_GIT_URL is set for `dagster dev` above)."""
    from dagster import AssetKey

    from assets.predictions import batch_predictions
    from ml.registry import code_version
    from orchestration.definitions import with_code_references

    [local] = with_code_references([batch_predictions], git_url="")  # the file and line, as this checkout has them
    [ref] = local.specs_by_key[AssetKey("batch_predictions")].metadata["dagster/code_references"].code_references
    line = ref.line_number
    page.goto(f"{webserver}/assets/batch_predictions")
    page.get_by_text("ml-platform").first.wait_for()  # the owner, team:ml-platform
    link = page.locator(f'a[href^="{GIT_URL}/tree/"]').first
    link.wait_for(state="attached")
    shot(page, "09-asset-owners-and-code-reference")
    expected = f"{GIT_URL}/tree/{code_version()}/assets/predictions.py#L{line}"
    assert link.get_attribute("href") == expected


def test_the_cli_materializes_a_selection_and_a_partition(state):
    """`dagster asset materialize`, as the README shows it, on the seeded instance (no browser: it is here because
    it starts a process and a JVM of its own, which `make test` leaves to the heavier targets). A step that writes
    two tables is selected whole: raw_data with raw_quarantine."""
    from dagster import AssetKey

    instance = instance_for(state)
    before = instance.get_latest_materialization_event(AssetKey("raw_data")).run_id
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "-m"]
        + ["orchestration.definitions", "--select", "raw_data,raw_quarantine", "--partition", "2013-01-02"],
        cwd=REPO_ROOT,
        env=state[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key in ("raw_data", "raw_quarantine"):
        event = instance_for(state).get_latest_materialization_event(AssetKey(key))
        assert event.run_id != before and event.asset_materialization.partition == "2013-01-02", key


def test_a_broken_day_shows_its_failed_check_with_the_reason_and_nothing_downstream(
    webserver, page, state, launched_run
):
    """Last in this file: it changes the checks' latest execution, which the tests above read."""
    from dagster import AssetKey, DagsterRunStatus

    run_id, instance, status = launch(page, webserver, state, BROKEN)
    page.get_by_text("Failure", exact=True).first.wait_for()
    shot(page, "07-broken-day-run-failed")
    assert status == DagsterRunStatus.FAILURE
    panel = latest_execution(page, webserver, "validated_features", "quarantine_budget")
    shot(page, "08-broken-day-quarantine-budget-failed")
    lines = [line.strip() for line in panel.splitlines() if line.strip()]
    assert lines[lines.index("Evaluation result") + 1] == "Failed", panel[:800]
    assert lines[lines.index("Partition") + 1] == BROKEN, panel[:800]
    reason = next(line for line in lines if "broke row-level rules" in line)  # the description heads the panel
    assert "over the budget of 5.00%: distance_in_range:" in reason, reason
    for asset in ("validated_features", "batch_predictions"):  # nothing downstream of the failed check for that day
        assert BROKEN not in instance.get_materialized_partitions(AssetKey(asset)), asset
    assert PARTITION in instance.get_materialized_partitions(AssetKey("batch_predictions"))
