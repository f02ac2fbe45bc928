"""Write ``tests/parity/frozen/init_rules.json``: the initialisation the original code gives two
models, executed -- Swin-UMamba†'s ``get_swin_umamba_d_from_plans`` (JiarunLiu/Swin-UMamba
``2c1f72e``; the paper model: 1 input channel, 14 classes, deep supervision off, no pretrained
file), with its drop-path rates, and UltraLight VM-UNet's constructor with its ``_init_weights``
(wurenkai/UltraLight-VM-UNet ``d7648e4``; the paper model: 3 channels, 1 class, widths 8-64).

How an initialisation is compared without comparing random streams (the original Swin-UMamba†
builds deep-supervision heads, which ours does not, so the two draw different numbers of values):
:func:`init_markers` replaces every random fill the constructors use by a constant that names its
distribution -- ``Tensor.normal_(mean, std)`` fills ``mean + std``, ``Tensor.uniform_(a, b)`` fills
``1000 + 3 b - a``, ``nn.init.trunc_normal_(mean, std, a, b)`` (timm's, through the stand-in) fills
``mean + std`` clamped to ``[a, b]``, ``torch.rand`` (the SS2D / Mamba time-step draw) gives 0.5 --
so after construction each tensor holds the last rule applied to it (PyTorch's default
``kaiming_uniform_``, VMamba's truncated normal, nnU-Net's ``kaiming_normal_`` via
``InitWeights_He``, UltraLight's fan-out normals, Mamba's ``dt`` initialisation, constants) with
its parameters (fan-in or fan-out, gain, bounds). Swin-UMamba†'s ``InitWeights_He`` is the
original's own (Swin-UMamba's nnU-Net copy, ``original_code.swin_umamba_init_weights_he``);
``init_last_bn_before_add_to_0`` (dynamic_network_architectures, not fetched) stays a stand-in
that does nothing: it zeroes the last norm of that package's ``BasicBlockD`` / ``BottleneckD``
residual blocks only, and ``SwinUMambaD.py`` builds none (this function is all it imports from the
package). Our truncated normal is a normal clamped at +-2 (100 sigma; see ``vmunet.layers.init``):
both fill ``0.02`` here, the markers do not tell a cut at 100 sigma from a clamp there.

Needs ``third_party/`` (``make third-party``). Run from the repository root:

    .venv/bin/python tests/parity/freeze_init_rules.py

Keys: ``swin_umamba_d`` and ``ultralight_vmunet``, each with ``init``: per state-dict key (the
deep-supervision heads left out) ``[min, max, mean]`` of the tensor after construction under the
markers (mean in float64, 12 significant digits); Swin-UMamba†'s ``drop_path``: per VSS block
module name its ``DropPath`` rate; ``provenance``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import freeze_swin_umamba_d as swin_d  # noqa: E402
import freeze_ultralight_vmunet as ultralight  # noqa: E402
from original_code import (  # noqa: E402
    SWIN_UMAMBA_COMMIT,
    ULTRALIGHT_COMMIT,
    original_swin_umamba_d_module,
    original_ultralight_module,
    swin_umamba_init_weights_he,
)

FROZEN_FILE = Path(__file__).with_name("frozen") / "init_rules.json"


@contextmanager
def init_markers() -> Iterator[None]:
    """Random fills replaced by constants naming their distribution (the module docstring)."""
    saved = torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.trunc_normal_, torch.rand

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        with torch.no_grad():
            return self.fill_(mean + std)

    def uniform_(self, a=0.0, b=1.0, *, generator=None):
        with torch.no_grad():
            return self.fill_(1000.0 + 3.0 * b - a)

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
        with torch.no_grad():
            return tensor.fill_(mean + std).clamp_(a, b)

    def rand(*size, dtype=None, device=None, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return torch.full(tuple(shape), 0.5, dtype=dtype, device=device)

    torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.trunc_normal_, torch.rand = normal_, uniform_, trunc_normal_, rand
    try:
        yield
    finally:
        torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.trunc_normal_, torch.rand = saved


def original_paper_model(name: str) -> nn.Module:
    """The original paper model ``name`` (``swin_umamba_d``: ``get_swin_umamba_d_from_plans`` with
    the original's ``InitWeights_He``; ``ultralight_vmunet``: ``UltraLight_VM_UNet``) built under
    :func:`init_markers`."""
    if name == "ultralight_vmunet":
        with init_markers():
            return ultralight.build_original(original_ultralight_module(logits=False), small=False)
    module = original_swin_umamba_d_module()
    stand_in = module.InitWeights_He
    module.InitWeights_He = swin_umamba_init_weights_he()
    try:
        with init_markers():
            return swin_d.build_original(module, small=False)
    finally:
        module.InitWeights_He = stand_in


def our_paper_model(name: str) -> nn.Module:
    """Our paper model ``name`` built under :func:`init_markers`."""
    from vmunet.models import create_model

    kwargs = {"swin_umamba_d": dict(num_classes=swin_d.PAPER_CLASSES, in_chans=swin_d.PAPER_IN),
              "ultralight_vmunet": dict(num_classes=ultralight.PAPER_CLASSES, in_chans=ultralight.PAPER_IN,
                                        dims=ultralight.PAPER_DIMS)}[name]
    with init_markers():
        return create_model(name, **kwargs).eval()


def init_summary(model: nn.Module) -> dict[str, list[float]]:
    """``[min, max, mean]`` per state-dict key, Swin-UMamba†'s deep-supervision heads left out."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith(swin_d.HEADS) or not value.is_floating_point():
            continue
        v = value.detach()
        out[key] = [float(v.min()), float(v.max()), float(f"{float(v.mean(dtype=torch.float64)):.12g}")]
    return out


def drop_path_rates(model: nn.Module) -> dict[str, float]:
    """Each VSS block's ``DropPath`` rate (timm's stand-in and MONAI's both keep ``drop_prob``)."""
    return {name: float(m.drop_prob) for name, m in model.named_modules() if name.endswith(".drop_path")}


def record() -> dict:
    swin = original_paper_model("swin_umamba_d")
    light = original_paper_model("ultralight_vmunet")
    return {"provenance": {"swin_umamba_commit": SWIN_UMAMBA_COMMIT, "ultralight_commit": ULTRALIGHT_COMMIT,
                           "torch": torch.__version__, "script": "tests/parity/freeze_init_rules.py"},
            "swin_umamba_d": {"init": init_summary(swin), "drop_path": drop_path_rates(swin)},
            "ultralight_vmunet": {"init": init_summary(light)}}


def main() -> int:
    try:
        data = record()
    except pytest.skip.Exception as err:  # the helpers skip (inside pytest) where the code is absent
        sys.stderr.write(f"freeze_init_rules: {err}\n")
        return 2
    assert all(math.isfinite(x) for name in ("swin_umamba_d", "ultralight_vmunet")
               for values in data[name]["init"].values() for x in values)
    FROZEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = FROZEN_FILE.with_suffix(".json.tmp")
    # one line per tensor: each [min, max, mean] list written inline
    text = re.sub(r"\[\s+([^\[\]]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
                  json.dumps(data, indent=1))
    tmp.write_text(text + "\n")
    os.replace(tmp, FROZEN_FILE)  # atomic: a failed run leaves the previous file
    sys.stdout.write(f"wrote {FROZEN_FILE} ({len(data['swin_umamba_d']['init'])} + "
                     f"{len(data['ultralight_vmunet']['init'])} tensors)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
