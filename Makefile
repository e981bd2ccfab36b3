# The two commands of the README: `make run` (the main job) and `make test` (the suite).
# Each creates .venv on first use (scripts/bootstrap.sh): no manual set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers: all cores ("auto"); CI's 2-core machine gets 2.
WORKERS ?= auto

.PHONY: run test lint format bench clean

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)

run: $(VENV)/.installed
	$(PY) -m experiments.compare_agents --quick

test: $(VENV)/.installed
	$(PY) -m pytest -n $(WORKERS) -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.installed
	$(PY) -m experiments.bench_env

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
