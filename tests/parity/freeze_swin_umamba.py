"""The original Swin-UMamba's outputs that ``test_original_swin_umamba.py`` compares ours with, and
the script that freezes them into ``frozen/swin_umamba.json`` (so a clone without
``third_party/`` still checks them):

    .venv/bin/python tests/parity/freeze_swin_umamba.py     # needs `make third-party`

The original is JiarunLiu/Swin-UMamba ``swin_umamba/nnunetv2/nets/SwinUMamba.py`` at
``SWIN_UMAMBA_COMMIT``, executed with mamba-ssm's ``selective_scan_ref`` as its scan
(``original_code.original_swin_umamba_module``). Recorded, all from the original code:

* ``small``: a small model (encoder depths 1, 1, 2, 1, dims 16..128, ``feat_size`` 8..128, 2 input
  channels, 3 classes): its state-dict keys and shapes, and its logits (deep supervision off: the
  nnU-Net inference mode) for ``deterministic_tensors`` weights on ``deterministic_input`` of
  1x2x32x64 (H != W), float32 and float64 (the float64 run rewrites the original's float32 casts of
  the scan, nothing else). ``SwinUMamba.__init__`` fixes its encoder at VMamba-T
  (``VSSMEncoder(patch_size=2, in_chans=feat_size[0])``): the small build binds the module's
  ``VSSMEncoder`` name, for the constructor call only, to the same class with the small depths and
  dims as keywords.
* ``small.load_pretrained_ckpt``: which model tensor the original ``load_pretrained_ckpt`` fills
  from which key of a tagged VMamba v0 file (:func:`vmamba_v0_file`).
* ``paper``: the paper model as ``get_swin_umamba_from_plans`` builds it for AbdomenMRI (1 input
  channel, 14 classes, deep-supervision heads built): keys and shapes, parameter count, and the
  digest of the ``load_pretrained_ckpt`` mapping for a tagged VMamba-T v0 file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from original_code import (
    SWIN_UMAMBA_COMMIT,
    SWIN_UMAMBA_NETS,
    deterministic_input,
    deterministic_tensors,
    original_swin_umamba_module,
)
from torch import nn

FROZEN_FILE = Path(__file__).with_name("frozen") / "swin_umamba.json"
SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 32, 64, 128])
SMALL_FEAT = [8, 16, 32, 64, 128]  # the original's feat_size: dims[0]/2, then dims
SMALL_IN, SMALL_CLASSES = 2, 3
INPUT = (1, SMALL_IN, 32, 64)
PAPER_IN, PAPER_CLASSES = 1, 14  # AbdomenMRI, the original's paper configuration
#: the logits sampled into the frozen file: [0, class, 2::6, 3::13] (5 x 5 per class)
SAMPLE = (0, slice(None), slice(2, None, 6), slice(3, None, 13))


def build_original(module, *, small: bool, deep_supervision: bool = False) -> nn.Module:
    """The original ``SwinUMamba`` (eval mode): small (see the module docstring) or the paper
    model of ``get_swin_umamba_from_plans`` (1 channel, 14 classes)."""
    if not small:
        return module.SwinUMamba(in_chans=PAPER_IN, out_chans=PAPER_CLASSES, feat_size=[48, 96, 192, 384, 768],
                                 deep_supervision=deep_supervision, hidden_size=768).eval()
    encoder = module.VSSMEncoder
    module.VSSMEncoder = functools.partial(encoder, **SMALL)
    try:
        model = module.SwinUMamba(in_chans=SMALL_IN, out_chans=SMALL_CLASSES, feat_size=SMALL_FEAT,
                                  deep_supervision=deep_supervision, hidden_size=SMALL_FEAT[-1])
    finally:
        module.VSSMEncoder = encoder
    return model.eval()


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def small_weights() -> dict[str, torch.Tensor]:
    """``deterministic_tensors`` for the small original's keys (float32)."""
    return deterministic_tensors(shapes(build_original(original_swin_umamba_module(), small=True)))


def deterministic_logits(model: nn.Module, float64: bool) -> torch.Tensor:
    """``model``'s logits for ``deterministic_tensors`` weights on ``deterministic_input(INPUT)``."""
    model.load_state_dict(deterministic_tensors(shapes(model)))
    x = deterministic_input(INPUT)
    if float64:
        model, x = model.double(), x.double()
    with torch.no_grad():
        return model(x)


def original_small_logits(float64: bool) -> torch.Tensor:
    return deterministic_logits(build_original(original_swin_umamba_module(float64), small=True), float64)


def summary(logits: torch.Tensor) -> dict[str, list]:
    """What the frozen file keeps of the logits: the sample, per-class sums and sums of squares."""
    return {"sample": logits[SAMPLE].tolist(), "class_sums": logits.sum((0, 2, 3)).tolist(),
            "class_sums_of_squares": logits.square().sum((0, 2, 3)).tolist()}


def vmamba_v0_file(path: Path, model_shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """A VMamba v0 ImageNet file for a Swin-UMamba encoder: its keys in v0 names
    (``layers.i.downsample``), VMamba's own 3-channel 4x4 patch embedding, the ImageNet ``norm``/
    ``head``, and one block beyond the encoder's depth in stage 2 (a deeper VMamba). Each tensor
    holds its tag: +i under ``model``, -i under ``model_ema``. Returns the keys (tag i+1 = keys[i])."""
    enc = {k.removeprefix("vssm_encoder."): v for k, v in model_shapes.items() if k.startswith("vssm_encoder.")}
    file_shapes = {}
    for k, v in enc.items():
        parts = k.split(".")
        if parts[0] == "downsamples":
            k = f"layers.{parts[1]}.downsample." + ".".join(parts[2:])
        file_shapes[k] = v
    dim0, dim3 = enc["patch_embed.proj.weight"][0], enc["downsamples.2.reduction.weight"][0]
    file_shapes["patch_embed.proj.weight"] = (dim0, 3, 4, 4)
    depth2 = 1 + max(int(k.split(".")[3]) for k in enc if k.startswith("layers.2.blocks."))
    for k, v in enc.items():
        if k.startswith("layers.2.blocks.0."):
            file_shapes[k.replace("blocks.0.", f"blocks.{depth2}.")] = v
    file_shapes.update({"norm.weight": (dim3,), "norm.bias": (dim3,), "head.weight": (1000, dim3),
                        "head.bias": (1000,)})
    keys = sorted(file_shapes)

    def tagged(sign: float) -> dict[str, torch.Tensor]:
        return {k: torch.full((1,), sign * (i + 1.0)).expand(file_shapes[k]) for i, k in enumerate(keys)}

    torch.save({"model": tagged(1), "model_ema": tagged(-1)}, path)
    return keys


def zeroed(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for v in model.state_dict().values():
            v.zero_()
    return model


def mapping(state_dict: dict[str, torch.Tensor], keys: list[str]) -> list[str]:
    """Sorted ``model key<-file key`` lines (``ema:`` for ``model_ema``) of a zeroed model's
    tensors that now hold a tag of :func:`vmamba_v0_file`."""
    lines = []
    for k, v in state_dict.items():
        tag = int(v.max().item())
        if tag != int(v.min().item()):
            raise AssertionError(f"{k}: mixed tags")
        if tag:
            lines.append(f"{k}<-{'ema:' if tag < 0 else ''}{keys[abs(tag) - 1]}")
    return sorted(lines)


def original_load_pretrained_ckpt(model: nn.Module, folder: Path) -> list[str]:
    """The mapping of the original ``load_pretrained_ckpt`` (its prints go to stdout)."""
    keys = vmamba_v0_file(folder / "vmamba_v0.pth", shapes(model))
    original_swin_umamba_module().load_pretrained_ckpt(zeroed(model), str(folder / "vmamba_v0.pth"))
    return mapping(model.state_dict(), keys)


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def key_lines(model_shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """``"key [shape]"`` per tensor, in state-dict order."""
    return [f"{k} {list(v)}" for k, v in model_shapes.items()]


def small_record(folder: Path) -> dict:
    module = original_swin_umamba_module()
    return {
        "keys": key_lines(shapes(build_original(module, small=True))),
        "float32": summary(original_small_logits(float64=False)),
        "float64": summary(original_small_logits(float64=True)),
        "load_pretrained_ckpt": original_load_pretrained_ckpt(build_original(module, small=True), folder),
    }


def paper_summary(model: nn.Module, heads: tuple[str, ...], lines: list[str]) -> dict:
    """The frozen ``paper`` entry: keys and shapes, parameter count, the deep-supervision heads'
    share (state-dict prefixes ``heads``) and the ``load_pretrained_ckpt`` mapping ``lines``."""
    model_shapes = shapes(model)
    return {"keys": key_lines(model_shapes), "parameters": sum(p.numel() for p in model.parameters()),
            "deep_supervision_head_parameters": sum(math.prod(v) for k, v in model_shapes.items()
                                                    if k.startswith(heads)),
            "load_pretrained_ckpt_sha256": digest(lines), "load_pretrained_ckpt_tensors": len(lines)}


def paper_record(folder: Path) -> dict:
    torch.manual_seed(0)
    model = build_original(original_swin_umamba_module(), small=False, deep_supervision=True)
    lines = original_load_pretrained_ckpt(model, folder)
    return paper_summary(model, ("out_layers.1.", "out_layers.2.", "out_layers.3."), lines)


def frozen_record(model_file: str, script: str, small: Callable[[Path], dict], paper: Callable[[Path], dict]) -> dict:
    """The whole frozen file of the original ``model_file``, written by ``tests/parity/{script}.py``."""
    with tempfile.TemporaryDirectory() as tmp:
        return {"source": f"JiarunLiu/Swin-UMamba {SWIN_UMAMBA_NETS}/{model_file} at {SWIN_UMAMBA_COMMIT}, "
                          f"torch {torch.__version__.split('+')[0]} CPU; tests/parity/{script}.py",
                "commit": SWIN_UMAMBA_COMMIT, "small": small(Path(tmp)), "paper": paper(Path(tmp))}


def record() -> dict:
    return frozen_record("SwinUMamba.py", "freeze_swin_umamba", small_record, paper_record)


def write_frozen(path: Path, make_record, script: str) -> int:
    """Write ``make_record()`` to ``path`` as JSON, atomically; exit status 2 (saying why) when the
    original code is not in third_party/."""
    import pytest

    try:
        data = make_record()
    except pytest.skip.Exception as why:  # the original code is not in third_party/
        sys.stderr.write(f"{script}: cannot run the original: {why}\n")
        return 2
    path.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    sys.stderr.write(f"wrote {path}\n")
    return 0


def main() -> int:
    return write_frozen(FROZEN_FILE, record, "freeze_swin_umamba")


if __name__ == "__main__":
    raise SystemExit(main())
