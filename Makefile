# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CATALOGUES := $(wildcard portal/translations/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGUES:.po=.mo)

.PHONY: run test bench lint translations extract-messages install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) $(COMPILED)

portal/translations/%/LC_MESSAGES/messages.mo: portal/translations/%/LC_MESSAGES/messages.po $(STAMP)
	$(BIN)/pybabel compile --use-fuzzy -f -d portal/translations -l $* >/dev/null

translations: $(COMPILED)

# Re-extract the message ids after changing UI text, then translate the new ones in the .po.
extract-messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -o portal/translations/messages.pot --no-location --sort-output .
	$(BIN)/pybabel update -i portal/translations/messages.pot -d portal/translations --no-fuzzy-matching --ignore-obsolete

run: install
	$(BIN)/python -m portal.dev.run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks measure PostgreSQL; override BENCH_DATABASE_URL to point elsewhere (BENCH_ROWS=100000 for a quick run).
BENCH_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
bench: install
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python -m pytest tests/benchmarks -s -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) instance/portal.db* instance/outbox instance/redis
