# The two commands of the README. Everything else is plumbing for them.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

# The suite mostly waits (pings, trial deadlines, a client's backoff): four workers on two cores, a test file each
# at a time, so that a module's shared controller (its module-scoped fixture) is started once; then the tests
# marked alone (a latency held to a baseline), with nothing beside them.
PARALLEL := $(VENV)/bin/python -m pytest -n 4 --dist loadfile
SERIAL := $(VENV)/bin/python -m pytest

.PHONY: demo test test-loaded lint

demo: $(STAMP)
	$(VENV)/bin/python -m controller demo

test: $(STAMP)
	$(PARALLEL) -m "not alone"
	$(SERIAL) -m alone

# The tests whose verdicts come from times, with one busy process per core beside them (tests/conftest.py).
test-loaded: $(STAMP)
	DIALOUT_TEST_LOAD=1 $(PARALLEL) -m "timing and not alone"
	DIALOUT_TEST_LOAD=1 $(SERIAL) -m "timing and alone"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@
