"""Pieces every model of the family shares: the input check with optional padding to the size
multiple, and switching the selective-scan backend."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.layers import SS2D


def set_scan_backend(model: nn.Module, backend: str) -> None:
    """Switch the selective-scan backend of every SS2D in ``model``."""
    for m in model.modules():
        if isinstance(m, SS2D):
            m.scan_backend = backend


def check_and_pad(x: Tensor, *, name: str, in_chans: int, multiple: int, pad: bool) -> tuple[Tensor, int, int]:
    """Check ``x`` is (B, in_chans, H, W) with H, W multiples of ``multiple`` -- or zero-pad it at
    the bottom/right when ``pad`` -- and return (x, H, W), H and W the sizes to crop back to."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{name} expects input of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if (H % multiple or W % multiple) and not pad:
        raise ValueError(
            f"{name}: input height and width must be multiples of {multiple}, got {H}x{W}; "
            f"resize the input or build the model with pad_to_multiple=True"
        )
    pad_h, pad_w = -H % multiple, -W % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, H, W
