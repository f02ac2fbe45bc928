"""UltraLight VM-UNet's blocks (Wu et al. 2024, wurenkai/UltraLight-VM-UNet
``models/UltraLight_VM_UNet.py``), channels-first: the Parallel Vision Mamba layer and the
spatial/channel attention bridge of the skips. Attribute names are the original's (``norm``,
``mamba``, ``proj``, ``skip_scale``; ``catt``, ``satt``, ``get_all_att``, ``att1``.., ``shared_conv2d``),
so its state dicts load by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vmunet.layers.mamba import Mamba


class PVMLayer(nn.Module):
    """Parallel Vision Mamba: (B, C_in, H, W) -> (B, C_out, H, W).

        x      = LayerNorm(flatten(x))                       # (B, H*W, C_in), row-major tokens
        x_i    = Mamba(x_i) + skip_scale * x_i               # the 4 channel quarters, ONE shared Mamba
        out    = proj(LayerNorm(cat(x_1..x_4)))              # the same LayerNorm again, as the original

    The original calls the shared Mamba four times; here the quarters run as one batch of 4B
    sequences (the same function: sequences of a batch are independent).
    """

    def __init__(self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 scan_backend: str = "auto") -> None:
        super().__init__()
        if input_dim % 4:
            raise ValueError(f"PVMLayer: input_dim must be a multiple of 4 (four parallel quarters), got {input_dim}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(input_dim // 4, d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        if C != self.input_dim:
            raise ValueError(f"PVMLayer expects {self.input_dim} channels, got {tuple(x.shape)}")
        x = self.norm(x.flatten(2).transpose(1, 2))                              # (B, L, C)
        L, c = H * W, C // 4
        parts = x.view(B, L, 4, c).permute(2, 0, 1, 3).reshape(4 * B, L, c)      # quarter-major batch
        parts = self.mamba(parts) + self.skip_scale * parts
        x = parts.view(4, B, L, c).permute(1, 2, 0, 3).reshape(B, L, C)
        x = self.proj(self.norm(x))
        return x.transpose(1, 2).reshape(B, self.output_dim, H, W)


class ChannelAttBridge(nn.Module):
    """Channel attention over all bridged levels: the channel means of every level concatenated
    (S channels), a 3-tap conv across them, then per level ``sigmoid(Linear(S -> C_i))``
    (``split_att="fc"``) or a 1x1 ``Conv1d`` (``"conv"``)."""

    def __init__(self, channels: Sequence[int], split_att: str = "fc") -> None:
        super().__init__()
        if split_att not in ("fc", "conv"):
            raise ValueError(f"split_att must be 'fc' or 'conv', got {split_att!r}")
        total = sum(channels)
        self.split_att = split_att
        self.levels = len(channels)
        self.get_all_att = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
        for i, c in enumerate(channels, start=1):
            setattr(self, f"att{i}", nn.Linear(total, c) if split_att == "fc" else nn.Conv1d(total, c, 1))

    def forward(self, ts: Sequence[Tensor]) -> list[Tensor]:
        if len(ts) != self.levels:
            raise ValueError(f"ChannelAttBridge: expected {self.levels} feature maps, got {len(ts)}")
        att = torch.cat([t.mean(dim=(2, 3)) for t in ts], dim=1).unsqueeze(1)   # (B, 1, S)
        att = self.get_all_att(att)
        if self.split_att == "conv":
            att = att.transpose(1, 2)                                            # (B, S, 1)
        out = []
        for i in range(1, len(ts) + 1):
            a = torch.sigmoid(getattr(self, f"att{i}")(att))                     # (B, 1, C_i) | (B, C_i, 1)
            out.append((a.transpose(1, 2) if self.split_att == "fc" else a).unsqueeze(-1))  # (B, C_i, 1, 1)
        return out


class SpatialAttBridge(nn.Module):
    """Per level ``sigmoid(conv7x7 dilation 3 ([mean_c(t), max_c(t)]))``, one conv shared by all."""

    def __init__(self) -> None:
        super().__init__()
        self.shared_conv2d = nn.Sequential(nn.Conv2d(2, 1, 7, stride=1, padding=9, dilation=3), nn.Sigmoid())

    def forward(self, ts: Sequence[Tensor]) -> list[Tensor]:
        return [self.shared_conv2d(torch.cat([t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)], dim=1))
                for t in ts]


class SCAttBridge(nn.Module):
    """The skip bridge: ``u = t + satt(t) * t``; ``out = catt(u) * u + satt(t) * t`` per level."""

    def __init__(self, channels: Sequence[int], split_att: str = "fc") -> None:
        super().__init__()
        self.catt = ChannelAttBridge(channels, split_att)
        self.satt = SpatialAttBridge()

    def forward(self, ts: Sequence[Tensor]) -> list[Tensor]:
        spatial = [s * t for s, t in zip(self.satt(ts), ts, strict=True)]
        mixed = [s + t for s, t in zip(spatial, ts, strict=True)]
        return [c * u + s for c, u, s in zip(self.catt(mixed), mixed, spatial, strict=True)]
