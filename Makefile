# Tandem: every target sets up what it needs (venv, pinned deps, PostgreSQL) on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
FN ?= transaction_processor
EVENT ?= events/sqs_valid_batch.json
REGION ?= us-east-1

.PHONY: help setup tools drill test test-unit test-integration lint format build invoke bench pins clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: ## project venv (.venv, Python 3.12) with pinned deps, PostgreSQL server
	@bash scripts/setup.sh

tools: ## tool venvs for aws-sam-cli/cfn-lint and checkov (kept apart: they pin old boto3/pydantic)
	@bash scripts/setup-tools.sh

drill: setup ## the main job: local DR drill (options: ARGS="--transactions N --poison P --duplicates D --seed S --report PATH")
	@$(VENV)/bin/tandem drill $(ARGS)

test: setup tools ## all tests: unit and integration on both cores, then twin and drill (one twin at a time); ARGS: one pytest run
	@if [ -n "$(ARGS)" ]; then $(PY) -m pytest $(ARGS); else \
	  $(PY) -m pytest -n 2 --dist loadfile tests/unit tests/integration && $(PY) -m pytest tests/drill tests/twin; fi

test-unit: setup tools
	@$(PY) -m pytest tests/unit $(ARGS)

test-integration: setup tools
	@$(PY) -m pytest tests/integration tests/twin tests/drill $(ARGS)

invoke: setup ## run one function Docker-free in the twin: make invoke FN=transaction_processor EVENT=events/<file>.json [REGION=us-west-2]
	@$(VENV)/bin/tandem invoke $(FN) $(EVENT) --region $(REGION)

lint: setup tools ## ruff, ruff format --check, mypy, sam validate --lint, cfn-lint, checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@bash scripts/lint-templates.sh

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

build: tools ## sam build (Python 3.12 from pyenv, no container)
	@bash scripts/build.sh

bench: setup ## benchmarks: ratios against baselines measured in the same run
	@$(PY) -m bench $(ARGS)

pins: setup ## re-compile the pinned requirements files from requirements/*.in
	@bash scripts/pins.sh

clean:
	rm -rf .aws-sam reports .pytest_cache .mypy_cache .ruff_cache
