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

# End to end first (writes its section of docs/BENCHMARKS.md; a missed target is reported there, not fatal),
# then the audit trail's targets (issue 4: appends, verify, export, stage latency, PostgreSQL; PostgreSQL at
# MLGUARD_TEST_PG, or add --no-pg), the unguarded-route pass-through cost, the memory soak and the fuzz run.
# Long forms of the benchmarks (tests run their smoke forms). A script that reports a missed target exits 1; the
# leading '-' lets the next one run all the same (make says "ignored"), so one miss does not hide the others.
bench: $(STAMP)
	-$(BIN)/python bench/e2e.py --write-docs
	-$(BIN)/python bench/audit.py --records 50000
	-$(BIN)/python bench/passthrough.py
	-$(BIN)/python bench/soak.py --requests 30000
	$(BIN)/python bench/fuzz.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

docs: $(STAMP)
	$(BIN)/python -m mlguard.config.reference README.md
