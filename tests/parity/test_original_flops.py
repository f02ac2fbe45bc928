"""The paper's 4.11 G "FLOPs" is thop's count at the original training script's input size.

The original counts with ``utils.cal_params_flops(model, size, logger)``, called once by
``train.py`` (the ISIC script; ``train_synapse.py`` does not count) as
``cal_params_flops(model, 256, logger)``: thop's ``profile`` on a 1x3x256x256 input
(VM-UNet commit ``43c495b``). thop (0.1.1.post2209072238, the [dev] pin) hooks module classes: it
counts ``nn.Linear`` and ``nn.Conv2d`` multiply-accumulates and ``nn.LayerNorm`` elements, and
nothing called as a function, so it misses the ``x_proj``/``dt_proj`` einsums of each SS2D (1.22 G
at 256²), the selective scan (1.35 G, see ``vmunet.models.summary``) and the elementwise work. Its
"params" likewise sees only the hooked modules' parameters: 22.04 M of the 27.43 M (the paper's
number is the script's other line, the sum over ``model.parameters()``).

Frozen values: thop 0.1.1.post2209072238 on the original VMUNet at the paper config (commit
``43c495b``, torch 2.13 CPU); the second test recomputes them from the original when
``third_party/`` is present.
"""

from __future__ import annotations

import ast
import re
import types

import torch
from original_code import load_definitions, original_vmunet_package, vmunet_dir
from thop import profile

from vmunet.models import create_model
from vmunet.ops.selective_scan import selective_scan

PAPER = dict(depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1], drop_path_rate=0.2)  # config_setting*.py
PAPER_GFLOPS = 4.11  # the VM-UNet paper's "FLOPs" of VM-UNet
# thop's (ops, params) on the original paper model (1 class, 3 channels) at 1x3xSxS. train.py (ISIC,
# 256² input) is the only script that counts; at 224² (train_synapse.py's input) thop gives
# 3_148_142_592, so the paper's number is the 256² count.
FROZEN_THOP = {256: (4_111_859_712, 22_037_737)}
FROZEN_TOTAL_PARAMETERS = 27_427_561


def test_thop_on_our_paper_model_gives_the_originals_count():
    torch.manual_seed(0)
    ours = create_model("vmunet", num_classes=1, in_chans=3).eval()
    ops, params = profile(ours, inputs=(torch.randn(1, 3, 256, 256),), verbose=False)
    assert (ops, params) == FROZEN_THOP[256]
    assert round(ops / 1e9, 2) == PAPER_GFLOPS  # the paper's number, to its two decimals


def _train_py_count_size(path) -> int:
    """The ``size`` argument of train.py's one ``cal_params_flops(model, size, logger)`` call."""
    calls = [node for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "cal_params_flops"]
    assert len(calls) == 1, f"{path}: expected one cal_params_flops call, found {len(calls)}"
    return ast.literal_eval(calls[0].args[1])


class _Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def _cpu_randn(*size: int) -> torch.Tensor:
    """``torch.randn`` whose result's ``.cuda()`` stays on the CPU (the original moves its input)."""
    tensor = torch.randn(*size)
    tensor.cuda = lambda *args, **kwargs: tensor
    return tensor


def test_original_cal_params_flops_gives_the_papers_number(monkeypatch):
    root = vmunet_dir()  # skips without third_party/VM-UNet
    size = _train_py_count_size(root / "train.py")
    assert size == 256
    package = original_vmunet_package()
    # thop does not see the scan (a function call, not a module), so which implementation computes
    # it cannot change the count; ours (numba on the CPU) instead of mamba-ssm's selective_scan_ref
    # (37 s at 256² here).
    monkeypatch.setattr(package.vmamba, "selective_scan_fn",
                        selective_scan)
    torch.manual_seed(0)
    model = package.vmunet.VMUNet(num_classes=1, input_channels=3, **PAPER)
    # The original function as written; its module's `from thop import profile` provided here.
    namespace = {"torch": types.SimpleNamespace(randn=_cpu_randn), "profile": profile,
                 "print": lambda *args: None}
    cal_params_flops = load_definitions(root / "utils.py", ["cal_params_flops"], namespace)["cal_params_flops"]
    logger = _Logger()
    cal_params_flops(model, size, logger)
    (line,) = logger.lines
    flops, params, total = map(float, re.fullmatch(
        r"flops: ([0-9.]+), params: ([0-9.]+), Total params: : ([0-9.]+)", line).groups())
    ops, thop_params = FROZEN_THOP[size]
    assert flops == ops / 1e9 and params == thop_params / 1e6
    assert total == round(FROZEN_TOTAL_PARAMETERS / 1e6, 4)
    assert round(flops, 2) == PAPER_GFLOPS
