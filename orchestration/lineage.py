"""`make lineage`: which data and which model made this prediction? One command, every hop read from the stores.

    make lineage                                   # a sample prediction (the first row of the last scored day)
    make lineage ARGS="prediction --key carrier=UA --key flight=1545 --key origin=EWR --date 2013-02-01"
    make lineage ARGS="prediction ... --json"      # the same chain as JSON
    make lineage ARGS="predictions-of --version 1" # which predictions did model version 1 make? (per day)
    make lineage ARGS="trained-on --date 2013-02-02"   # which model versions were trained on data from that day?

The Delta and MLflow hops are ml/lineage.py's; this adds the Dagster ones, read from the instance (DAGSTER_HOME):
the run that wrote each step (job, status, times, a UI link), that run's materialization of the step (its
recorded Delta version against the commit's), and the gate's latest check evaluations of the row's day.
`--dagster-url` (or FLIGHTLINE_DAGSTER_UI) is the UI's base URL, default http://127.0.0.1:3000.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, date, datetime

from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

from assets.common import SPEC
from assets.dagster_adapter import latest_check_evaluations
from assets.features import BUDGET_CHECK, SUITE_CHECK
from assets.ingest import RAW_CHECK
from ml import lineage as L
from ml.dataset import EVENT_DATE
from ml.spark import is_connect
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource

DEFAULT_DAGSTER_UI = "http://127.0.0.1:3000"
GATE_CHECKS = {L.RAW: (RAW_CHECK,), L.FEATURES: (BUDGET_CHECK, SUITE_CHECK)}
DAILY_STEPS = (L.RAW, L.FEATURES, L.PREDICTIONS)  # partitioned by day: their materialization is the day's
PAGE = 100  # materialization records fetched at a time, looking for one run's
RECORDED = ("delta_version", "model_version", "mlflow_run_id", "model_uri", "gate_decision")  # shown of each


def stores_of(lakehouse: LakehouseResource, mlflow: MLflowResource) -> L.Stores:
    return L.Stores(
        spark=lakehouse.session,
        client=mlflow.client,
        table_path=lakehouse.table_path,
        run_url=mlflow.run_url,
        model_url=mlflow.model_url,
    )


def ui_base(url: str | None = None) -> str:
    return (url or os.environ.get("FLIGHTLINE_DAGSTER_UI") or DEFAULT_DAGSTER_UI).rstrip("/")


# ---- the Dagster hops -----------------------------------------------------------------------------------------


def run_info(instance: DagsterInstance, run_ids: list[str], base: str) -> dict[str, dict]:
    """run id -> its job, status, start and end, and its page in the UI (get_run_records, one query)."""
    ids = sorted({r for r in run_ids if r})
    records = instance.get_run_records(RunsFilter(run_ids=ids)) if ids else []
    info = {}
    for record in records:
        run = record.dagster_run
        info[run.run_id] = {
            "job": run.job_name,
            "status": run.status.value,
            "started_at": _iso(record.start_time),
            "ended_at": _iso(record.end_time),
            "url": f"{base}/runs/{run.run_id}",
        }
    return info


def materialization_in_run(instance: DagsterInstance, asset: str, run_id: str, partition: str | None) -> dict | None:
    """The materialization of `asset` (of `partition`) that the run recorded, newest first, paging back."""
    cursor = None
    records_filter = AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None)
    while True:
        result = instance.fetch_materializations(records_filter, limit=PAGE, cursor=cursor)
        for record in result.records:
            if record.run_id == run_id:
                materialization = record.asset_materialization
                metadata = {k: v.value for k, v in materialization.metadata.items()}
                return {
                    "storage_id": record.storage_id,
                    "timestamp": _iso(record.timestamp),
                    "partition": materialization.partition,
                    "metadata": {
                        k: metadata[k]
                        for k in (*RECORDED, L.c.delta_version_key(L.FEATURES), L.c.delta_version_key(L.RAW))
                        if k in metadata
                    },
                }
        if not result.has_more:
            return None
        cursor = result.cursor


def gate_of_day(instance: DagsterInstance, day: str, base: str) -> dict:
    """The latest evaluation of each blocking check of the gated steps for that day: held if one failed (the day
    then keeps whatever rows an earlier write left, or has none)."""
    keys = [AssetCheckKey(AssetKey(asset), name) for asset, names in GATE_CHECKS.items() for name in names]
    latest = latest_check_evaluations(instance, keys, day)
    checks = []
    for key in keys:
        evaluation = latest.get(key)
        checks.append(
            {
                "asset": key.asset_key.to_user_string(),
                "check": key.name,
                **(
                    {
                        **evaluation,
                        "timestamp": _iso(evaluation["timestamp"]),
                        "url": f"{base}/runs/{evaluation['run_id']}",
                    }
                    if evaluation
                    else {"passed": None}
                ),
            }
        )
    return {"held_by_the_gate": any(ch["passed"] is False for ch in checks), "checks": checks}


def dagster_hops(instance: DagsterInstance, chain: dict, base: str) -> dict:
    """The Dagster runs of each step of a chain (ml.lineage.prediction_lineage), each checked against the run's
    materialization of that step."""
    day = chain["question"]["date"]
    steps = chain["dagster_run_ids"]
    runs = run_info(instance, [s["run_id"] for s in steps.values()], base)
    commits = {
        L.RAW: chain["raw"]["commit"]["version"],
        L.FEATURES: chain["features"]["commit"]["version"],
        chain["prediction"]["table"]: chain["prediction"]["commit"]["version"],
        **{s["table"]: s["delta_version"] for s in chain["splits"].values()},
    }
    out = {}
    for step, recorded in steps.items():
        run_id = recorded["run_id"]
        hop = {**recorded, **runs.get(run_id, {"missing": f"run {run_id} is not in this Dagster instance"})}
        if run_id:
            materialization = materialization_in_run(instance, step, run_id, day if step in DAILY_STEPS else None)
            hop["materialization"] = materialization
            if materialization and step in commits and "delta_version" in materialization["metadata"]:
                hop["agrees_with_delta"] = materialization["metadata"]["delta_version"] == commits[step]
        out[step] = hop
    return {"ui": base, "steps": out, "gate": gate_of_day(instance, day, base)}


def explain(
    instance: DagsterInstance,
    lakehouse: LakehouseResource,
    mlflow: MLflowResource,
    keys: dict[str, str],
    day: date,
    table: str = L.PREDICTIONS,
    base: str | None = None,
) -> dict:
    """The whole chain of one prediction: ml.lineage's Delta and MLflow hops, and the Dagster ones."""
    stores = stores_of(lakehouse, mlflow)
    chain = L.prediction_lineage(
        stores, keys, day, table, scored_from=lambda commit: _scored_from(instance, commit, day, table)
    )
    chain["dagster"] = dagster_hops(instance, chain, ui_base(base))
    return chain


def _scored_from(instance: DagsterInstance, commit: dict, day: date, table: str) -> int | None:
    """The validated_features version scoring read, from the materialization of the run that made the prediction's
    commit: for commits that do not record it themselves (written before they did)."""
    run_id = commit["user_metadata"].get(L.c.COMMIT_RUN_ID)
    found = materialization_in_run(instance, table, run_id, day.isoformat()) if run_id else None
    value = (found or {"metadata": {}})["metadata"].get(L.c.delta_version_key(L.FEATURES))
    return None if value is None else int(value)


def sample_keys(lakehouse: LakehouseResource) -> tuple[dict[str, str], date]:
    """A prediction to explain when none is given: the first row (by key) of the last scored day."""
    stores_frame = lakehouse.read(L.PREDICTIONS).frame
    keys = [k for k in SPEC.key_columns if k != EVENT_DATE]
    last = stores_frame.agg({EVENT_DATE: "max"}).first()[0]
    if last is None:
        raise L.LineageError(f"{L.PREDICTIONS} has no rows: run the scoring (make run) first")
    row = stores_frame.where(stores_frame[EVENT_DATE] == last).select(*keys).orderBy(*keys).first()
    return {k: str(row[k]) for k in keys}, last


# ---- text -----------------------------------------------------------------------------------------------------


def format_chain(chain: dict) -> str:
    q, p, m, r = chain["question"], chain["prediction"], chain["model"], chain["mlflow_run"]
    d = chain.get("dagster", {"steps": {}, "gate": None})
    steps = d["steps"]
    keys = ", ".join(f"{k}={v}" for k, v in q["keys"].items())
    row = p["row"]
    shown = {k: row[k] for k in ("prediction", "probability", "scored_at") if k in row}
    lines = [
        f"Prediction   {p['table']} (Delta v{p['delta_version']}): {keys}, {EVENT_DATE}={q['date']}",
        "             " + "  ".join(f"{k}={v}" for k, v in shown.items()),
        f"             written by commit v{p['commit']['version']} ({p['commit']['operation']}, "
        f"{p['commit']['timestamp']}){_run(steps, p['table'])}",
        f"Model        {m['name']} v{m['version']}"
        + (f"  now @{', @'.join(m['aliases'])}" if m["aliases"] else "  (no alias now)")
        + f"  registered {m['registered_at']}{_url(m['url'])}",
        f"             gate: {m['tags'].get('gate.decision', '-')}: {m['tags'].get('gate.reason', '')}",
        "             alias history:",
        *[
            f"               {e['at']}  v{e['version']} {e['event']}"
            + (f" -> @{e['alias']}" if e["alias"] else "")
            + (f" (previous champion v{e['previous_champion']})" if e["previous_champion"] else "")
            + (f" by {e['by']}" if e.get("by") else "")
            + (f": {e['reason']}" if e["reason"] else "")
            for e in m["alias_history"]
        ],
        f"MLflow run   {r['run_id']} ({r['run_name']}, {r['status']}){_url(r['url'])}{_run(steps, 'tuned_pipeline')}",
        "             test: "
        + ", ".join(f"{k.removeprefix('test_')}={v:.4f}" for k, v in r["test_metrics"].items())
        + (f" (on {', '.join(r['test_metrics_dataset'])})" if r["test_metrics_dataset"] else ""),
        *[
            f"             dataset ({ds['context']}): {ds['name']} (Delta v{ds['delta_version']}"
            + (f", {ds['profile']['num_rows']} rows" if (ds["profile"] or {}).get("num_rows") is not None else "")
            + ")"
            for ds in r["datasets"]
        ],
    ]
    for i, s in enumerate(chain["splits"].values()):
        lines.append(
            f"{'Splits' if i == 0 else '':<13}{s['table']:<15} v{s['delta_version']}: "
            f"[{s['window_start']}, {s['window_end_exclusive']}) from {L.FEATURES} "
            f"v{s[L.c.delta_version_key(L.FEATURES)]}{_run(steps, s['table'])}"
        )
    f, w = chain["features"], chain["raw"]
    lines += [
        f"Features     {L.FEATURES} v{f['delta_version']} (what scoring read): the row was written by commit "
        f"v{f['commit']['version']}, which read {L.RAW} v{f['commit']['user_metadata'].get(L.c.delta_version_key(L.RAW), '?')}"
        f"{_run(steps, L.FEATURES)}",
        f"Raw          {L.RAW} v{w['delta_version']}: the row was written by commit v{w['commit']['version']}"
        f"{_run(steps, L.RAW)}",
        f"Source       {chain['source'] or 'not recorded in the commit'}",
    ]
    day = chain["day"]
    quarantine = (
        f"{day['quarantined_rows']} rows of the day quarantined"
        + (f" ({', '.join(f'{k}: {v}' for k, v in day['by_rule'].items())})" if day["by_rule"] else "")
        + ("; this key was quarantined" if day.get("this_key_quarantined") else "; not this key")
    )
    gate = d.get("gate")
    if gate:
        verdicts = ", ".join(
            f"{ch['check']} {'not evaluated' if ch['passed'] is None else 'passed' if ch['passed'] else 'FAILED'}"
            for ch in gate["checks"]
        )
        held = "HELD by the gate (keeps earlier rows)" if gate["held_by_the_gate"] else "not held by the gate"
        quarantine += f"; {held}: {verdicts}"
    lines.append(f"Day          {day['date']}: {quarantine}")
    if steps:
        lines.append("Dagster runs" + (f" ({d['ui']})" if d.get("ui") else ""))
        for step, s in steps.items():
            mat = s.get("materialization")
            agrees = s.get("agrees_with_delta")
            check = "" if agrees is None else (" = the commit" if agrees else " != the commit!")
            recorded = (
                f"  materialization: delta_version {mat['metadata']['delta_version']}{check}"
                if mat and "delta_version" in mat["metadata"]
                else ("  materialization recorded" if mat else "  no materialization in this run")
            )
            lines.append(
                f"  {step:<18} {s['run_id'] or '-'}  {s.get('job', '?')} {s.get('status', s.get('missing', ''))}"
                f"  {s.get('url', '')}{recorded}"
            )
    return "\n".join(lines)


def _run(steps: dict, step: str) -> str:
    s = steps.get(step)
    return f"  [Dagster run {s['run_id'][:8]}]" if s and s.get("run_id") else ""


def _url(url: str | None) -> str:
    return f"  {url}" if url else ""


def format_predictions_of(answer: dict) -> str:
    lines = [
        f"{answer['model']} v{answer['version']} (MLflow run {answer['run_id']}): {answer['total']} predictions in "
        f"{answer['table']} (Delta v{answer['delta_version']}), on {len(answer['days'])} days"
    ]
    lines += [
        f"  {d['date']}  {d['predictions']:>7}  scored {d['first_scored_at']} .. {d['last_scored_at']}"
        for d in answer["days"]
    ]
    return "\n".join(lines)


def format_trained_on(answer: dict) -> str:
    if not answer["versions"]:
        return f"No version of {answer['model']} was trained, validated or tested on data from {answer['date']}."
    lines = [f"Versions of {answer['model']} whose splits include {answer['date']}:"]
    for v in answer["versions"]:
        aliases = f" @{', @'.join(v['aliases'])}" if v["aliases"] else ""
        used = "; ".join(
            f"{split}: {s['table']} v{s['delta_version']} [{s['window_start']}, {s['window_end_exclusive']}), "
            f"{s['rows_of_day']} rows of the day"
            for split, s in v["splits"].items()
        )
        lines.append(f"  v{v['version']}{aliases} (MLflow run {v['run_id']}): {used}")
    return "\n".join(lines)


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# ---- command line ---------------------------------------------------------------------------------------------


def parse_keys(pairs: list[str]) -> dict[str, str]:
    """`--key carrier=UA --key flight=1545` (or `carrier=UA,flight=1545`), checked against the spec's key columns."""
    keys = {}
    for pair in [p for item in pairs for p in item.split(",") if p.strip()]:
        column, sep, value = pair.partition("=")
        if not sep or not column.strip():
            raise L.LineageError(f"--key {pair!r} is not column=value")
        keys[column.strip()] = value.strip()
    expected = [k for k in SPEC.key_columns if k != EVENT_DATE]
    unknown, missing = sorted(set(keys) - set(expected)), [k for k in expected if k not in keys]
    if unknown or missing:
        raise L.LineageError(
            f"a prediction of {SPEC.name} is named by {expected} and its date (--date): "
            + "; ".join(
                p for p in (f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else "") if p
            )
        )
    return keys


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise L.LineageError(f"--date {text!r} is not a date of the form YYYY-MM-DD") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestration.lineage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument("--dagster-url", help=f"the Dagster UI's base URL (default {DEFAULT_DAGSTER_UI})")
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("prediction", help="the whole chain of one prediction")
    one.add_argument("--key", action="append", default=[], help="column=value, once per key column")
    one.add_argument("--date", required=True, help="the prediction's day (YYYY-MM-DD)")
    one.add_argument("--table", default=L.PREDICTIONS, help="the predictions table")
    of = sub.add_parser("predictions-of", help="which predictions did model version N make (per day)?")
    of.add_argument("--version", required=True, help="the model version")
    on = sub.add_parser("trained-on", help="which model versions were trained on data from day D?")
    on.add_argument("--date", required=True, help="the day (YYYY-MM-DD)")
    for p in (parser, one, of, on):  # the options work before or after the command
        p.add_argument("--model", default=argparse.SUPPRESS, help="the registered model (default: the deployment's)")
        if p is not parser:
            p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
            p.add_argument("--dagster-url", default=argparse.SUPPRESS)
    return parser


def answer(args: argparse.Namespace, instance: DagsterInstance, lakehouse, mlflow) -> tuple[dict, str]:
    """The answer to a parsed command line, as a dict and as text."""
    stores = stores_of(lakehouse, mlflow)
    model = getattr(args, "model", None) or lakehouse.model_name
    if args.command == "predictions-of":
        result = L.predictions_of_version(stores, model, args.version)
        return result, format_predictions_of(result)
    if args.command == "trained-on":
        result = L.models_trained_on(stores, model, parse_day(args.date))
        return result, format_trained_on(result)
    if args.command == "prediction":
        keys, day, table = parse_keys(args.key), parse_day(args.date), args.table
    else:  # no command: a sample prediction
        keys, day = sample_keys(lakehouse)
        table = L.PREDICTIONS
    result = explain(instance, lakehouse, mlflow, keys, day, table, args.dagster_url)
    return result, format_chain(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dagster import build_resources

    from orchestration.deployments import resources_for

    resources = resources_for(SPEC)
    try:
        with (
            build_resources({"lakehouse": resources["lakehouse"], "mlflow": resources["mlflow"]}) as built,
            DagsterInstance.get() as instance,
        ):
            if not is_connect(built.lakehouse.session):  # over Spark Connect the server's log level is its own
                built.lakehouse.session.sparkContext.setLogLevel("ERROR")
            result, text = answer(args, instance, built.lakehouse, built.mlflow)
    except L.LineageError as exc:
        print(f"lineage: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
