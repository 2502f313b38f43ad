# Set-up and checks. Everything the project needs is installed from here: nothing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck unit run bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,usb]'
	touch $(STAMP)

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

run: $(STAMP)
	$(BIN)/autoweave-plugins validate examples/plugins

bench: $(STAMP)
	$(BIN)/python bench/manifest_bench.py
	$(BIN)/python bench/discovery_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
