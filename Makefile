# finescale: `make demo` and `make test` are all a newcomer needs; both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/finescale demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --timeout 900 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not distributed" tests

bench: $(STAMP)
	$(BIN)/finescale bench length --preset quick --out runs/bench/length

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf runs .pytest_cache
