"""Mamba-UNet (Wang et al. 2024, ziyangwang007/Mamba-UNet ``code/networks/mamba_sys.py``): VMamba
v0 VSS blocks in the Swin-UNet layout -- concatenated skips, each followed by a Linear back to the
stage width, instead of VM-UNet's additive skips.

    encoder:  patch_embed -> [blocks_i -> PatchMerging] x (n-1) -> blocks_{n-1} -> norm
    decoder:  layers_up.0 = PatchExpand (bottleneck, no blocks)
              layers_up.i = Linear(cat(x, input of encoder stage n-1-i)) -> blocks -> PatchExpand
                            (the last one without PatchExpand); blocks per stage mirror the encoder
    head:     norm_up -> x4 PatchExpand to dims[0] channels (``up``) -> 1x1 conv without bias
              (``output``)

Module names are the original ``VSSM``'s (``layers``, ``layers_up``, ``concat_back_dim``,
``norm``, ``norm_up``, ``up``, ``output``), without the ``mamba_unet.`` prefix of its
``MambaUnet`` wrapper. Drop path: the decoder stage of encoder stage j uses stage j's rates,
as in the original. The original repeats 1-channel input to 3 channels; ``in_chans=1`` here takes
gray input directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vmunet.layers import PatchExpand, VSSStageUp, drop_path_rates, init_vmunet_weights
from vmunet.models.common import Directions, VSSModel, check_model_args
from vmunet.ops import VMAMBA_DIRECTIONS


class MambaUNet(VSSModel):
    """Mamba-UNet: (B, in_chans, H, W) -> logits (B, num_classes, H, W).

    Args:
        num_classes, in_chans: output / input channels.
        depths: VSS blocks per encoder stage; the decoder stage of encoder stage j has depths[j]
            blocks, the deepest stage none.
        dims: channels per stage (an int ``d`` means ``d, 2d, 4d, ...``); each stage doubles.
        d_state, d_conv, expand, dt_rank: SS2D settings.
        directions: scan orders: one list for every stage, or one list per VSS stage --
            ``2 * len(depths) - 1`` lists, the encoder stages, then the decoder stages ``layers_up.1``
            .. ``layers_up.{n-1}`` (deepest first; ``layers_up.0`` is a PatchExpand without blocks).
        patch_size, drop_rate, attn_drop_rate, drop_path_rate, use_checkpoint, pad_to_multiple,
        scan_backend: as ``VMUNet``.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        depths: Sequence[int] = (2, 2, 2, 2),
        dims: int | Sequence[int] = (96, 192, 384, 768),
        d_state: int = 16,
        d_conv: int = 3,
        expand: float = 2,
        dt_rank: int | str = "auto",
        directions: Directions = VMAMBA_DIRECTIONS,
        patch_size: int = 4,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        use_checkpoint: bool = False,
        pad_to_multiple: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        depths, dims = check_model_args("MambaUNet", num_classes=num_classes, in_chans=in_chans, depths=depths,
                                        dims=dims, drop_path_rate=drop_path_rate)
        n = len(depths)
        if any(dims[i + 1] != 2 * dims[i] for i in range(n - 1)):
            # PatchExpand halves the width; the concatenated skip must match it
            raise ValueError(f"MambaUNet: each dims entry must double the previous one, got {dims}")
        per_stage = self.parse_directions(directions, n)
        super().__init__(num_classes, in_chans, pad_to_multiple=pad_to_multiple, size_multiple=patch_size * 2 ** (n - 1))

        block_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                            scan_backend=scan_backend, attn_drop_rate=attn_drop_rate)
        self.build_encoder(depths, dims, patch_size=patch_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                           directions=per_stage[:n], use_checkpoint=use_checkpoint, **block_kwargs)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.layers_up = nn.ModuleList([PatchExpand(dims[-1], dims[-1] // 2)])
        self.concat_back_dim = nn.ModuleList([nn.Identity()])
        for i in range(1, n):
            j = n - 1 - i  # the encoder stage this decoder stage mirrors
            s = sum(depths[:j])
            self.concat_back_dim.append(nn.Linear(2 * dims[j], dims[j]))
            self.layers_up.append(VSSStageUp(
                dims[j], depths[j], dpr[s:s + depths[j]],
                upsample=PatchExpand(dims[j], dims[j] // 2) if j > 0 else None,
                use_checkpoint=use_checkpoint, directions=per_stage[n - 1 + i], **block_kwargs))
        self.norm = nn.LayerNorm(dims[-1])
        self.norm_up = nn.LayerNorm(dims[0])
        self.up = PatchExpand(dims[0], dims[0], scale=patch_size)
        self.output = nn.Conv2d(dims[0], num_classes, 1, bias=False)
        self.apply(init_vmunet_weights)

    @classmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        return num_stages, num_stages - 1, "; layers_up.0 has no blocks"

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder: (B, C, H, W) -> normed deepest map (B, H/32, W/32, dims[-1]) and the stage inputs."""
        x, skips = self.forward_encoder(x)
        return self.norm(x), skips

    def forward_features_up(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Decoder: stage i > 0 gets ``Linear(cat(x, input of encoder stage n-1-i))``."""
        n = len(self.layers_up)
        for i, layer in enumerate(self.layers_up):
            if i > 0:
                x = self.concat_back_dim[i](torch.cat([x, skips[n - 1 - i]], dim=-1))
            x = layer(x)
        return self.norm_up(x)

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.check_and_pad(x)
        x, skips = self.forward_features(x)
        x = self.forward_features_up(x, skips)
        logits = self.output(self.up(x).permute(0, 3, 1, 2))
        return logits[..., :H, :W]
