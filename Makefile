# Two commands do all set-up on a fresh machine: `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHECKOV := .venv-checkov
export SAM_CLI_TELEMETRY := 0

.PHONY: dev test lint typecheck unit integration e2e devtools sam-validate sam-build checkov bench lock clean

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

# pip-tools resolves the lock in a venv of its own, so its pins never depend on the dev venv.
LOCK_TOOLS := .venv-lock
$(LOCK_TOOLS)/.installed:
	test -x $(LOCK_TOOLS)/bin/python || $(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --disable-pip-version-check -q 'pip-tools==7.6.2'
	touch $@

## make lock: pin layers/imagegw/requirements.lock (exact versions, the hash of every file) from
## requirements.txt; existing pins are kept, `make lock ARGS=--upgrade` moves them to the newest allowed.
lock: $(LOCK_TOOLS)/.installed
	cd layers/imagegw && CUSTOM_COMPILE_COMMAND='make lock' ../../$(LOCK_TOOLS)/bin/pip-compile --quiet \
		--generate-hashes --allow-unsafe --no-strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock $(ARGS) requirements.txt

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
	rm -rf $(VENV) $(CHECKOV) $(LOCK_TOOLS) .aws-sam .pytest_cache .mypy_cache .ruff_cache
