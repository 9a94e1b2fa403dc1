# `make run` and `make test` set everything up on a fresh machine (Python 3.10+ with venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)  ## the default experiment (model=lstm data=markov), W&B offline
	$(PY) run.py $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)  ## the tests not marked slow: the edit-test loop (under 2 minutes)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)  ## ruff, and the package's layers (pyproject.toml [tool.importlinter])
	$(VENV)/bin/ruff check src tests benchmarks scripts run.py
	$(VENV)/bin/ruff format --check src tests benchmarks scripts run.py
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts run.py
	$(VENV)/bin/ruff format src tests benchmarks scripts run.py

bench: $(STAMP)  ## benchmarks/ (ratios measured side by side)
	$(PY) benchmarks/offsets_cost.py
	$(PY) benchmarks/flstm_throughput.py
	$(PY) benchmarks/fused_vs_loop.py
	$(PY) benchmarks/extraction_cost.py
	$(PY) benchmarks/lightning_overhead.py
	$(PY) benchmarks/speech_batching.py

clean:
	rm -rf $(VENV)
