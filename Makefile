# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: test demo lint unit e2e cluster-up cluster-down crds bench bench-scale clean

# Reinstall when the dependencies change; the stamp keeps repeated runs fast. The operator and
# its test kit (testkit/: local cluster, traffic simulator, scenario helpers) in one command, so
# pip takes the local segue for the test kit's dependency on it.
$(VENV)/.installed: pyproject.toml testkit/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]' -e ./testkit
	@touch $@

## test: lint, type-check, layering contract, then unit and e2e tests on the local cluster
test: lint
	$(BIN)/pytest tests

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(VENV)/.installed
	$(BIN)/pytest tests/unit

e2e: $(VENV)/.installed
	$(BIN)/pytest tests/e2e

## demo: local cluster, Prometheus, the operator, sample Rollouts progressing and rolling back
demo: $(VENV)/.installed
	$(PY) hack/demo.py

## bench: rollback latency (fault visible in Prometheus -> weight 0; on the replicas router, -> the
## new Deployment scaled to 0), API requests per step and while waiting, step overhead per router,
## abort latency among 50 Rollouts with a hanging Prometheus
bench: $(VENV)/.installed
	$(PY) hack/bench_rollback.py --runs 20 --interval 2s
	$(PY) hack/bench_rollback.py --runs 10 --interval 2s --router replicas
	$(PY) hack/count_requests.py --steps 5
	$(PY) hack/bench_steps.py --rollouts 4
	$(PY) hack/bench_abort.py --rollouts 50

## bench-scale: N = 100 and 1,000 Rollouts on one operator (Gateway API router, two gates each,
## abort latency), each against its floor; the replicas router at N = 10 and 100 against its
## floor; and 3 shards at 1,000
bench-scale: $(VENV)/.installed
	$(PY) hack/bench_scale.py --rollouts 100,1000 --router gatewayAPI --gates 2 --abort --floor
	$(PY) hack/bench_scale.py --rollouts 10,100 --router replicas --floor
	$(PY) hack/bench_scale.py --rollouts 1000 --router gatewayAPI --gates 2 --abort --shards 3

cluster-up: $(VENV)/.installed
	$(PY) -m segue_testkit.cluster up

cluster-down: $(VENV)/.installed
	$(PY) -m segue_testkit.cluster down

crds: $(VENV)/.installed
	$(PY) -m segue.api.crd --write
	$(PY) -m segue.traffic.chart
	cp crds/rollouts.segue.dev.yaml charts/segue/crds/rollouts.segue.dev.yaml
	cp crds/metricproviders.segue.dev.yaml charts/segue/crds/metricproviders.segue.dev.yaml
	cp crds/migrations.segue.dev.yaml charts/segue/crds/migrations.segue.dev.yaml

clean: cluster-down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
