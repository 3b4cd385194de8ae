# sendguard — `make run` starts the embedded default, `make test` runs everything CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit venv clean

$(STAMP): pyproject.toml tests/plugin_pkg/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# A third-party policy, installed as its own distribution, proves the plugin contract.
	$(BIN)/pip install --quiet ./tests/plugin_pkg
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/sendguard serve

lint: $(STAMP)
	$(BIN)/ruff check sendguard plugins tests
	$(BIN)/ruff format --check sendguard plugins

typecheck: $(STAMP)
	$(BIN)/mypy sendguard plugins

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
