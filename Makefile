# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tft-installed
EXTRAS ?= train,cpu,serve,test
DATA ?=
MODEL ?= scratch:tiny
# pytest-xdist workers: one per core of the 2-core CI machine (tests/conftest.py shares the trained fixtures).
# A test file to a worker, in the order tests/conftest.py gives (longest first), not xdist's most-tests-first.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: venv test test-fast test-slow demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned CPU build first: a bare `torch` requirement would pull GBs of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Everything, the slow real-data/real-model checks included (they skip only where ../shared/datasets is absent).
test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) -m slow

demo: $(STAMP)
	$(PY) scripts/demo.py $(if $(DATA),--data-dir $(DATA)) --model $(MODEL)

clean:
	rm -rf $(VENV) runs exports model_repository demo_out .pytest_cache
