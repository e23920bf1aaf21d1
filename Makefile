# The two commands of the README. Everything else is plumbing for them.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

# The suite mostly waits (pings, trial deadlines, a client's backoff): four workers on two cores, a test file each
# at a time, so that a module's shared controller (its module-scoped fixture) is started once; then the tests
# marked alone (a latency held to a baseline), with nothing beside them.
PARALLEL := $(VENV)/bin/python -m pytest -n 4 --dist loadfile
SERIAL := $(VENV)/bin/python -m pytest

# The documentation site: served on http://127.0.0.1:8000 with its references made from the code (docs/hooks/);
# built strictly by lint, into a directory of its own, so that a broken link or a reference that cannot be made
# fails it. NO_MKDOCS_2_WARNING: Material's banner about its successor, on every build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

.PHONY: demo test test-loaded lint docs screenshots

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
	site=$$(mktemp -d) && $(MKDOCS) build --strict --quiet --site-dir "$$site"; status=$$?; rm -rf "$$site"; exit $$status

docs: $(STAMP)
	$(MKDOCS) serve

# The documentation's pictures, taken again from a real run by headless Chromium (tests/screenshots.py).
screenshots: $(STAMP)
	$(VENV)/bin/python -m tests.screenshots docs/images

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,docs]'
	touch $@
