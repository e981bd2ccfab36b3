# The two commands of the README: `make run` (the main job) and `make test` (the suite).
# Each creates .venv on first use (scripts/bootstrap.sh): no manual set-up. `make test` also
# installs the integration extras (Ray RLlib, TorchRL, SB3 + SuperSuit) so their tests run.
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers: all cores ("auto"); CI's 2-core machine gets 2. Tests marked
# xdist_group("ray") share one worker (and one local Ray) under --dist loadgroup.
WORKERS ?= auto

.PHONY: run test test-floor lint format bench cuda-build clean

$(VENV)/.installed-run: pyproject.toml scripts/bootstrap.sh
	RECENV_EXTRAS=dev bash scripts/bootstrap.sh $(VENV)
	touch $@

$(VENV)/.installed-test: pyproject.toml scripts/bootstrap.sh
	RECENV_EXTRAS=dev,integrations bash scripts/bootstrap.sh $(VENV)
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(PY) -m experiments compare --preset quick

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	# The integrations extra is installed here: an integration test that cannot import fails.
	RECENV_REQUIRE_INTEGRATIONS=1 $(PY) -m pytest -n $(WORKERS) --dist loadgroup -q

lint: $(VENV)/.installed-run
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.installed-run
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The benchmark's peers (mpe2, VMAS: the bench extra) are installed beside the run set-up.
$(VENV)/.installed-bench: $(VENV)/.installed-run
	$(PY) -m pip install --disable-pip-version-check -e ".[bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m experiments.bench_env

# The compiled CUDA step's Triton kernels built for a faked H100, no GPU needed (the
# cuda-build extra: Triton with its ptxas; experiments/cuda_build.py): the step at 1,024
# markets and the face, then with 64-bit indices (the form of the largest batches), then
# run by Triton's interpreter beside the eager step (12 steps, two episode ends; ~2 min);
# then the tests that need Triton, which CI (no Triton) skips (~5 min).
$(VENV)/.installed-cuda-build: $(VENV)/.installed-run
	$(PY) -m pip install --disable-pip-version-check -e ".[cuda-build]"
	touch $@

cuda-build: $(VENV)/.installed-cuda-build
	$(PY) -m experiments.cuda_build
	$(PY) -m experiments.cuda_build --wide-index --no-face
	$(PY) -m experiments.cuda_build --interpret 12 --num-envs 16 --config horizon=5
	$(PY) -m pytest -q -p no:cacheprovider tests/experiments/test_cuda_build.py

# The suite against the oldest releases pyproject.toml allows (each requirement pinned to its
# floor; scripts/test_floor.sh): run it when a floor changes. Not part of `make test`.
test-floor:
	WORKERS=$(WORKERS) bash scripts/test_floor.sh .venv-floor

clean:
	rm -rf $(VENV) .venv-floor .pytest_cache .ruff_cache .mypy_cache
