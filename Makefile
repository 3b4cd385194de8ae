# sendguard — `make run` starts the embedded default, `make test` runs everything CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: run test test-workers lint typecheck unit venv clean postgres bench bench-tools screenshots node-sdks lock soak audit

$(STAMP): pyproject.toml tests/plugin_pkg/pyproject.toml tests/store_pkg/pyproject.toml \
		tests/upstream_pkg/pyproject.toml tests/upstream_pkg/pigeon_upstream/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# A third-party policy, installed as its own distribution, proves the plugin contract.
	$(BIN)/pip install --quiet ./tests/plugin_pkg
	# So does a third-party store backend for the store contract (tests/contract runs on it).
	$(BIN)/pip install --quiet ./tests/store_pkg
	# So does docs/upstreams.md's third-party upstream, the very code the doc shows.
	$(BIN)/pip install --quiet ./tests/upstream_pkg
	touch $(STAMP)

venv: $(STAMP)

# `make run` needs sendguard and its runtime dependencies only (no test tools, SDKs or linters).
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

# The ESPs' official Node SDKs for tests/e2e/test_esp_node_sdks.py, from the npm registry into a
# scratch folder inside the venv (nothing global). Without npm the test says it is skipped.
NODE_SDKS := $(VENV)/node-sdks
$(NODE_SDKS)/.installed: tests/node/package.json $(STAMP)
	@if command -v npm >/dev/null; then \
	  mkdir -p $(NODE_SDKS) && cp tests/node/package.json $(NODE_SDKS)/ && \
	  npm install --prefix $(NODE_SDKS) --no-audit --no-fund --silent && touch $@; \
	else echo "warning: npm not found; the Node SDK tests will be skipped" >&2; fi

node-sdks: $(NODE_SDKS)/.installed

run: $(RUNTIME)
	$(BIN)/sendguard serve

lint: $(STAMP)
	$(BIN)/ruff check sendguard plugins tests bench
	$(BIN)/ruff format --check sendguard plugins bench

typecheck: $(STAMP)
	$(BIN)/mypy sendguard plugins bench

# The suite talks to the PostgreSQL server on 127.0.0.1:5432 (trust auth, database `test`);
# start the machine's cluster if it is installed but stopped.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  command -v pg_ctlcluster >/dev/null && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start && \
	  sleep 2 && pg_isready -h 127.0.0.1 -p 5432; } || { \
	  echo "PostgreSQL is not running on 127.0.0.1:5432 and could not be started" >&2; exit 1; }

# Everything, tests/security and tests/fault in their short forms included, measured by coverage
# in the test process and in every `sendguard` process the tests start (pyproject.toml's
# [tool.coverage.run] patch = subprocess); one summary line at the end.
# Three pytest workers on the 2-core machine (with two, a third of the CPU sat idle while tests
# waited on their servers), one module each at a time, handed out in collection order
# (tests/conftest.py puts the minutes-long modules first); PYTEST_PARALLEL= runs them one by one.
# The 30 slowest tests are listed at the end: the suite must stay under CI's 20 minutes.
PYTEST_PARALLEL ?= -n 3 --dist loadfile --no-loadscope-reorder

test: lint typecheck postgres node-sdks audit
	@rm -f .coverage .coverage.*
	@status=0; $(BIN)/coverage run -m pytest $(PYTEST_PARALLEL) --durations=30 || status=$$?; \
	$(BIN)/coverage combine -q && \
	echo "coverage: $$($(BIN)/coverage report --format=total)% of sendguard (tests and served processes); coverage report for detail"; \
	exit $$status

# The whole suite again with every server a test starts running `serve --workers 2` (two
# worker processes sharing the listeners and the store; issue 11; tests/support/process.py).
# Tests that pass --workers themselves keep theirs. Not part of `make test`, which must stay under
# 20 minutes in CI.
test-workers: $(STAMP) postgres node-sdks
	SENDGUARD_TEST_WORKERS=2 $(BIN)/pytest $(PYTEST_PARALLEL)

# The long forms of tests/fault and tests/security (10 kill -9 restarts, a minute of upstream
# outage, ...), bounded to about 10 minutes; what they measured is in var/soak-figures.jsonl
# (docs/reliability.md keeps the last run's figures).
SOAK_FIGURES := $(CURDIR)/var/soak-figures.jsonl
soak: $(STAMP) postgres
	@mkdir -p var && rm -f $(SOAK_FIGURES)
	SENDGUARD_SOAK=1 SENDGUARD_FIGURES=$(SOAK_FIGURES) timeout 1200 $(BIN)/pytest -q tests/fault tests/security
	@cat $(SOAK_FIGURES)

# Known vulnerabilities in the locked runtime dependencies (pip-audit, PyPI's advisory data);
# fails on a finding, warns when the database cannot be reached.
audit: $(STAMP)
	$(BIN)/python .ci/audit.py requirements.lock

# The benchmark needs Postfix (smtp-source, smtp-sink, and a relay to compare with) and wrk.
bench-tools:
	@command -v smtp-source >/dev/null && command -v wrk >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix wrk >/dev/null; }

bench: $(STAMP) bench-tools postgres
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Refresh the review page's screenshots in docs/img (a normal test run leaves them alone).
screenshots: $(STAMP) postgres
	SENDGUARD_SCREENSHOTS=docs/img $(BIN)/pytest -q tests/e2e/test_review_page.py tests/e2e/test_review_page_edit.py -k "not postgres"

# requirements.lock pins the runtime dependencies the Docker image installs (and pip-audit reads).
# `make lock` resolves them afresh: a clean venv of the image's Python (3.11), `pip install .`
# (no test tools), a smoke test of the installed package, then `pip freeze`. Commit the result.
LOCK_VENV := build/lock-venv
lock:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "make lock: the image runs Python 3.11; use PYTHON=python3.11")'
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet .
	cd $(LOCK_VENV) && bin/sendguard check-config >/dev/null
	{ echo "# Runtime dependencies of sendguard, pinned for the Docker image; regenerate with make lock."; \
	  echo "# Resolved by pip for Python 3.11 on Linux from pyproject.toml's [project.dependencies]."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude sendguard; } > requirements.lock
	rm -rf $(LOCK_VENV)
