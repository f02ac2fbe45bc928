"""VM-UNet-V2's decoder pieces (Zhang et al. 2024, after U-Net v2): CBAM-style channel and
spatial attention, the 1x1 "translayer" and SDI (semantics and detail infusion) on channels-first
maps. Attribute names are the original's (``fc1``, ``fc2``, ``conv1``, ``conv``, ``bn``,
``convs``), so its state dicts map by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelAttention(nn.Module):
    """sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), shape (B, C, 1, 1); the MLP is two bias-free 1x1
    convs C -> C//16 -> C with ReLU (the original fixes the reduction at 16 whatever ``ratio``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 16:
            raise ValueError(f"ChannelAttention: needs at least 16 channels (reduction 16), got {channels}")
        self.fc1 = nn.Conv2d(channels, channels // 16, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // 16, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        mx = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """sigmoid(conv7x7([mean_c(x), max_c(x)])), shape (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"SpatialAttention: kernel_size must be 3 or 7, got {kernel_size}")
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv1(pooled))


class ConvBN(nn.Module):
    """The original's ``BasicConv2d``: bias-free conv, then BatchNorm. Its ReLU is built there but
    never called in ``forward``, so there is none here."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SDI(nn.Module):
    """Semantics and detail infusion: every level resized to the anchor's size (adaptive average
    pooling down, bilinear ``align_corners=True`` up), a 3x3 conv each, and the product of all.

    The original resizes to a square ``(W, W)`` of the anchor's width, which fails for H != W;
    resizing to the anchor's ``(H, W)`` is the same for square maps and also works otherwise.
    """

    def __init__(self, channels: int, levels: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in range(levels)])

    def forward(self, xs: Sequence[Tensor], anchor: Tensor) -> Tensor:
        if len(xs) != len(self.convs):
            raise ValueError(f"SDI: expected {len(self.convs)} feature maps, got {len(xs)}")
        size = anchor.shape[-2:]
        out = torch.ones_like(anchor)
        for conv, x in zip(self.convs, xs, strict=True):
            if x.shape[-1] > size[-1]:
                x = F.adaptive_avg_pool2d(x, size)
            elif x.shape[-1] < size[-1]:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            out = out * conv(x)
        return out
