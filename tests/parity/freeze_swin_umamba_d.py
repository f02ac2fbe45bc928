"""The original Swin-UMamba†'s outputs that ``test_original_swin_umamba_d.py`` compares ours with,
and the script that freezes them into ``frozen/swin_umamba_d.json`` (so a clone without
``third_party/`` still checks them):

    .venv/bin/python tests/parity/freeze_swin_umamba_d.py     # needs `make third-party`

The original is JiarunLiu/Swin-UMamba ``swin_umamba/nnunetv2/nets/SwinUMambaD.py`` at
``SWIN_UMAMBA_COMMIT``, executed with mamba-ssm's ``selective_scan_ref`` as its scan
(``original_code.original_swin_umamba_d_module``). Recorded, all from the original code, with the
sizes, input and helpers of ``freeze_swin_umamba.py``:

* ``small``: ``SwinUMambaD(vss_args, decoder_args)`` with the arguments
  ``get_swin_umamba_d_from_plans`` passes but a small encoder (depths 1, 1, 2, 1, dims 16..128; its
  decoder keeps its fixed 2 VSS blocks per level), 2 input channels, 3 classes: state-dict keys and
  shapes, and logits (deep supervision off: nnU-Net's inference mode) for ``deterministic_tensors``
  weights on ``deterministic_input`` of 1x2x32x64, float32 and float64 (the float64 run rewrites
  the original's float32 casts of the scan, nothing else).
* ``small.load_pretrained_ckpt`` / ``small.load_pretrained_ckpt_rgb``: which model tensor the
  original ``load_pretrained_ckpt(model, num_input_channels)`` fills from which key of a tagged
  VMamba v0 file (``freeze_swin_umamba.vmamba_v0_file``: RGB patch embedding), for the 2-channel
  small model (patch embedding skipped) and the same with 3 channels (patch embedding loaded).
* ``paper``: the model ``get_swin_umamba_d_from_plans`` builds for AbdomenMRI (1 input channel,
  14 classes, deep-supervision heads built; nnU-Net's plans objects as stand-ins giving those
  two numbers): keys and shapes, parameter count, and the digest of the ``load_pretrained_ckpt``
  mapping for a tagged VMamba-T v0 file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from freeze_swin_umamba import (
    PAPER_CLASSES,
    PAPER_IN,
    SMALL,
    SMALL_CLASSES,
    SMALL_IN,
    deterministic_logits,
    frozen_record,
    key_lines,
    mapping,
    paper_summary,
    shapes,
    summary,
    vmamba_v0_file,
    write_frozen,
    zeroed,
)
from original_code import (
    original_swin_umamba_d_module,
)
from torch import nn

FROZEN_FILE = Path(__file__).with_name("frozen") / "swin_umamba_d.json"
#: the original's deep-supervision heads (``UNetResDecoder.seg_layers`` but the last)
HEADS = ("decoder.seg_layers.0.", "decoder.seg_layers.1.", "decoder.seg_layers.2.")


class _Plans:
    """nnU-Net's ``PlansManager`` as far as ``get_swin_umamba_d_from_plans`` reads it."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def get_label_manager(self, dataset_json: dict):
        return type("LabelManager", (), {"num_segmentation_heads": self.num_classes})()


class _Configuration:
    """nnU-Net's ``ConfigurationManager`` as far as it is read: a 2D configuration."""

    conv_kernel_sizes = [[3, 3]] * 7


def build_original(module, *, small: bool, deep_supervision: bool = False, in_chans: int = SMALL_IN) -> nn.Module:
    """The original ``SwinUMambaD`` (eval mode): small (see the module docstring; ``in_chans``
    input channels) or the paper model of ``get_swin_umamba_d_from_plans`` (1 channel, 14 classes)."""
    if not small:
        return module.get_swin_umamba_d_from_plans(_Plans(PAPER_CLASSES), {}, _Configuration(), PAPER_IN,
                                                   deep_supervision=deep_supervision, use_pretrain=False).eval()
    # get_swin_umamba_d_from_plans's arguments, the small encoder's depths and dims
    vss_args = dict(in_chans=in_chans, patch_size=4, depths=SMALL["depths"], dims=SMALL["dims"][0],
                    drop_path_rate=0.2)
    decoder_args = dict(num_classes=SMALL_CLASSES, deep_supervision=deep_supervision,
                        features_per_stage=SMALL["dims"], drop_path_rate=0.2, d_state=16)
    return module.SwinUMambaD(vss_args, decoder_args).eval()


def original_small_logits(float64: bool) -> torch.Tensor:
    return deterministic_logits(build_original(original_swin_umamba_d_module(float64), small=True), float64)


def original_load_pretrained_ckpt(model: nn.Module, in_chans: int, folder: Path) -> list[str]:
    """The mapping of the original ``load_pretrained_ckpt(model, num_input_channels=in_chans)``
    (its prints go to stdout)."""
    keys = vmamba_v0_file(folder / "vmamba_v0.pth", shapes(model))
    original_swin_umamba_d_module().load_pretrained_ckpt(zeroed(model), in_chans, str(folder / "vmamba_v0.pth"))
    return mapping(model.state_dict(), keys)


def small_record(folder: Path) -> dict:
    module = original_swin_umamba_d_module()
    return {
        "keys": key_lines(shapes(build_original(module, small=True))),
        "float32": summary(original_small_logits(float64=False)),
        "float64": summary(original_small_logits(float64=True)),
        "load_pretrained_ckpt": original_load_pretrained_ckpt(build_original(module, small=True), SMALL_IN, folder),
        "load_pretrained_ckpt_rgb": original_load_pretrained_ckpt(build_original(module, small=True, in_chans=3),
                                                                  3, folder),
    }


def paper_record(folder: Path) -> dict:
    torch.manual_seed(0)
    model = build_original(original_swin_umamba_d_module(), small=False, deep_supervision=True)
    return paper_summary(model, HEADS, original_load_pretrained_ckpt(model, PAPER_IN, folder))


def record() -> dict:
    return frozen_record("SwinUMambaD.py", "freeze_swin_umamba_d", small_record, paper_record)


def main() -> int:
    return write_frozen(FROZEN_FILE, record, "freeze_swin_umamba_d")


if __name__ == "__main__":
    raise SystemExit(main())
