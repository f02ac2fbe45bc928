"""VMamba v0 weights saved by later VMamba code (layout ``vmamba_v0_new_names``): the renaming
is VMamba's own ``VSSM._load_from_state_dict`` (MzeroMiko/VMamba one-file ``vmamba.py``, commit
``2ed52ea``), executed; our loader must undo it and load what the v0 names load.

Frozen: that method's renaming of the v0 keys below (a VMamba v0 patch embedding, one block, one
downsample, the ImageNet norm and head).
"""

from __future__ import annotations

import torch
from original_code import deterministic_tensors, vmamba_renamer

from vmunet.models import create_model
from vmunet.models.weights import load_weights

FROZEN_RENAMES = {
    "patch_embed.proj.weight": "patch_embed.0.weight",
    "patch_embed.proj.bias": "patch_embed.0.bias",
    "patch_embed.norm.weight": "patch_embed.2.weight",
    "patch_embed.norm.bias": "patch_embed.2.bias",
    "layers.0.blocks.0.ln_1.weight": "layers.0.blocks.0.norm.weight",
    "layers.0.blocks.0.ln_1.bias": "layers.0.blocks.0.norm.bias",
    "layers.0.blocks.0.self_attention.x_proj_weight": "layers.0.blocks.0.op.x_proj_weight",
    "layers.0.blocks.0.self_attention.dt_projs_weight": "layers.0.blocks.0.op.dt_projs_weight",
    "layers.0.blocks.0.self_attention.dt_projs_bias": "layers.0.blocks.0.op.dt_projs_bias",
    "layers.0.blocks.0.self_attention.A_logs": "layers.0.blocks.0.op.A_logs",
    "layers.0.blocks.0.self_attention.Ds": "layers.0.blocks.0.op.Ds",
    "layers.0.blocks.0.self_attention.in_proj.weight": "layers.0.blocks.0.op.in_proj.weight",
    "layers.0.blocks.0.self_attention.conv2d.weight": "layers.0.blocks.0.op.conv2d.weight",
    "layers.0.blocks.0.self_attention.conv2d.bias": "layers.0.blocks.0.op.conv2d.bias",
    "layers.0.blocks.0.self_attention.out_norm.weight": "layers.0.blocks.0.op.out_norm.weight",
    "layers.0.blocks.0.self_attention.out_norm.bias": "layers.0.blocks.0.op.out_norm.bias",
    "layers.0.blocks.0.self_attention.out_proj.weight": "layers.0.blocks.0.op.out_proj.weight",
    "layers.0.downsample.norm.weight": "layers.0.downsample.1.weight",
    "layers.0.downsample.norm.bias": "layers.0.downsample.1.bias",
    "layers.0.downsample.reduction.weight": "layers.0.downsample.2.weight",
    "norm.weight": "classifier.norm.weight",
    "norm.bias": "classifier.norm.bias",
    "head.weight": "classifier.head.weight",
    "head.bias": "classifier.head.bias",
}


def _v0_file() -> dict[str, torch.Tensor]:
    """VMamba v0 tensors for those keys, shaped for ``vmunet_test`` (its stage 0 and stem)."""
    own = create_model("vmunet_test", num_classes=2).state_dict()
    shapes = {k: tuple(own[k].shape) for k in FROZEN_RENAMES if k in own}
    shapes.update({"norm.weight": (128,), "norm.bias": (128,), "head.weight": (1000, 128), "head.bias": (1000,)})
    return deterministic_tensors(shapes)


def _assert_later_names_load_like_v0(later: dict[str, torch.Tensor], v0: dict[str, torch.Tensor]) -> None:
    a = create_model("vmunet_test", num_classes=2, in_chans=3)
    b = create_model("vmunet_test", num_classes=2, in_chans=3)
    b.load_state_dict(a.state_dict())
    ra, rb = load_weights(a, {"model": v0}), load_weights(b, {"model": later})
    assert (ra.layout, rb.layout) == ("vmamba_v0", "vmamba_v0_new_names")
    assert rb.loaded == ra.loaded and len(ra.loaded) == 33  # stem 4 + block 13 (+ 13 mirrored) + downsample 3
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


def test_frozen_vmamba_renaming_loads_like_v0_names():
    v0 = _v0_file()
    _assert_later_names_load_like_v0({FROZEN_RENAMES[k]: v for k, v in v0.items()}, v0)


def test_vmamba_load_from_state_dict_renames_as_frozen_and_we_undo_it():
    rename = vmamba_renamer()  # skips without third_party/VMamba
    v0 = _v0_file()
    later = rename(v0)
    back = {id(v): k for k, v in later.items()}
    assert {k: back[id(v)] for k, v in v0.items()} == FROZEN_RENAMES
    _assert_later_names_load_like_v0(later, v0)
