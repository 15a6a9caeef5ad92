# One virtualenv (.venv) serves every target; it is (re)built when the dependency files change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DOCKERFILES := $(wildcard docker/*.Dockerfile)
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck hadolint deploy-lint pytest bench soak audit clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## make run: emulated AWS (moto) + the services, on 127.0.0.1; Ctrl-C stops everything.
run: $(STAMP)
	$(PY) deploy/devstack.py $(ARGS)

## make test: lint, types, Dockerfiles, delivery files, then the whole pytest suite.
test: lint typecheck hadolint deploy-lint pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

hadolint: $(STAMP)
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

## make deploy-lint: compose file, workflows (schema + zizmor), CloudFormation (cfn-lint + checkov).
deploy-lint: $(STAMP) $(CHECKOV_STAMP)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --no-progress .github/workflows
	$(VENV)/bin/cfn-lint deploy/stack.yaml
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f deploy/stack.yaml

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make bench: the benchmarks under bench/; each prints a table and updates bench/RESULTS.md.
bench: $(STAMP)
	$(PY) bench/upload.py --repeats 5
	$(PY) bench/sqs.py
	$(PY) bench/logging_overhead.py

## make soak: the load-without-loss test at full size (make test runs a short variant).
soak: $(STAMP)
	SOAK_MESSAGES=20000 SOAK_CONCURRENCY=200 SOAK_UPLOADS=50 SOAK_UPLOAD_MIB=32 \
		$(PY) -m pytest tests/e2e/test_soak.py -q -s

## make audit: known vulnerabilities in the locked dependencies (needs PyPI's JSON API or OSV).
audit: $(STAMP)
	$(PY) -m pip install --quiet pip-audit==2.10.1
	$(VENV)/bin/pip-audit --strict -r constraints.txt --no-deps --disable-pip

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
