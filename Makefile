# Everything a fresh machine needs is installed by these targets, on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

STATE ?= $(CURDIR)/.state
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

export FLIGHTLINE_STATE_DIR ?= $(STATE)
export DAGSTER_HOME ?= $(STATE)/dagster
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYTHONPATH := $(CURDIR)
export UV_PROJECT_ENVIRONMENT := $(VENV)
# `make test` and `make test-heavy` on two pytest workers (tests/conftest.py keeps the shared world's tests on one, and
# each module whole, and hands the units out in its order); TEST_WORKERS= runs them in one process
TEST_WORKERS ?= -n 2 --dist loadscope --no-loadscope-reorder

.PHONY: help install java jars run lineage test lint serve test-serving bench-serving ui mlflow-ui mlflow-server mlflow-server-stop clean bench-overhead bench-gx bench-registry bench-execution-model bench-event-storage bench-tuning bench-drift bench-drift-wide bench-scoring bench-undated bench-replay bench-segments bench-onnx-convert test-datasets bench-incremental \
	infra-up infra-down infra-status test-infra test-e2e test-reliability test-heavy chromium \
	spark-connect spark-connect-stop test-connect

help:
	@echo "make run        install everything and materialize the whole graph on NYC flights 2013"
	@echo "make lineage    which data and which model made a prediction (ARGS=\"prediction --key ... --date ...\"; --help)"
	@echo "make test       install everything and run the test suite"
	@echo "make lint       ruff check + ruff format --check (changes nothing)"
	@echo "make serve      the @champion over HTTP on 127.0.0.1:$${PORT:-8765} (ONNX in onnxruntime; POST /reload or SIGHUP)"
	@echo "make ui         Dagster UI on http://127.0.0.1:3000 (dagster dev)"
	@echo "make mlflow-ui  MLflow UI on http://127.0.0.1:5000"
	@echo "make mlflow-server       a real MLflow tracking + registry server on http://127.0.0.1:5001 (stop: make mlflow-server-stop)"
	@echo "make infra-up   PostgreSQL, an MLflow server and a Spark cluster on 127.0.0.1 (then: source .state/infra.env)"
	@echo "make infra-down stop them"
	@echo "make test-infra start them on free ports, materialize the whole graph through them, check, stop"
	@echo "make test-e2e   dagster dev driven by headless Chromium: graph, a partition launched from the UI, checks"
	@echo "make test-reliability  real processes: writers and dagster runs racing, runs SIGKILLed, the daemon's run queue"
	@echo "make clean      delete the local state (.state: lakehouse, MLflow store, Dagster instance)"

java:
	@bash infra/ensure-java.sh

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@touch $@

install: java $(VENV)/.installed

# Delta's jars come from Maven Central through Spark's Ivy (cached in ~/.ivy2.5.2); this proves a Delta round trip.
$(STATE)/.delta-jars-ok: $(VENV)/.installed
	@mkdir -p $(STATE)/logs
	@echo "Delta's jars through Spark's Ivy (once); its report: $(STATE)/logs/jars.log"
	@source infra/java-env.sh && $(PY) -m ml.spark >$(STATE)/logs/jars.log 2>&1 || { tail -n 40 $(STATE)/logs/jars.log; exit 1; }
	@touch $@

jars: install $(STATE)/.delta-jars-ok

$(DAGSTER_HOME)/dagster.yaml: infra/dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp infra/dagster.yaml $@

# One line per phase on the terminal; Dagster's, Spark's and Ivy's output in $(STATE)/logs/run-<time>.log (printed).
run: jars $(DAGSTER_HOME)/dagster.yaml
	@source infra/java-env.sh && $(PY) -m orchestration.run_pipeline $(ARGS)

# The chain of one prediction (a sample one without ARGS), read from the stores `make run` filled; see orchestration/lineage.py.
lineage: jars $(DAGSTER_HOME)/dagster.yaml
	@source infra/java-env.sh && $(PY) -m orchestration.lineage $(ARGS)

test: jars $(DAGSTER_HOME)/dagster.yaml
	@source infra/java-env.sh && $(PY) -m pytest $(TEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

ui: jars $(DAGSTER_HOME)/dagster.yaml
	@source infra/java-env.sh && $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(STATE)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# A real MLflow server (database back end, served artifacts) under $(STATE)/mlflow-server; see infra/mlflow-server.sh.
mlflow-server: install
	@bash infra/mlflow-server.sh start

mlflow-server-stop:
	@bash infra/mlflow-server.sh stop

# The production shape on 127.0.0.1; see infra/stack.sh. `source .state/infra.env` points the prod deployment at it.
infra-up: jars
	@bash infra/stack.sh start

infra-down:
	@bash infra/stack.sh stop

infra-status:
	@bash infra/stack.sh status

# Not in `make test`: starts its own stack (free ports, a temporary state folder) and runs the whole graph on it.
test-infra: jars
	@source infra/java-env.sh && $(PY) -m pytest -m infra tests/infra tests/integration/test_mlflow_server.py $(PYTEST_ARGS)

# A Spark Connect server on 127.0.0.1:15002 from pyspark's jars, Delta on it (infra/spark-connect.sh); then
# `export FLIGHTLINE_SPARK_REMOTE=sc://127.0.0.1:15002` runs the graph through it, with no code change.
spark-connect: jars
	@bash infra/spark-connect.sh start

spark-connect-stop:
	@bash infra/spark-connect.sh stop

# Not in `make test`: a Spark Connect server of its own on a free port; the whole graph through it, in-process.
test-connect: jars
	@source infra/java-env.sh && $(PY) -m pytest -m connect tests/connect $(PYTEST_ARGS)

# Not in `make test` (35 min on a loaded 2-core machine: each test starts JVMs): writer processes and `dagster` runs racing on one
# table and one model, killed with SIGKILL mid-write, mid-study and mid-registration, and the daemon's run queue.
test-reliability: jars
	@source infra/java-env.sh && $(PY) -m pytest -m reliability tests/reliability $(PYTEST_ARGS)

# Not in `make test` (two whole pipelines): the example specs besides flights (ml/datasets/), each run as
# `FLIGHTLINE_DATASET=<name> make run` on a short window, its tables read back, its model against a naive baseline.
test-datasets: jars
	@source infra/java-env.sh && $(PY) -m pytest -m datasets tests/integration/test_datasets.py -s $(PYTEST_ARGS)

chromium:
	@bash infra/ensure-chromium.sh

# What .ci/run runs after `make test`: five of the heavier suites above (e2e, infra, reliability, serving, datasets) in
# one pytest session on two workers, their longest modules first (tests/conftest.py). Each suite starts its own
# services on free ports of 127.0.0.1, on its own temporary state. `make test-connect` stays a session of its own: it
# asserts that its process never started a JVM, and a Connect session changes how pyspark runs in that process.
HEAVY_MARKERS := e2e or infra or reliability or serving or datasets
HEAVY_TESTS := tests/e2e tests/infra tests/integration/test_mlflow_server.py tests/reliability \
	tests/integration/test_serving.py tests/integration/test_datasets.py
test-heavy: jars chromium $(DAGSTER_HOME)/dagster.yaml
	@source infra/java-env.sh && $(PY) -m pytest $(TEST_WORKERS) -m "$(HEAVY_MARKERS)" $(HEAVY_TESTS) $(PYTEST_ARGS)

# Not in `make test` (about 5 minutes): seeds a small slice, starts `dagster dev` on a free port and drives it with
# Debian's chromium through Playwright. Screenshots: test-artifacts/e2e/.
test-e2e: jars chromium
	@source infra/java-env.sh && $(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

clean: infra-down mlflow-server-stop
	rm -rf $(STATE)

bench-overhead: jars
	@source infra/java-env.sh && $(PY) -m bench.overhead $(ARGS)

bench-gx: jars
	@source infra/java-env.sh && $(PY) -m bench.gx_suite $(ARGS)

bench-undated: jars
	@source infra/java-env.sh && $(PY) -m bench.undated $(ARGS)

bench-tuning: jars
	@source infra/java-env.sh && $(PY) -m bench.tuning $(ARGS)

bench-drift: jars
	@source infra/java-env.sh && $(PY) -m bench.drift $(ARGS)

bench-drift-wide: jars
	@source infra/java-env.sh && $(PY) -m bench.drift_wide $(ARGS)

# Replay (reproduce_job): Spark training's determinism (the same Delta versions, and the same rows partitioned otherwise) and a replay's cost.
bench-replay: jars
	@source infra/java-env.sh && $(PY) -m bench.replay $(ARGS)

# Many models: the grouped map (applyInPandas) against a serial driver loop over the same segments (carrier, dest).
bench-segments: jars
	@source infra/java-env.sh && $(PY) -m bench.segments $(ARGS)

bench-onnx-convert: jars
	@source infra/java-env.sh && $(PY) -m bench.onnx_convert $(ARGS)

bench-registry: jars
	@source infra/java-env.sh && $(PY) -m bench.registry_gate $(ARGS)

bench-scoring: jars $(DAGSTER_HOME)/dagster.yaml
	@source infra/java-env.sh && $(PY) -m bench.scoring $(ARGS)

# Incremental scoring (ml/incremental.py) for one new day against a batch rescore of the whole table, in one run.
bench-incremental: jars
	@source infra/java-env.sh && $(PY) -m bench.incremental $(ARGS)

bench-execution-model: jars
	@source infra/java-env.sh && $(PY) -m bench.execution_model $(ARGS)

bench-event-storage: install
	@$(PY) -m bench.event_storage $(ARGS)

# The champion's ONNX export over HTTP on 127.0.0.1 (orchestration/serving.py); PORT=8765 by default. Reload: POST /reload or SIGHUP.
PORT ?= 8765
serve: install
	@$(PY) -m orchestration.serving --port $(PORT) $(ARGS)

# Not in `make test` (about 2 minutes): the real-time server as its own process on a free port of 127.0.0.1, real
# HTTP, reloads after promotions (the ONNX export's unit tests run in `make test`).
test-serving: jars
	@source infra/java-env.sh && $(PY) -m pytest -m "serving or not serving" tests/integration/test_serving.py $(PYTEST_ARGS)

# Not in `make test`: the real-time server against the Spark pyfunc baseline (bench/serving.py), 127.0.0.1 only.
bench-serving: jars
	@source infra/java-env.sh && $(PY) -m bench.serving $(ARGS)
