# Lifelong's entry points. `make demo` and `make test` work on a fresh clone: they create the
# virtual environment, install the project, build what the tests need and run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo
PYTEST_ARGS ?=
export LIFELONG_CACHE ?= $(HOME)/.cache/lifelong
export PATH := $(CURDIR)/$(VENV)/bin:$(LIFELONG_CACHE)/bin:$(PATH)

# An install is redone only when pyproject.toml changes (the stamp records which one).
INSTALL_KEY := $(shell cat pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(INSTALL_KEY)

.PHONY: demo test test-unit lint format tools crds scan clean help

help:
	@echo "make demo   - set up and run examples/digits.yaml end to end (report in $(OUT))"
	@echo "make test   - set up, build the test control plane and run every test"
	@echo "make lint   - ruff, formatting, mypy and the import-layer contracts"
	@echo "make scan   - hadolint and checkov over the Dockerfile and the rendered chart"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

tools:
	tools/build.sh
	tools/install-prometheus.sh

demo: $(STAMP)
	$(VENV)/bin/lifelong run examples/digits.yaml --output $(OUT)

test: $(STAMP) tools
	tools/pytest.sh $(PYTEST_ARGS)

test-unit: $(STAMP)
	tools/pytest.sh -m unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The chart and the GitOps example carry copies (Helm and Kustomize read no file outside them).
crds: $(STAMP)
	$(VENV)/bin/lifelong crds --output crds
	cp crds/lifelong.dev_*.yaml charts/lifelong/crds/
	cp crds/lifelong.dev_*.yaml examples/gitops/crds/

# checkov has a large dependency tree: it gets a venv of its own, apart from the project's pins.
SCAN_VENV ?= .venv-scan
$(SCAN_VENV)/bin/checkov:
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet "checkov==3.3.30"

scan: $(STAMP) tools $(SCAN_VENV)/bin/checkov
	SCAN_VENV=$(SCAN_VENV) tools/scan.sh

clean:
	rm -rf out build dist .mypy_cache .ruff_cache .pytest_cache
