# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tft-installed
EXTRAS ?= train,cpu,serve,openvino,test
DATA ?=
MODEL ?= scratch:tiny
# pytest-xdist workers: one per core of the 2-core CI machine (tests/conftest.py shares the trained fixtures).
# A test file to a worker, in the order tests/conftest.py gives (longest first), not xdist's most-tests-first.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: venv test test-fast test-slow test-real-data test-newcomer demo dist clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned CPU build first: a bare `torch` requirement would pull GBs of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	# the distribution was named `tft` before it became `tft-toolchain`: an older .venv must not keep both
	$(PY) -m pip uninstall -q -y tft 2>/dev/null || true
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Everything, the slow real-data/real-model checks included (they skip only where ../shared/datasets is absent).
test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) -m slow

# only the checks on the real public datasets (../shared/datasets or $$TFT_SHARED_DATASETS)
test-real-data: $(STAMP)
	$(PYTEST) -m realdata

# the whole suite as a newcomer meets it: a fresh clone of this commit in an empty folder (no ../shared beside it),
# with its own .venv made by its own `make test`, exactly as the README says
test-newcomer:
	set -e; clone=$$(mktemp -d)/tft; trap 'rm -rf "$$(dirname $$clone)"' EXIT; \
	git clone -q . "$$clone"; cd "$$clone"; env -u TFT_SHARED_DATASETS $(MAKE) test

demo: $(STAMP)
	$(PY) scripts/demo.py $(if $(DATA),--data-dir $(DATA)) --model $(MODEL)

# the sdist and the wheel of tft-toolchain, in dist/ (what `pip install` takes where there is no checkout)
dist: $(STAMP)
	$(PY) -m pip install -q build
	rm -rf dist
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) runs exports model_repository demo_out .pytest_cache dist
