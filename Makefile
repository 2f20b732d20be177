# Two commands for a newcomer: `make fit` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pyenv reads .python-version (3.12); fall back to an explicit python3.12 on PATH.
SYSTEM_PYTHON ?= $(shell command -v python3.12 2>/dev/null || command -v python 2>/dev/null)
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: bytecode fit test test-all validate bench bench-graded report-check lint format simulate clean-venv

$(STAMP): pyproject.toml requirements.lock
	@$(SYSTEM_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else "error: Python 3.12 is needed (found " + sys.version.split()[0] + "); install it (pyenv install 3.12) or set SYSTEM_PYTHON=/path/to/python3.12")'
	@echo "== creating $(VENV) and installing the pinned stack (requirements.lock)"
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

# Bytecode written ahead: where PYTHONDONTWRITEBYTECODE is set (as on this project's
# machines) every Python process would otherwise compile the whole stack from source, about
# 5 s per process (each fit and each script a test starts). Python still checks each .pyc
# against its source, so a stale one is never used.
bytecode: $(STAMP)
	@$(PY) -m compileall -q src > /dev/null

fit: $(STAMP) bytecode
	$(PY) scripts/fit.py

# The fast tier (a newcomer's check, one real end-to-end fit of the default included) and
# every tier but the statistical studies and benchmarks; both print their 15 slowest tests.
test: $(STAMP) bytecode
	$(PY) -m pytest -m "not slow and not statistical and not bench" -q --durations=15

test-all: $(STAMP) bytecode
	$(PY) -m pytest -m "not statistical and not bench" -q --durations=15

validate: $(STAMP)
	$(PY) scripts/validate.py

bench: $(STAMP)
	$(PY) bench/bench_fit.py
	$(PY) bench/bench_default.py
	$(PY) bench/bench_scaling.py
	$(PY) bench/bench_datapass.py

bench-graded: $(STAMP)
	$(PY) bench/bench_graded.py

report-check: $(STAMP)
	$(PY) scripts/report_check.py

simulate: $(STAMP)
	$(PY) scripts/simulate.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src scripts tests bench examples
	$(VENV)/bin/ruff format --check src scripts tests bench examples

format: $(STAMP)
	$(VENV)/bin/ruff format src scripts tests bench examples
	$(VENV)/bin/ruff check --fix src scripts tests bench examples

clean-venv:
	rm -rf $(VENV)
