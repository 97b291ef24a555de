# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/adaptscope: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install demo test lint mutation
install: $(BIN)/adaptscope

demo: install
	$(BIN)/adaptscope run --methods tgan,freezed,cdc,dcl
	$(BIN)/adaptscope plot runs/ --out runs/figures

test: install
	$(BIN)/python -m pytest -q

# Known wrong programs planted in a scratch copy must each fail a fast test (10-15 min).
mutation: install
	$(BIN)/python experiments/mutation_check.py

lint: install
	$(BIN)/ruff check adaptscope tests experiments
