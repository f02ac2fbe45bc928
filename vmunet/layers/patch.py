"""Patch embedding, merging (2x down) and expanding (2x / 4x up) on channels-last maps."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """(B, in_chans, H, W) -> (B, H/p, W/p, embed_dim): strided Conv2d then LayerNorm."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, out_dim): 2x2 neighbours concatenated, LayerNorm, Linear.

    The neighbour order (0,0), (1,0), (0,1), (1,1) — (row, column) offsets — is VMamba's; it fixes
    the meaning of the 4C input features of ``reduction``, so pretrained weights depend on it.
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"PatchMerging needs an even feature map, got {H}x{W}")
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x))


def _pixel_shuffle_last(x: Tensor, scale: int) -> Tensor:
    """einops ``b h w (p1 p2 c) -> b (h p1) (w p2) c`` for channels-last x."""
    B, H, W, C = x.shape
    c = C // (scale * scale)
    x = x.reshape(B, H, W, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H * scale, W * scale, c)


class PatchExpand(nn.Module):
    """(B, H, W, in_dim) -> (B, 2H, 2W, out_dim): Linear(in_dim -> 4*out_dim), 2x2 shuffle, LayerNorm.

    VM-UNet's ``PatchExpand2D(dim)`` is ``PatchExpand(2 * dim, dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, scale: int = 2) -> None:
        super().__init__()
        out_dim = out_dim or in_dim // 2
        self.scale = scale
        self.expand = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(_pixel_shuffle_last(self.expand(x), self.scale))


class FinalPatchExpand(PatchExpand):
    """VM-UNet's last x4 upsampling: Linear(dim -> 4*dim), 4x4 shuffle to dim/4 channels, LayerNorm."""

    def __init__(self, dim: int, scale: int = 4) -> None:
        if dim % scale:
            raise ValueError(f"FinalPatchExpand: dim={dim} must be divisible by scale={scale}")
        super().__init__(dim, dim // scale, scale=scale)
