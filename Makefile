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

.PHONY: demo test test-unit lint format tools crds clean help

help:
	@echo "make demo   - set up and run examples/digits.yaml end to end (report in $(OUT))"
	@echo "make test   - set up, build the test control plane and run every test"
	@echo "make lint   - ruff, formatting, mypy and the import-layer contracts"

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

crds: $(STAMP)
	$(VENV)/bin/lifelong crds --output crds

clean:
	rm -rf out build dist .mypy_cache .ruff_cache .pytest_cache
