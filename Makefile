# One virtualenv (.venv) serves every target; it is (re)built when the dependency files change.
# `make help` lists the targets: each documented one carries a `## ` comment on its rule line.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DOCKERFILES := $(wildcard docker/*.Dockerfile)
PYTEST_ARGS ?=

.PHONY: help install run uploads messages logs test lint typecheck hadolint deploy-lint pytest bench soak audit clean
.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## build .venv with the pinned dependencies (every other target does it first)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP) ## emulated AWS (moto) + both services on 127.0.0.1; Ctrl-C stops (ARGS=--verbose, ARGS=--help)
	$(PY) -m deploy.devstack $(ARGS)

uploads: $(STAMP) ## list the recent uploads of the running `make run` stack
	$(PY) -m deploy.peek uploads $(ARGS)

messages: $(STAMP) ## show each local queue's oldest 10 messages without consuming them
	$(PY) -m deploy.peek messages $(ARGS)

logs: $(STAMP) ## the running `make run` stack's log lines of the last 30 minutes (JSON)
	$(PY) -m deploy.peek logs $(ARGS)

test: lint typecheck hadolint deploy-lint pytest ## every check: lint, types, Dockerfiles, delivery files, the test suite

lint: $(STAMP) ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy --strict
	$(VENV)/bin/mypy

hadolint: $(STAMP) ## lint the Dockerfiles
	$(if $(DOCKERFILES),$(VENV)/bin/hadolint $(DOCKERFILES),@echo "no Dockerfiles yet")

# checkov pins a boto3 that conflicts with constraints.txt: it gets its own virtualenv, installed
# from its own fully pinned list.
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp

$(CHECKOV_STAMP): deploy/checkov-requirements.txt $(STAMP)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r deploy/checkov-requirements.txt
	touch $@

deploy-lint: $(STAMP) $(CHECKOV_STAMP) ## compose file, workflows (schema + zizmor), CloudFormation (cfn-lint + checkov)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --no-progress .github/workflows
	$(VENV)/bin/cfn-lint deploy/stack.yaml
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f deploy/stack.yaml

pytest: $(STAMP) ## the test suite, in a random order (seed printed; PYTEST_ARGS=--randomly-seed=N repeats one)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## the benchmarks under bench/; each prints a table and updates bench/RESULTS.md
	$(PY) bench/upload.py --repeats 5
	$(PY) bench/sqs.py
	$(PY) bench/logging_overhead.py

soak: $(STAMP) ## the load-without-loss test at full size (make test runs a short variant)
	SOAK_MESSAGES=20000 SOAK_CONCURRENCY=200 SOAK_UPLOADS=50 SOAK_UPLOAD_MIB=32 \
		$(PY) -m pytest tests/e2e/test_soak.py -q -s

audit: $(STAMP) ## known vulnerabilities in the locked dependencies (needs PyPI's JSON API or OSV)
	$(PY) -m pip install --quiet pip-audit==2.10.1
	$(VENV)/bin/pip-audit --strict -r constraints.txt --no-deps --disable-pip

clean: ## remove .venv and the tool caches
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
