# The two commands of the README: `make demo` (the main job) and `make test` (the tests).
# Both create .venv in the checkout when it is missing and install the project into it.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-stamp
RUN     ?= runs/demo

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml tests/writers/package-lock.json
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,bench]'
	@# WARC writers of other ecosystems the ingest tests read (warcio.js); without npm they skip
	@if command -v npm >/dev/null; then npm ci --prefix tests/writers --silent --no-audit --no-fund \
		|| echo "npm ci in tests/writers failed: the warcio.js writer test will not run"; \
	else echo "npm not found: the warcio.js writer test will skip"; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/curate run dclm_baseline --output $(RUN) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
