# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LIBWATCH := $(VENV)/bin/libwatch
# `make run` keeps its catalog and cache inside the checkout, so it never
# touches a real installation's state.
RUN_ENV := -u LIBWATCH_MONGO_URI -u LIBWATCH_AMQP_URL LIBWATCH_HOME=$(CURDIR)/.run/home \
	LIBWATCH_CACHE_DIR=$(CURDIR)/.run/cache LIBWATCH_CONFIG=/dev/null

.PHONY: run test lint typecheck venv bench-deps clean

$(VENV)/.stamp-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-run
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.stamp-run

run: $(VENV)/.stamp-run
	env $(RUN_ENV) $(LIBWATCH) scan examples/library --name example
	env $(RUN_ENV) $(LIBWATCH) rebuild example --run
	env $(RUN_ENV) $(LIBWATCH) status example
	@echo "thumbnails: $$(find .run/cache/thumbnail -type f | wc -l) files under .run/cache/thumbnail, cache images under .run/cache/cache"

test: $(VENV)/.stamp-test
	$(PY) -m pytest $(PYTEST_ARGS)

# pyflakes, pycodestyle, isort, bugbear, pyupgrade and mccabe over the whole tree (settings in pyproject.toml).
lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .

# The pure core is held to mypy --strict (settings in pyproject.toml).
typecheck: $(VENV)/.stamp-test
	$(PY) -m mypy --strict libwatch/core

# Baselines the benchmarks compare against (xxh128sum, vipsthumbnail).
bench-deps:
	apt-get install -y xxhash libvips-tools

clean:
	rm -rf $(VENV) .run
