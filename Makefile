# One virtualenv (.venv) serves every target; it is (re)built when the dependency files change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DOCKERFILES := $(wildcard docker/*.Dockerfile)
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck hadolint pytest bench soak audit clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## make run: emulated AWS (moto) + the services, on 127.0.0.1; Ctrl-C stops everything.
run: $(STAMP)
	$(PY) deploy/devstack.py $(ARGS)

## make test: lint, types, Dockerfiles, then the whole pytest suite.
test: lint typecheck hadolint pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

hadolint: $(STAMP)
	$(if $(DOCKERFILES),$(VENV)/bin/hadolint $(DOCKERFILES),@echo "no Dockerfiles yet")

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make bench: the benchmarks under bench/; each prints a table and updates bench/RESULTS.md.
bench: $(STAMP)
	$(PY) bench/upload.py
	$(PY) bench/sqs.py

## make soak: the load-without-loss test at full size (make test runs a short variant).
soak: $(STAMP)
	SOAK_MESSAGES=20000 SOAK_CONCURRENCY=200 SOAK_UPLOADS=50 SOAK_UPLOAD_MIB=32 \
		$(PY) -m pytest tests/e2e/test_soak.py -q -s

## make audit: known vulnerabilities in the locked dependencies (needs PyPI's JSON API or OSV).
audit: $(STAMP)
	$(PY) -m pip install --quiet pip-audit
	$(VENV)/bin/pip-audit --strict -r constraints.txt --no-deps --disable-pip

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
