# Two commands do all set-up on a fresh machine: `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHECKOV := .venv-checkov
export SAM_CLI_TELEMETRY := 0

.PHONY: dev test lint typecheck unit integration e2e devtools sam-validate sam-build checkov bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

venv: $(STAMP)

## make dev: run the local stack (moto + API on 127.0.0.1:3000 + upstream emulator) in the foreground
dev: $(STAMP)
	$(BIN)/imagegw dev

## make test: lint, type-check, the template checks and every test tier
test: $(STAMP) lint typecheck sam-validate sam-build checkov
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

sam-validate: $(STAMP)
	$(BIN)/sam validate --lint

sam-build: $(STAMP)
	$(BIN)/sam build

# checkov pins its own boto3, older than aws-sam-cli's: it gets a venv of its own.
$(CHECKOV)/.installed:
	test -x $(CHECKOV)/bin/python || $(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install --disable-pip-version-check -q 'checkov==3.3.30'
	touch $@

checkov: $(CHECKOV)/.installed
	$(CHECKOV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --quiet --compact

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# the local tools themselves: the upstream emulator, the local stack, the admin CLI, the template reader
devtools: $(STAMP)
	$(BIN)/pytest tests/devtools

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
