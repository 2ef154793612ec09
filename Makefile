# Two commands for a fresh machine: `make run` (quickstart search) and `make test` (lint + the
# quick tests, under 5 minutes on 2 cores). `make test-all` adds the slow end-to-end tests (CI).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch; a plain `torch` would pull gigabytes of CUDA packages.
TORCH_PIN ?= torch==2.13.0
LINTED := $(wildcard paretune tests benchmarks examples)

.PHONY: install run test test-all lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: install
	$(VENV)/bin/paretune run conf/quickstart.yaml

lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

test: lint
	$(PY) -m pytest -q -m "not slow"

test-all: lint
	$(PY) -m pytest -q

format: install
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

clean:
	rm -rf $(VENV) build *.egg-info
