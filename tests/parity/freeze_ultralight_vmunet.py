"""The original UltraLight VM-UNet's outputs that ``test_original_ultralight_vmunet.py`` compares
ours with, and the script that freezes them into ``frozen/ultralight_vmunet.json`` (so a clone
without ``third_party/`` still checks them):

    .venv/bin/python tests/parity/freeze_ultralight_vmunet.py     # needs `make third-party`

The original is wurenkai/UltraLight-VM-UNet ``models/UltraLight_VM_UNet.py`` at
``ULTRALIGHT_COMMIT``, its ``Mamba`` mamba-ssm's own (``mamba_simple.py``, slow path, its
``selective_scan_ref`` as the scan; ``original_code.original_ultralight_module``), its final
sigmoid left out so logits are recorded. Recorded, all from the original code:

* ``small``: widths ``c_list`` 4, 8, 12, 16, 20, 24, one (gray) input channel, 3 classes: its
  state-dict keys and shapes, and its logits for ``deterministic_tensors`` weights on
  ``deterministic_input`` of 1x1x96x64 (H != W), float32 and float64 (the float64 run rewrites
  the float32 casts of mamba-ssm's ``Mamba`` and scan, nothing else); ``conv_float64``: the same
  with ``split_att="conv"``.
* ``paper``: the configuration of its ``configs/config_setting.py`` (``c_list`` 8 .. 64, 3 input
  channels, 1 class, ``split_att="fc"``, bridge): keys and shapes, parameter count, and the logits
  on 1x3x256x256 (the paper's input size), float32 and float64.
"""

from __future__ import annotations

from pathlib import Path

import torch
from freeze_swin_umamba import key_lines, shapes, summary, write_frozen
from original_code import (
    ULTRALIGHT_COMMIT,
    ULTRALIGHT_MODEL,
    deterministic_input,
    deterministic_tensors,
)
from original_code import original_ultralight_module as original_module
from torch import nn

FROZEN_FILE = Path(__file__).with_name("frozen") / "ultralight_vmunet.json"
SMALL_DIMS = [4, 8, 12, 16, 20, 24]
SMALL_IN, SMALL_CLASSES = 1, 3
SMALL_INPUT = (1, SMALL_IN, 96, 64)
PAPER_DIMS = [8, 16, 24, 32, 48, 64]
PAPER_IN, PAPER_CLASSES = 3, 1
PAPER_INPUT = (1, PAPER_IN, 256, 256)


def build_original(module, *, small: bool, split_att: str = "fc", bridge: bool = True) -> nn.Module:
    """The original ``UltraLight_VM_UNet`` (eval mode), small or as its config builds it."""
    if small:
        model = module.UltraLight_VM_UNet(num_classes=SMALL_CLASSES, input_channels=SMALL_IN, c_list=SMALL_DIMS,
                                          split_att=split_att, bridge=bridge)
    else:
        model = module.UltraLight_VM_UNet(num_classes=PAPER_CLASSES, input_channels=PAPER_IN, c_list=PAPER_DIMS,
                                          split_att=split_att, bridge=bridge)
    return model.eval()


def deterministic_logits(model: nn.Module, input_shape: tuple[int, ...], float64: bool) -> torch.Tensor:
    """``model``'s logits for ``deterministic_tensors`` weights on ``deterministic_input(input_shape)``."""
    model.load_state_dict(deterministic_tensors(shapes(model)))
    x = deterministic_input(input_shape)
    if float64:
        model, x = model.double(), x.double()
    with torch.no_grad():
        return model(x)


def original_logits(*, small: bool, float64: bool, split_att: str = "fc") -> torch.Tensor:
    model = build_original(original_module(float64), small=small, split_att=split_att)
    return deterministic_logits(model, SMALL_INPUT if small else PAPER_INPUT, float64)


def small_record() -> dict:
    return {
        "keys": key_lines(shapes(build_original(original_module(), small=True))),
        "float32": summary(original_logits(small=True, float64=False)),
        "float64": summary(original_logits(small=True, float64=True)),
        "conv_float64": summary(original_logits(small=True, float64=True, split_att="conv")),
    }


def paper_record() -> dict:
    model = build_original(original_module(), small=False)
    return {
        "keys": key_lines(shapes(model)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "float32": summary(original_logits(small=False, float64=False)),
        "float64": summary(original_logits(small=False, float64=True)),
    }


def record() -> dict:
    return {"source": f"wurenkai/UltraLight-VM-UNet {ULTRALIGHT_MODEL} at {ULTRALIGHT_COMMIT} with mamba-ssm "
                      f"2.3.2.post1's Mamba (slow path), torch {torch.__version__.split('+')[0]} CPU; "
                      "tests/parity/freeze_ultralight_vmunet.py",
            "commit": ULTRALIGHT_COMMIT, "small": small_record(), "paper": paper_record()}


def main() -> int:
    return write_frozen(FROZEN_FILE, record, "freeze_ultralight_vmunet")


if __name__ == "__main__":
    raise SystemExit(main())
