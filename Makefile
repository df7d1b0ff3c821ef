# smeledger developer targets. Everything runs from the project-local virtualenv in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TESTNET_DIR ?= .testnet
BASE_PORT ?= 7700
SEEDS ?= 2000
LEDGER_EXAMPLES ?= 3000
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DURATION ?= 600
SEED ?= 1
MODE ?= auto
RATE ?= 20

.PHONY: all venv lock testnet testnet-stop testnet-clean test lint soak chaos fuzz bench clean

all: test

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

# Re-resolve the newest versions pyproject.toml allows into constraints.txt (in a throwaway venv).
lock:
	@rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q --upgrade pip >/dev/null
	@.lock-venv/bin/pip install -q -e '.[dev]'
	@{ head -2 constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^smeledger'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt && rm -rf .lock-venv && echo "constraints.txt updated"

testnet: venv
	@$(BIN)/smeledger testnet up --dir $(TESTNET_DIR) --base-port $(BASE_PORT)

testnet-stop:
	@if [ -x $(BIN)/smeledger ]; then $(BIN)/smeledger testnet down --dir $(TESTNET_DIR); else echo "no virtualenv: nothing is running"; fi

testnet-clean: testnet-stop
	@rm -rf $(TESTNET_DIR)
	@echo "removed $(TESTNET_DIR)"

test: venv
	@$(BIN)/pytest -p no:cacheprovider -m "not chaos" tests

lint: venv
	@$(BIN)/ruff check protocol storage node client cli devtools tests examples
	@$(BIN)/mypy protocol storage
	@$(BIN)/lint-imports

soak: venv
	@$(PY) -m tests.sim.soak --seeds $(SEEDS) --jobs $(JOBS)
	@SMELEDGER_LEDGER_RANDOM=1 SMELEDGER_LEDGER_EXAMPLES=$(LEDGER_EXAMPLES) $(BIN)/pytest -p no:cacheprovider tests/property/test_ledger_machine.py

chaos: venv
	@$(PY) -m devtools.chaos --duration $(DURATION) --seed $(SEED) --mode $(MODE) --rate $(RATE)
	@$(BIN)/pytest -p no:cacheprovider -m chaos tests

fuzz: venv
	@$(PY) -m tests.fuzz.run

bench: venv
	@$(PY) -m devtools.bench

clean:
	@rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .lock-venv
