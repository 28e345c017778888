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

# --dist loadfile: xdist's default hands each worker a first chunk of consecutive tests, so one worker got every
# contract and smoke test (they sort before unit/) while the other idled; whole files per worker also keep each
# module-scoped fixture (a trained run) built once
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --timeout 900 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow and not distributed" tests

bench: $(STAMP)
	$(BIN)/finescale bench length --preset quick --out runs/bench/length

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf runs .pytest_cache
