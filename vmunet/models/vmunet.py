"""VM-UNet (Ruan et al., 2024): a VMamba encoder, a mirrored VSS decoder, additive skips.

Module names follow the original ``VSSM`` (``patch_embed``, ``layers``, ``layers_up``,
``final_up``, ``final_conv``, ``blocks``, ``downsample``, ``upsample``) so that VM-UNet and VMamba
checkpoints map onto this model by renaming only (see ``vmunet.models.weights``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.utils.checkpoint as torch_checkpoint
from torch import Tensor, nn

from vmunet.layers import (
    FinalPatchExpand,
    PatchEmbed,
    PatchExpand,
    PatchMerging,
    VSSBlock,
    init_vmunet_weights,
)
from vmunet.models.common import check_and_pad, check_model_args, int_list, set_scan_backend
from vmunet.ops import VMAMBA_DIRECTIONS
from vmunet.ops.cross_scan import check_directions


class VSSStage(nn.Module):
    """One encoder stage (blocks, then optional ``downsample``) or decoder stage (optional
    ``upsample``, then blocks). ``use_checkpoint`` recomputes each block in backward to save memory."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], *,
                 downsample: nn.Module | None = None, upsample: nn.Module | None = None,
                 use_checkpoint: bool = False, **block_kwargs: Any) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.upsample = upsample
        self.blocks = nn.ModuleList(
            [VSSBlock(dim, drop_path=drop_path[i], **block_kwargs) for i in range(depth)]
        )
        self.downsample = downsample

    def forward_blocks(self, x: Tensor) -> Tensor:
        """The VSS blocks alone."""
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch_checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        x = self.forward_blocks(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x



def stage_directions(directions: Sequence[str] | Sequence[Sequence[str]], num_stages: int
                     ) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Scan orders of each encoder and decoder stage: ``(encoder, decoder)``, ``num_stages`` each.

    ``directions`` is one list of order names for every stage (``["h", "v", "h_flip", "v_flip"]``)
    or one list per stage, ``2 * num_stages`` lists: the encoder stages shallow to deep, then the
    decoder stages in ``layers_up`` order (deepest first).
    """
    if isinstance(directions, str) or not isinstance(directions, Sequence) or not directions:
        raise ValueError(f"VMUNet: directions must be a list of scan-order names or one such list per "
                         f"stage, got {directions!r}")
    nested = [not isinstance(d, str) and isinstance(d, Sequence) for d in directions]
    try:
        if not any(nested):
            one = check_directions(directions)
            return [one] * num_stages, [one] * num_stages
        if not all(nested) or len(directions) != 2 * num_stages:
            raise ValueError(
                f"expected one list of names for all stages or {2 * num_stages} lists (one per stage: "
                f"{num_stages} encoder, then {num_stages} decoder, deepest first), got {len(directions)} "
                f"entries of which {sum(nested)} are lists")
        per_stage = [check_directions(d) for d in directions]
    except (ValueError, TypeError) as err:
        raise ValueError(f"VMUNet: directions: {err}") from None
    return per_stage[:num_stages], per_stage[num_stages:]


class VMUNet(nn.Module):
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
            stages deepest first (see :func:`stage_directions`).
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
        directions: Sequence[str] | Sequence[Sequence[str]] = VMAMBA_DIRECTIONS,
        patch_size: int = 4,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        use_checkpoint: bool = False,
        pad_to_multiple: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        depths, dims = check_model_args("VMUNet", num_classes=num_classes, in_chans=in_chans, depths=depths,
                                        dims=dims, drop_path_rate=drop_path_rate)
        n = len(depths)
        depths_decoder = int_list("depths_decoder", depths_decoder, n)
        dims_decoder = dims[::-1]
        directions_encoder, directions_decoder = stage_directions(directions, n)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.pad_to_multiple = pad_to_multiple
        self.size_multiple = patch_size * 2 ** (n - 1)

        block_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                            scan_backend=scan_backend,
                            attn_drop_rate=attn_drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dpr_dec = torch.linspace(0, drop_path_rate, sum(depths_decoder)).tolist()[::-1]

        self.patch_embed = PatchEmbed(in_chans, dims[0], patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList()
        for i in range(n):
            s = sum(depths[:i])
            self.layers.append(VSSStage(
                dims[i], depths[i], dpr[s:s + depths[i]],
                downsample=PatchMerging(dims[i], dims[i + 1]) if i < n - 1 else None,
                use_checkpoint=use_checkpoint, directions=directions_encoder[i], **block_kwargs))
        self.layers_up = nn.ModuleList()
        for i in range(n):
            s = sum(depths_decoder[:i])
            self.layers_up.append(VSSStage(
                dims_decoder[i], depths_decoder[i], dpr_dec[s:s + depths_decoder[i]],
                upsample=PatchExpand(dims_decoder[i - 1], dims_decoder[i]) if i > 0 else None,
                use_checkpoint=use_checkpoint, directions=directions_decoder[i], **block_kwargs))
        self.final_up = FinalPatchExpand(dims[0], scale=patch_size)
        self.final_conv = nn.Conv2d(dims[0] // patch_size, num_classes, kernel_size=1)
        self.apply(init_vmunet_weights)

    def set_scan_backend(self, backend: str) -> None:
        """Switch the selective-scan backend of every SS2D ("auto" | "torch" | "numba" | "ref" |
        "cuda" | "triton")."""
        set_scan_backend(self, backend)

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder: (B, C, H, W) -> deepest map (B, H/32, W/32, dims[-1]) and the stage inputs."""
        x = self.pos_drop(self.patch_embed(x))
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return x, skips

    def forward_features_up(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Decoder: stage i > 0 receives ``x + input of encoder stage n - i`` (VM-UNet's additive skip)."""
        for i, layer in enumerate(self.layers_up):
            x = layer(x if i == 0 else x + skips[-i])
        return x

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = check_and_pad(x, name="VMUNet", in_chans=self.in_chans, multiple=self.size_multiple,
                                pad=self.pad_to_multiple)
        x, skips = self.forward_features(x)
        x = self.forward_features_up(x, skips)
        logits = self.final_conv(self.final_up(x).permute(0, 3, 1, 2))
        return logits[..., :H, :W]
