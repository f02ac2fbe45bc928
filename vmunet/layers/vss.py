"""The VSS block: a pre-norm residual around SS2D."""

from __future__ import annotations

from typing import Any

from monai.networks.layers import DropPath
from torch import Tensor, nn

from vmunet.layers.ss2d import SS2D


class VSSBlock(nn.Module):
    """``x + DropPath(SS2D(LayerNorm(x)))`` on channels-last (B, H, W, C) maps.

    Attribute names (``ln_1``, ``self_attention``) are VMamba's, so pretrained state dicts map
    onto this block by name.
    """

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, attn_drop_rate: float = 0.0,
                 d_state: int = 16, **ss2d_kwargs: Any) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = SS2D(hidden_dim, d_state=d_state, dropout=attn_drop_rate, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))
