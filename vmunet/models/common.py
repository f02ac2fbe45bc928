"""Pieces every model of the family shares: the constructor's argument checks, the input check
with optional padding to the size multiple, and switching the selective-scan backend."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.layers import SS2D


def int_list(name: str, value: int | Sequence[int], n: int | None = None, *, model: str = "VMUNet") -> list[int]:
    """``value`` as a list of ints: an int repeated ``n`` times, or a sequence of exactly ``n``."""
    if isinstance(value, int):
        if n is None:
            raise TypeError(f"{model}: {name} must be a list of ints, got {value!r}")
        return [value] * n
    values = [int(v) for v in value]
    if n is not None and len(values) != n:
        raise ValueError(f"{model}: {name} must have {n} entries (one per stage), got {values}")
    return values


def check_model_args(model: str, *, num_classes: int, in_chans: int, depths: Sequence[int],
                     dims: int | Sequence[int], drop_path_rate: float, num_stages: int | None = None,
                     why_stages: str = "") -> tuple[list[int], list[int]]:
    """The checks every model's constructor starts with; returns (depths, dims) as lists, ``dims``
    given as an int meaning ``dims * 2**i`` per stage. ``num_stages`` fixes the number of stages
    (``why_stages`` says why in the error)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"{model}: in_chans must be a positive int, got {in_chans!r}")
    depths = int_list("depths", depths, model=model)
    n = len(depths)
    if num_stages is not None and n != num_stages:
        raise ValueError(f"{model}: depths must have {num_stages} entries{why_stages}, got {depths}")
    if isinstance(dims, int):
        dims = [dims * 2**i for i in range(n)]
    dims = int_list("dims", dims, n, model=model)
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"{model}: drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return depths, dims


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
