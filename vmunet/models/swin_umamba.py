"""Swin-UMamba and Swin-UMamba† (Liu et al. 2024, JiarunLiu/Swin-UMamba ``nnunetv2/nets/``): one
VMamba v0 encoder (``VSSMEncoder``, below) with two decoders.

``SwinUMamba`` (``SwinUMamba.py``): the encoder behind a stride-2 conv stem, MONAI's UNETR decoder.

    x1      = InstanceNorm(conv7x7 stride 2 (x))                    # dims[0]/2 channels, H/2
    s0..s3  = VSS stages on PatchEmbed(stride 2)(x1), before each PatchMerging (H/4 .. H/32)
    enc1..5 = UnetrBasicBlock(x), (x1), (s0), (s1), (s2)            # res blocks, instance norm
    dec     = UnetrUpBlock x5 from s3 with skips enc5 .. enc1; UnetrBasicBlock; UnetOutBlock

Module names are the original's (``stem``, ``vssm_encoder.patch_embed``, ``vssm_encoder.layers``,
``vssm_encoder.downsamples``, ``encoder1``..``encoder5``, ``decoder1``..``decoder6``,
``out_layers.0``), so its state dicts load by name. Its deep-supervision heads
``out_layers.1-3`` (used by nnU-Net's deep-supervision training, not at inference) are not built
here: this model returns the full-resolution logits, i.e. the original in inference mode, and
trains with the one loss of the training module. VMamba v0 weights initialise the encoder as the
original's ``load_pretrained_ckpt`` does (``vmamba_targets``).

``SwinUMambaD`` (Swin-UMamba†, ``SwinUMambaD.py``): the encoder on the image itself (stride-4
patch embedding, no stem) and a Mamba decoder (the original's ``UNetResDecoder``):

    s0..s3  = VSS stages as above (H/4 .. H/32)
    x       = s3; for each level up: PatchExpand (x2, half the channels), Linear(cat(x, skip)),
              VSS blocks                                             # skips s2, s1, s0
    logits  = Conv1x1(PatchExpand x4 (x))                            # dims[0] channels, H

Names are the original's (``vssm_encoder.*``, ``decoder.expand_layers``, ``decoder.concat_back_dim``,
``decoder.stages``, ``decoder.seg_layers``); its deep-supervision heads ``decoder.seg_layers.0-2``
are likewise not built, only ``decoder.seg_layers.3``, the full-resolution one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock
from torch import Tensor, nn

from vmunet.layers import (
    PatchEmbed,
    PatchExpand,
    VSSStage,
    drop_path_rates,
    init_he_conv,
    init_vmunet_weights,
    vmamba_encoder_stages,
)
from vmunet.models.common import Directions, VSSModel, check_model_args, int_list
from vmunet.ops import VMAMBA_DIRECTIONS

#: VMamba keys the original's ``load_pretrained_ckpt`` skips (its list names
#: ``patch_embed.norm.weight`` twice and not the bias, so ``patch_embed.norm.bias`` does load)
_VMAMBA_SKIPPED = ("patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight")


def _encoder_key(key: str) -> str:
    """A VMamba v0 encoder key -> ``VSSMEncoder``'s under the model (both originals'
    ``load_pretrained_ckpt``: ``vssm_encoder.`` prefix, ``layers.i.downsample`` -> ``downsamples.i``)."""
    return "vssm_encoder." + re.sub(r"^layers\.(\d+)\.downsample\.", r"downsamples.\1.", key)


class VSSMEncoder(nn.Module):
    """Swin-UMamba's ``VSSMEncoder``: patch embedding, VSS stages, PatchMerging between them;
    returns [its input, the output of every stage before merging], channels-first."""

    def __init__(self, in_chans: int, depths: list[int], dims: list[int], patch_size: int,
                 drop_path_rate: float, directions: Sequence[Sequence[str]], use_checkpoint: bool,
                 **block_kwargs: object) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dims[0], patch_size)
        self.layers, self.downsamples = vmamba_encoder_stages(
            depths, dims, drop_path_rate, directions, separate_merges=True, use_checkpoint=use_checkpoint,
            **block_kwargs)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            outs.append(x.permute(0, 3, 1, 2))
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        return outs


class SwinUMamba(VSSModel):
    """Swin-UMamba: (B, in_chans, H, W) -> logits (B, num_classes, H, W).

    Args:
        num_classes, in_chans: output / input channels.
        depths: VSS blocks per encoder stage (VMamba-T: 2, 2, 9, 2).
        dims: encoder stage widths (an int ``d`` means ``d, 2d, 4d, 8d``); the stem has dims[0]/2
            channels and the decoder levels have (dims[0]/2, *dims) -- the original's
            ``feat_size`` [48, 96, 192, 384, 768] for dims 96..768.
        d_state, d_conv, expand, dt_rank: SS2D settings.
        directions: scan orders: one list for every stage, or one list per encoder stage (4 lists,
            shallow to deep: the UNETR decoder has no VSS blocks).
        drop_path_rate: the encoder's stochastic depth (the original's encoder keeps its own
            default 0.2; its ``SwinUMamba(drop_path_rate=0)`` argument is never passed on).
        norm_name: MONAI norm of the UNETR blocks (original: "instance").
        use_checkpoint, pad_to_multiple, scan_backend: as ``VMUNet``.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: int | Sequence[int] = (96, 192, 384, 768),
        d_state: int = 16,
        d_conv: int = 3,
        expand: float = 2,
        dt_rank: int | str = "auto",
        directions: Directions = VMAMBA_DIRECTIONS,
        drop_path_rate: float = 0.2,
        norm_name: str = "instance",
        use_checkpoint: bool = False,
        pad_to_multiple: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        depths, dims = check_model_args("SwinUMamba", num_classes=num_classes, in_chans=in_chans, depths=depths,
                                        dims=dims, drop_path_rate=drop_path_rate, num_stages=4,
                                        why_stages=" (5 UNETR levels)")
        if dims[0] % 2:
            raise ValueError(f"SwinUMamba: dims[0] must be even (the stem has dims[0]/2 channels), got {dims}")
        per_stage = self.parse_directions(directions, len(depths))
        # stem /2, patch embedding /2, three merges
        super().__init__(num_classes, in_chans, pad_to_multiple=pad_to_multiple, size_multiple=2 * 2 * 2**3)
        feat = [dims[0] // 2, *dims]

        self.stem = nn.Sequential(nn.Conv2d(in_chans, feat[0], kernel_size=7, stride=2, padding=3),
                                  nn.InstanceNorm2d(feat[0], eps=1e-5, affine=True))
        self.vssm_encoder = VSSMEncoder(
            feat[0], depths, dims, patch_size=2, drop_path_rate=drop_path_rate, use_checkpoint=use_checkpoint,
            d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, directions=per_stage,
            scan_backend=scan_backend)
        block = dict(spatial_dims=2, kernel_size=3, norm_name=norm_name, res_block=True)
        ins = [in_chans, *feat[:4]]
        for i in range(5):  # encoder1..5: in_chans->feat0, feat0->feat1, ..., feat3->feat4
            setattr(self, f"encoder{i + 1}", UnetrBasicBlock(in_channels=ins[i], out_channels=feat[i],
                                                               stride=1, **block))
        # decoder6: dims[-1] -> feat4 (skip enc5); decoder5..2: feat[i+1] -> feat[i] (skips enc4..1)
        self.decoder6 = UnetrUpBlock(in_channels=dims[-1], out_channels=feat[4], upsample_kernel_size=2, **block)
        for i in range(3, -1, -1):
            setattr(self, f"decoder{i + 2}", UnetrUpBlock(in_channels=feat[i + 1], out_channels=feat[i],
                                                           upsample_kernel_size=2, **block))
        self.decoder1 = UnetrBasicBlock(in_channels=feat[0], out_channels=feat[0], stride=1, **block)
        self.out_layers = nn.ModuleList([UnetOutBlock(spatial_dims=2, in_channels=feat[0], out_channels=num_classes)])
        # VMamba's rules (Linear trunc-normal, LayerNorm 1/0) on the encoder only, as the original
        self.vssm_encoder.apply(init_vmunet_weights)

    @classmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        return num_stages, 0, "; the UNETR decoder has no VSS blocks"

    def original_unused(self) -> list[tuple[str, str]]:
        """(key prefix, why) of the original's keys this model does not build."""
        return [(f"out_layers.{i}.", "deep-supervision head (nnU-Net training only), not built")
                for i in (1, 2, 3)]

    @staticmethod
    def vmamba_targets(key: str) -> tuple[str | None, str]:
        """A VMamba v0 key -> our key, as the original's ``load_pretrained_ckpt`` maps it
        (``vssm_encoder.`` prefix, ``layers.i.downsample`` -> ``downsamples.i``), or (None, why)."""
        if key.startswith(("head.", "norm.")):
            return None, "ImageNet classifier part (norm/head), unused by Swin-UMamba"
        if key in _VMAMBA_SKIPPED:
            return None, "skipped by Swin-UMamba's load_pretrained_ckpt (its patch embedding sees the stem)"
        return _encoder_key(key), ""

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.check_and_pad(x)
        x1 = self.stem(x)
        vss = self.vssm_encoder(x1)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(vss[0])
        enc3 = self.encoder3(vss[1])
        enc4 = self.encoder4(vss[2])
        enc5 = self.encoder5(vss[3])
        dec4 = self.decoder6(vss[4], enc5)
        dec3 = self.decoder5(dec4, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        logits = self.out_layers[0](self.decoder1(dec0))
        return logits[..., :H, :W]


class MambaDecoder(nn.Module):
    """Swin-UMamba†'s ``UNetResDecoder`` (inference path): from the deepest encoder output up,
    level ``s`` expands x2 to the next skip's width, concatenates that skip, maps back with a Linear
    and runs VSS blocks; the last level expands x4 to full resolution and a 1x1 conv gives logits.

    Args:
        num_classes: logits channels.
        dims: encoder stage widths, shallow to deep (each doubles the previous one).
        depths: VSS blocks per decoder level, deepest first (``len(dims) - 1`` entries; original: 2 each).
        drop_path: the rates of all decoder blocks in that order.
        directions: scan orders of each level, deepest first.
        use_checkpoint, block_kwargs: as ``VSSStage``.
    """

    def __init__(self, num_classes: int, dims: Sequence[int], depths: Sequence[int], drop_path: Sequence[float],
                 directions: Sequence[Sequence[str]], use_checkpoint: bool = False, **block_kwargs: object) -> None:
        super().__init__()
        n = len(dims)
        expand_layers, stages, concat_back_dim = [], [], []
        for s in range(n - 1):
            skip = dims[n - 2 - s]
            first = sum(depths[:s])
            expand_layers.append(PatchExpand(dims[n - 1 - s], skip))
            stages.append(VSSStage(skip, depths[s], drop_path[first:first + depths[s]],
                                   use_checkpoint=use_checkpoint, directions=directions[s], **block_kwargs))
            concat_back_dim.append(nn.Linear(2 * skip, skip))
        expand_layers.append(PatchExpand(dims[0], dims[0], scale=4))  # FinalPatchExpand_X4
        # registered in the original's order (its state dict's key order)
        self.stages = nn.ModuleList(stages)
        self.expand_layers = nn.ModuleList(expand_layers)
        # only the full-resolution head, under the original's index (0 .. n-2 are its
        # deep-supervision heads, not built: see SwinUMambaD.original_unused)
        self.seg_layers = nn.ModuleDict({str(n - 1): nn.Conv2d(dims[0], num_classes, 1)})
        self.concat_back_dim = nn.ModuleList(concat_back_dim)

    def forward(self, skips: list[Tensor]) -> Tensor:
        """``skips``: the encoder's outputs, channels-first, deepest last -> logits (B, classes, H, W)."""
        n = len(self.expand_layers)
        x = skips[-1].permute(0, 2, 3, 1)
        for s in range(n - 1):
            x = self.expand_layers[s](x)
            x = self.concat_back_dim[s](torch.cat([x, skips[-(s + 2)].permute(0, 2, 3, 1)], dim=-1))
            x = self.stages[s](x)
        x = self.expand_layers[n - 1](x)
        return self.seg_layers[str(n - 1)](x.permute(0, 3, 1, 2))


class SwinUMambaD(VSSModel):
    """Swin-UMamba†: (B, in_chans, H, W) -> logits (B, num_classes, H, W).

    Args:
        num_classes, in_chans: output / input channels.
        depths: VSS blocks per encoder stage (VMamba-T: 2, 2, 9, 2).
        depths_decoder: VSS blocks per decoder level, deepest first (``len(depths) - 1`` entries;
            the original fixes 2 each).
        dims: encoder stage widths (an int ``d`` means ``d, 2d, 4d, ...``); each must double the
            previous one (the decoder's PatchExpand halves the width to the skip's).
        d_state, d_conv, expand, dt_rank: SS2D settings, encoder and decoder alike.
        directions: scan orders: one list for every stage, or one list per VSS stage --
            ``2 * len(depths) - 1`` lists, the encoder stages shallow to deep, then the decoder
            levels deepest first (the last, x4, level has no blocks).
        patch_size: patch-embedding stride (original: 4).
        drop_path_rate: stochastic depth: ``linspace(0, rate)`` over the encoder blocks and
            ``linspace(rate, 0)`` over the decoder blocks, deepest first (the original passes 0.2 to both).
        use_checkpoint, pad_to_multiple, scan_backend: as ``VMUNet``.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        depths: Sequence[int] = (2, 2, 9, 2),
        depths_decoder: Sequence[int] = (2, 2, 2),
        dims: int | Sequence[int] = (96, 192, 384, 768),
        d_state: int = 16,
        d_conv: int = 3,
        expand: float = 2,
        dt_rank: int | str = "auto",
        directions: Directions = VMAMBA_DIRECTIONS,
        patch_size: int = 4,
        drop_path_rate: float = 0.2,
        use_checkpoint: bool = False,
        pad_to_multiple: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        depths, dims = check_model_args("SwinUMambaD", num_classes=num_classes, in_chans=in_chans, depths=depths,
                                        dims=dims, drop_path_rate=drop_path_rate)
        n = len(depths)
        if n < 2:
            raise ValueError(f"SwinUMambaD: depths must have at least 2 entries (a U-Net needs a skip), got {depths}")
        if any(dims[i + 1] != 2 * dims[i] for i in range(n - 1)):
            raise ValueError(f"SwinUMambaD: each dims entry must double the previous one, got {dims}")
        if isinstance(depths_decoder, int):
            raise TypeError(f"SwinUMambaD: depths_decoder must be a list of {n - 1} ints, got {depths_decoder!r}")
        depths_decoder = int_list("depths_decoder", depths_decoder, n - 1, model="SwinUMambaD")
        per_stage = self.parse_directions(directions, n)
        super().__init__(num_classes, in_chans, pad_to_multiple=pad_to_multiple, size_multiple=patch_size * 2 ** (n - 1))

        block_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, scan_backend=scan_backend)
        self.vssm_encoder = VSSMEncoder(in_chans, depths, dims, patch_size=patch_size, drop_path_rate=drop_path_rate,
                                        directions=per_stage[:n], use_checkpoint=use_checkpoint, **block_kwargs)
        self.decoder = MambaDecoder(num_classes, dims, depths_decoder,
                                    drop_path_rates(drop_path_rate, sum(depths_decoder))[::-1],
                                    per_stage[n:], use_checkpoint=use_checkpoint, **block_kwargs)
        # as get_swin_umamba_d_from_plans: VMamba's rules on the encoder (its constructor), then
        # nnU-Net's He init on every convolution; the decoder's Linears keep PyTorch's default
        self.vssm_encoder.apply(init_vmunet_weights)
        self.apply(init_he_conv)

    @classmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        return num_stages, num_stages - 1, "; the last, x4, decoder level has no blocks"

    def original_unused(self) -> list[tuple[str, str]]:
        """(key prefix, why) of the original's keys this model does not build."""
        return [(f"decoder.seg_layers.{i}.", "deep-supervision head (nnU-Net training only), not built")
                for i in range(len(self.decoder.stages))]

    def vmamba_targets(self, key: str) -> tuple[str | None, str]:
        """A VMamba v0 key -> our key as Swin-UMamba†'s ``load_pretrained_ckpt`` maps it, or
        (None, why). It skips the whole patch embedding when the file's input channels differ from
        the model's; VMamba's ImageNet files are all RGB, so here: unless ``in_chans`` is 3. (A
        non-RGB VMamba file, none published, differs: the original decides by its channels; here
        it is a shape error for a 3-channel model and skipped for the others.)"""
        if key.startswith(("head.", "norm.")):
            return None, "ImageNet classifier part (norm/head), unused by Swin-UMamba†"
        if key.startswith("patch_embed.") and self.in_chans != 3:
            return None, (f"skipped by Swin-UMamba†'s load_pretrained_ckpt (3-channel patch embedding, "
                          f"the model has {self.in_chans})")
        return _encoder_key(key), ""

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.check_and_pad(x)
        logits = self.decoder(self.vssm_encoder(x))
        return logits[..., :H, :W]
