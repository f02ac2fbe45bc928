"""VSS stages (a run of VSS blocks with an optional resampling op) and VMamba v0's encoder stages,
the one builder every model of the family uses for its VMamba encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.utils.checkpoint as torch_checkpoint
from torch import Tensor, nn

from vmunet.layers.patch import PatchMerging
from vmunet.layers.vss import VSSBlock


def drop_path_rates(rate: float, n: int) -> list[float]:
    """VMamba's stochastic-depth schedule ``linspace(0, rate, n)`` as Python floats.

    Computed on the CPU whatever the default device: under ``torch.device("meta")`` (building a
    model to count parameters) a meta tensor has no values to turn into floats.
    """
    return torch.linspace(0, rate, n, device="cpu").tolist()


class VSSStage(nn.Module):
    """One encoder stage (blocks, then optional ``downsample``) or VM-UNet decoder stage (optional
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


class VSSStageUp(VSSStage):
    """A Swin-UNet decoder stage (Mamba-UNet): VSS blocks, then the optional ``upsample`` (VM-UNet's
    decoder stages upsample first)."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_blocks(x)
        return x if self.upsample is None else self.upsample(x)


def vmamba_encoder_stages(depths: Sequence[int], dims: Sequence[int], drop_path_rate: float,
                          directions: Sequence[Sequence[str]], *, num_built: int | None = None,
                          separate_merges: bool = False, use_checkpoint: bool = False,
                          **block_kwargs: Any) -> tuple[nn.ModuleList, nn.ModuleList]:
    """VMamba v0's encoder stages: stage i has ``depths[i]`` VSS blocks of width ``dims[i]`` and the
    scan orders ``directions[i]``, followed by a ``PatchMerging`` to ``dims[i + 1]`` except after
    the last stage; drop path is ``linspace(0, drop_path_rate)`` over all ``sum(depths)`` blocks.

    Args:
        num_built: build only the first ``num_built`` stages (VM-UNet-V2 never uses the last
            stage's blocks); the drop-path schedule still spans every stage of ``depths``.
        separate_merges: the merges as a second list (Swin-UMamba's ``downsamples.i``) instead of
            each stage's ``downsample`` (VMamba's ``layers.i.downsample``). The modules are created
            in the order of each layout's original, so a seeded build gives the original's weights.
        use_checkpoint, block_kwargs: passed to every ``VSSStage`` / ``VSSBlock``.

    Returns:
        (stages, merges): ``merges`` is empty unless ``separate_merges``.
    """
    n = len(depths)
    num_built = n if num_built is None else num_built
    dpr = drop_path_rates(drop_path_rate, sum(depths))
    stages, merges = nn.ModuleList(), nn.ModuleList()
    for i in range(num_built):
        s = sum(depths[:i])
        rates = dpr[s:s + depths[i]]
        if separate_merges:
            stages.append(VSSStage(dims[i], depths[i], rates, use_checkpoint=use_checkpoint,
                                   directions=directions[i], **block_kwargs))
            if i < n - 1:
                merges.append(PatchMerging(dims[i], dims[i + 1]))
        else:
            stages.append(VSSStage(dims[i], depths[i], rates,
                                   downsample=PatchMerging(dims[i], dims[i + 1]) if i < n - 1 else None,
                                   use_checkpoint=use_checkpoint, directions=directions[i], **block_kwargs))
    return stages, merges
