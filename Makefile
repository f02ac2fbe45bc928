# Two commands matter: `make demo` (the main job end to end) and `make test` (the suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: setup test test-slow demo bench lint clean gpu-so gpu-carry

setup: $(STAMP)

# Torch first, from the pinned CPU wheel, then the package; constraints.txt keeps every later
# install from swapping torch for a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0 -c constraints.txt
	$(PIP) install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(PY) -m vmunet.demo --out $(DEMO_DIR)

bench: setup
	$(PY) benchmarks/bench_scan.py
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_predict.py

# GPU: build mamba-ssm's selective-scan kernel for the device (cross build, no GPU needed) and
# gather what one device call carries (benchmarks/gpu/make_carry.sh says what and why)
gpu-so: setup
	bash benchmarks/gpu/build_selective_scan.sh

gpu-carry: setup
	PY=$(PY) bash benchmarks/gpu/make_carry.sh

lint: setup
	$(VENV)/bin/ruff check vmunet tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
