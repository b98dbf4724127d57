# rmd — make targets. `make test` is the one CI runs (through .ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv test unit integration lint typecheck demo demo-sim dev-cluster-up dev-cluster-down bench bench-flink config-docs grafana reliability fuzz soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Provisions the control plane (apt packages, a one-time ~4 min build of kube-apiserver,
# kube-controller-manager and kube-scheduler v1.20.2, cached in ~/.cache/rmd) and real Flink
# (a JDK from apt, Flink from its PyPI wheels, cached in ~/.cache/rmd/flink-<version>) before
# the tests; Prometheus and promtool (Debian's package) for the metrics tests; shellcheck
# (Debian's package) for the entrypoint scripts' test.
provision: $(STAMP)
	$(BIN)/python -m rmd_dev.provision --flink --prometheus
	@command -v shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck; }

test: provision lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

integration: provision
	$(BIN)/pytest -q -p no:cacheprovider tests/integration

lint: $(STAMP)
	$(BIN)/ruff check rmd rmd_dev tests bench
	$(BIN)/ruff format --check rmd rmd_dev tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The real story: Flink's JobManager + rmd daemon as local processes, real TaskManager pods, a
# parallelism-4 job, a pod deleted with kubectl, a cancel, the idle release (about a minute).
demo: provision
	$(BIN)/python -m rmd_dev.demo

# The quick simulated story: rmd's HTTP API played as a JobMaster, agents without Flink.
demo-sim: provision
	$(BIN)/python -m rmd_dev.demo_sim

dev-cluster-up: provision
	$(BIN)/rmd dev-cluster up

dev-cluster-down: $(STAMP)
	$(BIN)/rmd dev-cluster down

bench: provision
	$(BIN)/python -m bench $(ARGS)

# The same Flink job under Flink's own native resource manager and under rmd (real JVMs).
bench-flink: provision
	$(BIN)/python -m bench.flink_side_by_side $(ARGS)

# README's tables of configuration keys, from rmd/config/options.py (a unit test checks them).
config-docs: $(STAMP)
	$(BIN)/python -m rmd_dev.config_docs

# conf/grafana/rmd.json, from rmd_dev/grafana.py (a unit test checks it is current).
grafana: $(STAMP)
	$(BIN)/python -m rmd_dev.grafana

# The fault matrix in its full profile (30-60 s faults; about 10 minutes), then
# docs/RELIABILITY.md from its rows (docs/reliability-results.jsonl; a unit test checks the
# two agree). `make test` runs the same matrix in its short profile.
reliability: provision
	rm -f docs/reliability-results.jsonl
	RMD_RELIABILITY_PROFILE=full RMD_RELIABILITY_RESULTS=$(CURDIR)/docs/reliability-results.jsonl \
		$(BIN)/pytest -q -p no:cacheprovider -p no:randomly tests/integration/test_fault_matrix.py
	$(BIN)/python -m tests.support.reliability_doc docs/reliability-results.jsonl docs/RELIABILITY.md docs/soak-summary.txt

# schemathesis against the served /openapi.json, 2000 examples per operation (CI: 25).
fuzz: $(STAMP)
	RMD_FUZZ_EXAMPLES=2000 $(BIN)/pytest -q -p no:cacheprovider -p no:randomly tests/unit/test_api_fuzz.py

# The soak (not in CI; a few seconds of it are, tests/integration/test_soak_smoke.py): the
# daemon driven for 20 minutes on a control plane of its own; RSS, fds and asyncio tasks
# sampled each minute, their slopes printed and written to docs/soak-summary.txt, which
# docs/RELIABILITY.md quotes (make reliability). Shorter: make soak ARGS="--minutes 5".
soak: provision
	$(BIN)/python -m tests.integration.soak --summary-file docs/soak-summary.txt $(ARGS)

clean:
	rm -rf $(VENV) .devcluster
