# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,examples,parquet]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlguard demo

lint: $(STAMP)
	$(BIN)/ruff check mlguard tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/passthrough.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

docs: $(STAMP)
	$(BIN)/python -m mlguard.config.reference README.md
