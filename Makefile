# One virtualenv (.venv) serves every target; it is (re)built when the dependency files change.
# `make help` lists the targets: each documented one carries a `## ` comment on its rule line.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DOCKERFILES := $(wildcard docker/*.Dockerfile tests/containers/*.Dockerfile)
PYTEST_ARGS ?=

.PHONY: help install run uploads messages logs test lint typecheck hadolint deploy-lint pytest localstack localstack-if-possible browser browser-if-possible images containers-if-possible bench soak audit clean
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
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml docker/compose.host.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --no-progress .github/workflows
	$(VENV)/bin/cfn-lint deploy/stack.yaml
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f deploy/stack.yaml

# LocalStack, the second backend of tests/localstack (it checks S3 checksums and answers FIFO
# sequence numbers; moto does neither), needs CPython 3.13 and pins a boto3 of its own: its own
# virtualenv, from its own fully pinned list. The interpreter: LOCALSTACK_PYTHON if given, else
# python3.13 on PATH (a pyenv shim counts when it runs), else pyenv's newest 3.13.x; looked for
# once, and only by the targets that need it. LOCALSTACK_PASS=required (.ci/run) makes a
# missing interpreter an error, and the LocalStack tests fail rather than skip.
LOCALSTACK_VENV := $(VENV)/tools/localstack
LOCALSTACK_STAMP := $(LOCALSTACK_VENV)/.installed-stamp
LOCALSTACK_PYTHON ?= $(eval LOCALSTACK_PYTHON := $(shell $(PYTHON) -m tests.localstack.stack find-python))$(LOCALSTACK_PYTHON)
LOCALSTACK_NONE := LocalStack pass: cannot run: no CPython 3.13 found (python3.13 on PATH, or a 3.13.x in pyenv), and LocalStack needs one. Install one (pyenv install 3.13) or name it: make test LOCALSTACK_PYTHON=/path/to/python3.13

$(LOCALSTACK_STAMP): tests/localstack-requirements.txt
	@test -n "$(LOCALSTACK_PYTHON)" || { echo "$(LOCALSTACK_NONE)" >&2; exit 1; }
	test -x $(LOCALSTACK_VENV)/bin/python || $(LOCALSTACK_PYTHON) -m venv --clear $(LOCALSTACK_VENV)
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet --no-compile -r tests/localstack-requirements.txt
	touch $@

# --no-compile: compiling all 500 MB at install took longer than the rest of the install
# (111 s against 49 s); LocalStack compiles the little it imports on its first start.
localstack: $(LOCALSTACK_STAMP) ## the LocalStack virtualenv for tests/localstack (needs CPython 3.13; make test builds it when it finds one)
	@:

# make pytest/test: build the LocalStack virtualenv when an interpreter is found; else say so
# plainly and go on (its tests then skip, with the same reason), unless LOCALSTACK_PASS=required.
localstack-if-possible:
	@if [ -n "$(LOCALSTACK_PYTHON)" ]; then \
		$(MAKE) --no-print-directory localstack LOCALSTACK_PYTHON="$(LOCALSTACK_PYTHON)"; \
	elif [ "$(LOCALSTACK_PASS)" = required ]; then \
		echo "$(LOCALSTACK_NONE)" >&2; exit 1; \
	else \
		echo "$(LOCALSTACK_NONE). The tests under tests/localstack are skipped; everything else runs." >&2; \
	fi

# The browser test (tests/s3svc/test_page_browser.py) drives Debian's chromium through its
# chromedriver. When either is missing, make pytest/test install both with apt-get if they run as
# root where apt-get exists; otherwise they say plainly that the browser test cannot run, and its
# tests skip with the same reason. BROWSER_PASS=required (.ci/run) makes that an error instead.
BROWSER_NONE := Browser test: cannot run: chromium or chromedriver is missing and cannot be installed here (that needs root and apt-get: apt-get install chromium chromium-driver)
BROWSER_APT := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null

browser: ## Debian's chromium and chromium-driver for the browser test (apt-get; needs root)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "browser test: $$(chromium --version 2>/dev/null) with $$(chromedriver --version | cut -d' ' -f1-2)"; \
	else \
		echo "browser test: installing chromium and chromium-driver with apt-get" >&2; \
		$(BROWSER_APT); \
	fi

# make pytest/test: install the browser when it can; else say so and go on (the browser test then
# skips, with the same reason), unless BROWSER_PASS=required.
browser-if-possible:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(MAKE) --no-print-directory browser || { [ "$(BROWSER_PASS)" != required ] && \
			echo "Browser test: cannot run: apt-get install chromium chromium-driver failed. Its tests are skipped; everything else runs." >&2; }; \
	elif [ "$(BROWSER_PASS)" = required ]; then \
		echo "$(BROWSER_NONE)" >&2; exit 1; \
	else \
		echo "$(BROWSER_NONE). Its tests are skipped; everything else runs." >&2; \
	fi

# The container checks (tests/containers) build both images with the real Dockerfiles and run
# them, and docker/compose.yaml, on a Docker engine of their own: as root they install Debian's
# docker.io and debootstrap when missing, start a private dockerd, and make the Dockerfiles' base
# image from Debian (cached in /var/cache/upload-messaging, or CONTAINER_CACHE). CONTAINER_ENGINE=system
# uses the machine's docker instead (the GitHub workflows). Where neither can be had, make
# pytest/test say so plainly and those tests skip with the same reason; CONTAINER_CHECKS=required
# (.ci/run) makes that an error.
CONTAINERS_NONE := Container checks: cannot run: no Docker engine can be started here (a private dockerd needs root, and apt-get for Debian's docker.io and debootstrap; or CONTAINER_ENGINE=system with a running daemon)

images: $(STAMP) ## build both images on a private Docker engine and check the containers and compose (root; installs docker.io)
	CONTAINER_CHECKS=required $(PY) -m pytest tests/containers -p no:randomly $(PYTEST_ARGS)

containers-if-possible:
	@if [ "$(CONTAINER_ENGINE)" = system ] || { [ "$$(id -u)" = 0 ] && \
		{ command -v dockerd >/dev/null || command -v apt-get >/dev/null; }; }; then :; \
	elif [ "$(CONTAINER_CHECKS)" = required ]; then \
		echo "$(CONTAINERS_NONE)" >&2; exit 1; \
	else \
		echo "$(CONTAINERS_NONE). The tests under tests/containers are skipped; everything else runs." >&2; \
	fi

pytest: $(STAMP) localstack-if-possible browser-if-possible containers-if-possible ## the test suite, in a random order (seed printed; PYTEST_ARGS=--randomly-seed=N repeats one)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## the benchmarks under bench/; each prints a table and updates bench/RESULTS.md
	$(PY) bench/upload.py --repeats 5
	$(PY) bench/upload_memory.py --repeats 2
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
