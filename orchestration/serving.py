"""The champion over HTTP on 127.0.0.1: its ONNX export (ml/onnx_export.py) in onnxruntime, behind FastAPI/uvicorn.

    python -m orchestration.serving [--port 8765] [--model main.flights.arrival_delay] [--tracking-uri URI]

- At start, `<model>@champion` is resolved; the server refuses to start if that version is not servable in real
  time (no export, or an export refused at registration: the reason is printed).
- `POST /reload` or SIGHUP resolves @champion again. A champion that is not servable is not loaded: the server
  keeps answering with the version it has, and /reload says why (409).
- `POST /predict` takes `{"instance": {feature: value, ...}}` (one row) or `{"instances": [{...}, ...]}` (a batch,
  at most MAX_ROWS). The fields are the model signature's inputs: the rows of the feature table, as batch scoring
  feeds `PipelineModel.transform` (numerics as numbers or null, categoricals as strings or null; extra fields are
  ignored). A missing field or another type is a 422 naming the field and the row.
- Every response, errors included, carries the model name and version (body and `X-Model-Name`,
  `X-Model-Version` headers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlflow.tracking import MlflowClient

from ml.onnx_export import NotServableError, RequestError, ServedModel, load_served

MAX_ROWS = 10_000
DEFAULT_PORT = 8765
log = logging.getLogger("flightline.serving")


@dataclass
class Champion:
    """The served version; swapped whole on reload, so a request sees one version from start to end."""

    client: MlflowClient
    name: str
    alias: str = "champion"
    threads: int = 1
    current: ServedModel | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def reload(self) -> tuple[ServedModel, str | None]:
        """(served model, previous version); NotServableError (and the old version kept) if it cannot serve."""
        with self._lock:
            served = load_served(self.client, self.name, self.alias, self.threads)
            previous = self.current.version if self.current else None
            self.current = served
            return served, previous


def _headers(model: ServedModel | None) -> dict[str, str]:
    return {"X-Model-Name": model.name, "X-Model-Version": model.version} if model else {}


def _model(model: ServedModel | None) -> dict[str, str | None]:
    return {
        "model_name": model.name if model else None,
        "model_version": model.version if model else None,
        "model_run_id": model.run_id if model else None,
    }


def _error(status: int, model: ServedModel | None, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra, **_model(model)}, status_code=status, headers=_headers(model))


def create_app(champion: Champion) -> FastAPI:
    """The app over `champion`, which must already be loaded (Champion.reload)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload_logged))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no SIGHUP
            pass
        yield

    def _reload_logged() -> None:
        try:
            served, previous = champion.reload()
            log.warning("SIGHUP: serving %s v%s (was v%s)", served.name, served.version, previous)
        except Exception as exc:
            log.error("SIGHUP: reload failed, still serving v%s: %s", getattr(champion.current, "version", None), exc)

    app = FastAPI(title="flightline real-time scoring", lifespan=lifespan)

    @app.get("/health")
    async def health() -> JSONResponse:
        model = champion.current
        return JSONResponse({"status": "ok", **_model(model)}, headers=_headers(model))

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        model = champion.current
        m = model.scorer.manifest
        body = {
            **_model(model),
            "alias": champion.alias,
            "inputs": [{"name": c, "type": t} for c, t in m.inputs],
            "derived_features": m.derived,
            "parity": m.parity,
            "fixes": m.fixes,
            "versions": m.versions,
        }
        return JSONResponse(body, headers=_headers(model))

    @app.post("/reload")
    async def reload() -> JSONResponse:
        try:
            served, previous = await asyncio.to_thread(champion.reload)
        except NotServableError as exc:
            return _error(409, champion.current, f"{exc}; still serving the version below")
        except Exception as exc:
            return _error(503, champion.current, f"reload failed: {type(exc).__name__}: {exc}; still serving")
        return JSONResponse(
            {"reloaded": True, "previous_version": previous, **_model(served)}, headers=_headers(served)
        )

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        model = champion.current  # one version for the whole request
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, model, f"the body is not JSON: {exc}")
        single = isinstance(body, dict) and "instance" in body
        rows = [body["instance"]] if single else body.get("instances") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            return _error(
                422,
                model,
                'the body must be {"instance": {...}} or {"instances": [{...}, ...]} (objects, at least one)',
            )
        if len(rows) > MAX_ROWS:
            return _error(413, model, f"{len(rows)} rows: at most {MAX_ROWS} per request")
        try:
            prediction, probability = model.scorer.predict(rows)
        except RequestError as exc:
            return _error(422, model, str(exc), field=exc.field, row=exc.row)
        results = [
            {"prediction": float(c), "probability": float(p)} for c, p in zip(prediction, probability, strict=True)
        ]
        body = {**_model(model), **({"prediction": results[0]} if single else {"predictions": results})}
        return JSONResponse(body, headers=_headers(model))

    return app


def default_model_name() -> str:
    from ml.dataset import load_spec
    from ml.datasets import DEFAULT_DATASET

    spec = load_spec(os.environ.get("FLIGHTLINE_DATASET", DEFAULT_DATASET))
    return f"{os.environ.get('FLIGHTLINE_CATALOG', 'main')}.{spec.name}.{spec.model_name}"


def default_tracking_uri() -> str:
    state = Path(os.environ.get("FLIGHTLINE_STATE_DIR", ".state")).resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FLIGHTLINE_SERVE_PORT", DEFAULT_PORT)))
    parser.add_argument("--model", default=None, help="registered model name (default: the dataset spec's)")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else the local store")
    parser.add_argument("--registry-uri", default=None)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tracking = args.tracking_uri or default_tracking_uri()
    registry = args.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or tracking
    champion = Champion(MlflowClient(tracking, registry), args.model or default_model_name(), args.alias, args.threads)
    try:
        served, _ = champion.reload()
    except Exception as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    log.info("serving %s v%s on http://%s:%d", served.name, served.version, args.host, args.port)
    uvicorn.run(create_app(champion), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
