"""Named model configurations and ``create_model``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vmunet.models.layouts import LAYOUT_MODELS, Detected
from vmunet.models.mamba_unet import MambaUNet
from vmunet.models.swin_umamba import SwinUMamba, SwinUMambaD
from vmunet.models.ultralight import UltraLightVMUNet
from vmunet.models.vmunet import VMUNet
from vmunet.models.vmunet_v2 import VMUNetV2
from vmunet.models.weights import load_weights


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: the class to build, its default constructor arguments and a one-line
    description (shown by ``vmunet info --list``)."""

    builder: type[nn.Module]
    defaults: Mapping[str, Any]
    description: str


#: VMamba-T's stage widths and state size: the encoder width of every full-size model below
_VMAMBA_T: Mapping[str, Any] = dict(dims=(96, 192, 384, 768), d_state=16)

_REGISTRY: dict[str, ModelSpec] = {
    "mamba_unet": ModelSpec(
        MambaUNet, dict(depths=(2, 2, 2, 2), **_VMAMBA_T, drop_path_rate=0.2),
        "Mamba-UNet (Wang et al. 2024): VSS blocks in the Swin-UNet layout, concatenated skips + Linear",
    ),
    "swin_umamba": ModelSpec(
        SwinUMamba, dict(depths=(2, 2, 9, 2), **_VMAMBA_T, drop_path_rate=0.2),
        "Swin-UMamba (Liu et al. 2024): conv stem + VMamba-T v0 encoder, MONAI UNETR decoder",
    ),
    "swin_umamba_d": ModelSpec(
        SwinUMambaD, dict(depths=(2, 2, 9, 2), depths_decoder=(2, 2, 2), **_VMAMBA_T, drop_path_rate=0.2),
        "Swin-UMamba† (Liu et al. 2024): VMamba-T v0 encoder, Mamba decoder (VSS blocks, concatenated skips)",
    ),
    "ultralight_vmunet": ModelSpec(
        UltraLightVMUNet, dict(dims=(8, 16, 24, 32, 48, 64), split_att="fc", bridge=True),
        "UltraLight VM-UNet (Wu et al. 2024): conv + Parallel Vision Mamba U-Net, attention bridge, 49k parameters",
    ),
    "vmunet": ModelSpec(
        VMUNet, dict(depths=(2, 2, 2, 2), depths_decoder=(2, 2, 2, 1), **_VMAMBA_T, drop_path_rate=0.2),
        "VM-UNet as in the paper (Ruan et al. 2024), VMamba-S/T width",
    ),
    "vmunet_deep": ModelSpec(
        VMUNet, dict(depths=(2, 2, 9, 2), depths_decoder=(2, 9, 2, 2), **_VMAMBA_T, drop_path_rate=0.2),
        "VM-UNet with the VMamba-T encoder depth [2,2,9,2] (original code's default)",
    ),
    "vmunet_test": ModelSpec(
        VMUNet, dict(depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1), dims=(16, 32, 64, 128), d_state=4,
                     drop_path_rate=0.1),
        "tiny VM-UNet for tests and smoke runs",
    ),
    "vmunet_v2": ModelSpec(
        VMUNetV2, dict(depths=(2, 2, 9, 2), **_VMAMBA_T, mid_channels=48, deep_supervision=True,
                       drop_path_rate=0.2),
        "VM-UNet-V2 (Zhang et al. 2024): VMamba-T v0 encoder, SDI decoder, fused deep supervision",
    ),
}


def list_models() -> list[str]:
    """Names accepted by ``create_model``, sorted."""
    return sorted(_REGISTRY)


def model_for_weights(found: Detected) -> str | None:
    """The registered model ``found``'s weights are for (``layouts.LAYOUT_MODELS``), or None: of
    several, the largest whose default configuration's keys are all in the file, else the one with
    the most of its keys there (a partial file), the first on a tie. Here, not in ``layouts``: the
    weights modules stay below the registry."""
    names = LAYOUT_MODELS[found.layout]
    if len(names) < 2:
        return names[0] if names else None
    have = set(found.state)
    return max(names, key=lambda n: (_model_keys(n) <= have, len(_model_keys(n) & have)))


@functools.cache
def _model_keys(name: str) -> frozenset[str]:
    """The state-dict keys of the registered model ``name`` at its defaults (built on the meta
    device: names only, no memory, no init)."""
    with torch.device("meta"):
        return frozenset(create_model(name, num_classes=1).state_dict())


def model_spec(name: str) -> ModelSpec:
    """The registered ``ModelSpec`` of ``name``; ``ValueError`` listing the names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_config(name: str) -> dict[str, Any]:
    """Default constructor kwargs of the registered model ``name`` (a copy)."""
    return dict(model_spec(name).defaults)


def model_description(name: str) -> str:
    """One-line description of the registered model ``name``."""
    return model_spec(name).description


def create_model(name: str, *, num_classes: int, in_chans: int = 3,
                 weights: str | Path | Mapping[str, Any] | None = None, strict: bool = True,
                 weights_entry: str = "auto", **overrides: Any) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: one of ``list_models()``.
        num_classes: output channels (1 = binary, logits for a sigmoid).
        in_chans: input channels.
        weights: a checkpoint path or an already loaded dict, in any layout that
            ``vmunet.models.weights.load_weights`` detects (this project's Lightning checkpoints
            or state dicts, original VM-UNet state dicts, VMamba v0 ImageNet checkpoints).
        strict: with False, tensors that do not fit (shape, name, another layout) are skipped
            and reported instead of raising an error -- fine-tuning with another class count.
        weights_entry: ``auto`` | ``model`` | ``model_ema``: which weights of a VMamba checkpoint
            to use (``auto`` prefers ``model_ema`` when the file has it).
        **overrides: any constructor argument of the model, e.g. ``depths``, ``depths_decoder``,
            ``dims``, ``d_state``, ``directions``, ``drop_path_rate``, ``use_checkpoint``,
            ``pad_to_multiple``, ``scan_backend``.
    """
    spec = model_spec(name)
    config = dict(spec.defaults)
    cls = spec.builder
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "num_classes", "in_chans"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise TypeError(
            f"create_model({name!r}): unknown option(s) {unknown}; valid options: {sorted(allowed)}"
        )
    config.update(overrides)
    model = cls(num_classes=num_classes, in_chans=in_chans, **config)
    # enough to rebuild the same architecture: create_model(model.model_name, **model.model_kwargs)
    model.model_name = name
    model.model_kwargs = {"num_classes": num_classes, "in_chans": in_chans, **overrides}
    if weights is not None:
        load_weights(model, weights, strict=strict, entry=weights_entry)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
