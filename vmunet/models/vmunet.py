"""VM-UNet (Ruan et al., 2024): a VMamba encoder, a mirrored VSS decoder, additive skips.

Module names follow the original ``VSSM`` (``patch_embed``, ``layers``, ``layers_up``,
``final_up``, ``final_conv``, ``blocks``, ``downsample``, ``upsample``) so that VM-UNet and VMamba
checkpoints map onto this model by renaming only (see ``vmunet.models.weights``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vmunet.layers import (
    FinalPatchExpand,
    PatchExpand,
    VSSStage,
    drop_path_rates,
    init_vmunet_weights,
)
from vmunet.models.common import Directions, VSSModel, check_model_args, int_list
from vmunet.ops import VMAMBA_DIRECTIONS


class VMUNet(VSSModel):
    """VM-UNet: (B, in_chans, H, W) -> logits (B, num_classes, H, W).

    Args:
        num_classes: output channels (1 = binary; logits, no sigmoid inside).
        in_chans: input channels (1 for CT works natively).
        depths: VSS blocks per encoder stage.
        depths_decoder: VSS blocks per decoder stage, deepest first.
        dims: channels per encoder stage (an int ``d`` means ``d, 2d, 4d, ...``); the decoder
            mirrors them.
        d_state, d_conv, expand, dt_rank: SS2D settings (see ``vmunet.layers.SS2D``).
        directions: scan orders (names in ``vmunet.ops.cross_scan``): one list for every stage,
            or one list per stage -- ``2 * len(depths)`` lists, the encoder stages then the decoder
            stages deepest first (see :func:`vmunet.models.common.stage_directions`).
        patch_size: patch-embedding stride.
        drop_rate: dropout after the patch embedding. attn_drop_rate: dropout inside SS2D.
        drop_path_rate: stochastic depth, linspace(0, rate) over encoder blocks and the reversed
            linspace over decoder blocks.
        use_checkpoint: gradient checkpointing of every VSS block (training memory for compute).
        pad_to_multiple: zero-pad inputs whose H, W are not multiples of ``size_multiple`` and crop
            the logits back; when False such inputs are an error.
        scan_backend: selective-scan backend for every SS2D.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        depths: Sequence[int] = (2, 2, 2, 2),
        depths_decoder: Sequence[int] = (2, 2, 2, 1),
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
        depths, dims = check_model_args("VMUNet", num_classes=num_classes, in_chans=in_chans, depths=depths,
                                        dims=dims, drop_path_rate=drop_path_rate)
        n = len(depths)
        depths_decoder = int_list("depths_decoder", depths_decoder, n)
        dims_decoder = dims[::-1]
        per_stage = self.parse_directions(directions, n)
        super().__init__(num_classes, in_chans, pad_to_multiple=pad_to_multiple, size_multiple=patch_size * 2 ** (n - 1))

        block_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                            scan_backend=scan_backend, attn_drop_rate=attn_drop_rate)
        self.build_encoder(depths, dims, patch_size=patch_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                           directions=per_stage[:n], use_checkpoint=use_checkpoint, **block_kwargs)
        dpr_dec = drop_path_rates(drop_path_rate, sum(depths_decoder))[::-1]
        self.layers_up = nn.ModuleList()
        for i in range(n):
            s = sum(depths_decoder[:i])
            self.layers_up.append(VSSStage(
                dims_decoder[i], depths_decoder[i], dpr_dec[s:s + depths_decoder[i]],
                upsample=PatchExpand(dims_decoder[i - 1], dims_decoder[i]) if i > 0 else None,
                use_checkpoint=use_checkpoint, directions=per_stage[n + i], **block_kwargs))
        self.final_up = FinalPatchExpand(dims[0], scale=patch_size)
        self.final_conv = nn.Conv2d(dims[0] // patch_size, num_classes, kernel_size=1)
        self.apply(init_vmunet_weights)

    @classmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        return num_stages, num_stages, ""

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder: (B, C, H, W) -> deepest map (B, H/32, W/32, dims[-1]) and the stage inputs."""
        return self.forward_encoder(x)

    def forward_features_up(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Decoder: stage i > 0 receives ``x + input of encoder stage n - i`` (VM-UNet's additive skip)."""
        for i, layer in enumerate(self.layers_up):
            x = layer(x if i == 0 else x + skips[-i])
        return x

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.check_and_pad(x)
        x, skips = self.forward_features(x)
        x = self.forward_features_up(x, skips)
        logits = self.final_conv(self.final_up(x).permute(0, 3, 1, 2))
        return logits[..., :H, :W]
