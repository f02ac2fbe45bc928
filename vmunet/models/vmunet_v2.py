"""VM-UNet-V2 (Zhang et al. 2024, nobodyplayer1/VM-UNetV2 ``models/vmunet/vmunet_v2.py``): the
VMamba v0 encoder with an SDI decoder.

    f_i   = input of encoder stage i (i = 1..4: H/4 .. H/32, channels dims[i])
    f_i   = Translayer_i(SA_i(CA_i(f_i) * f_i) * f_i)            # 1x1 conv + BN to mid_channels
    g_i   = SDI_i([f_1..f_4], anchor f_i)                         # all levels at f_i's size
    y     = g_4;  y = deconv(y) + g_3;  y = deconv(y) + g_2;  y = deconv(y) + g_1
    side  = seg_out(y at H/8) and seg_out(y at H/4), each bilinearly upsampled x4
    logits = side(H) + deconv6(side(H/2))     (deep_supervision=True, the original default)
    logits = side(H)                          (deep_supervision=False)

The original's "deep supervision" is this fusion: its forward returns
``sigmoid(side(H) + deconv6(side(H/2)))`` in training and evaluation alike, and its training loop
applies the one loss (``BceDiceLoss(wb=1, wd=1)``) to that one output. This model returns the
logits before that sigmoid, so the training module's loss applies to it unchanged.

What the original builds but never uses is not built here: the last encoder stage's blocks (its
forward returns the *inputs* of the four stages, so stage 4 runs and is thrown away), the side
heads ``seg_outs.0``/``seg_outs.1`` (computed, never returned), ``seg_outs.2`` and ``deconv6``
without deep supervision, and ``deconv5``. Their keys in the original's state dicts are skipped
by name when loading (``ORIGINAL_UNUSED``). Two generalisations that leave the original's
results unchanged where it works: ``deconv6`` has ``num_classes`` channels (the original's has 1
and fails otherwise), and SDI resizes to the anchor's (H, W) (the original's square resize fails
for H != W). A 1-channel model takes gray input directly; the original repeats it to 3 channels,
which a 3-channel patch embedding loaded by ``vmunet.models.weights`` (kernel summed over input
channels) reproduces exactly.

Module names are the original's, without its ``vmunet.`` prefix on the encoder (``patch_embed``,
``layers``, ``ca_1``, ``sa_1``, ``Translayer_1``, ``sdi_1``, ``seg_outs``, ``deconv2`` ...), so its
state dicts and VMamba v0 encoders load by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.layers import init_vmunet_weights
from vmunet.layers.sdi import SDI, ChannelAttention, ConvBN, SpatialAttention
from vmunet.models.common import Directions, VSSModel, check_model_args
from vmunet.ops import VMAMBA_DIRECTIONS


class VMUNetV2(VSSModel):
    """VM-UNet-V2: (B, in_chans, H, W) -> logits (B, num_classes, H, W).

    Args:
        num_classes: output channels (1 = binary; logits, no sigmoid inside).
        in_chans: input channels.
        depths: VSS blocks per encoder stage (the last entry is accepted for the original's
            configs, but those blocks are not built: see the module docstring).
        dims: channels per encoder stage (an int ``d`` means ``d, 2d, 4d, ...``); each must be >= 16
            (channel attention reduces by 16).
        mid_channels: channels of the SDI decoder (original: 48).
        deep_supervision: fuse the two finest side outputs (the original's default, True) or
            return the finest alone.
        d_state, d_conv, expand, dt_rank: SS2D settings (``vmunet.layers.SS2D``).
        directions: scan orders: one list for every stage, or one list per built encoder stage
            (``len(depths) - 1`` lists, shallow to deep: the SDI decoder has no VSS blocks).
        patch_size: patch-embedding stride.
        drop_rate, attn_drop_rate, drop_path_rate: as ``VMUNet``; the drop-path schedule is
            linspace(0, rate) over all ``sum(depths)`` encoder blocks, as in the original.
        use_checkpoint: gradient checkpointing of every VSS block.
        pad_to_multiple: zero-pad inputs to a multiple of the size multiple and crop back.
        scan_backend: selective-scan backend for every SS2D.
    """

    #: (prefix, why) of the original's state-dict keys for modules it builds but never uses;
    #: ``{last}`` is the index of the last encoder stage
    ORIGINAL_UNUSED = (
        ("layers.{last}.blocks.", "last encoder stage: the original runs it and discards its output"),
        ("seg_outs.0.", "side head the original computes but never returns"),
        ("seg_outs.1.", "side head the original computes but never returns"),
        ("deconv5.", "built but never called by the original"),
    )
    ORIGINAL_UNUSED_WITHOUT_DS = (
        ("seg_outs.2.", "side head used only with deep supervision"),
        ("deconv6.", "fusion upsampling used only with deep supervision"),
    )

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: int | Sequence[int] = (96, 192, 384, 768),
        mid_channels: int = 48,
        deep_supervision: bool = True,
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
        depths, dims = check_model_args("VMUNetV2", num_classes=num_classes, in_chans=in_chans, depths=depths,
                                        dims=dims, drop_path_rate=drop_path_rate, num_stages=4,
                                        why_stages=" (the SDI decoder has 4 levels)")
        n = len(depths)
        if min(dims) < 16:
            raise ValueError(f"VMUNetV2: every dims entry must be >= 16 (channel attention reduces by 16), got {dims}")
        per_stage = self.parse_directions(directions, n)
        super().__init__(num_classes, in_chans, pad_to_multiple=pad_to_multiple, size_multiple=patch_size * 2 ** (n - 1))
        self.deep_supervision = bool(deep_supervision)

        # stages 0..n-2 (blocks + downsample); the last stage's input is the deepest feature
        self.build_encoder(depths, dims, patch_size=patch_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                           directions=per_stage, num_built=n - 1, use_checkpoint=use_checkpoint, d_state=d_state,
                           d_conv=d_conv, expand=expand, dt_rank=dt_rank, scan_backend=scan_backend,
                           attn_drop_rate=attn_drop_rate)

        m = mid_channels
        for i, d in enumerate(dims, start=1):
            setattr(self, f"ca_{i}", ChannelAttention(d))
            setattr(self, f"sa_{i}", SpatialAttention())
            setattr(self, f"Translayer_{i}", ConvBN(d, m, 1))
            setattr(self, f"sdi_{i}", SDI(m, levels=n))
        heads = ("2", "3") if self.deep_supervision else ("3",)
        # a dict keyed "2"/"3" gives the original ModuleList's key names for the heads it uses
        self.seg_outs = nn.ModuleDict({k: nn.Conv2d(m, num_classes, 1) for k in heads})
        for i in (2, 3, 4):
            setattr(self, f"deconv{i}", nn.ConvTranspose2d(m, m, 4, stride=2, padding=1, bias=False))
        if self.deep_supervision:
            self.deconv6 = nn.ConvTranspose2d(num_classes, num_classes, 3, stride=2, padding=1,
                                              output_padding=1)
        self.apply(init_vmunet_weights)

    def original_unused(self) -> list[tuple[str, str]]:
        """(key prefix, why) of the original's (and VMamba's) state-dict keys this model does not
        build because the original never uses them; ``vmunet.models.weights`` skips them."""
        unused = list(self.ORIGINAL_UNUSED) + ([] if self.deep_supervision else list(self.ORIGINAL_UNUSED_WITHOUT_DS))
        return [(prefix.format(last=len(self.layers)), why) for prefix, why in unused]

    @classmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        return num_stages - 1, 0, "; the last encoder stage's blocks are not built and the SDI decoder has none"

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Encoder: (B, C, H, W) -> the inputs of the 4 encoder stages, channels-first."""
        x, feats = self.forward_encoder(x)
        return [f.permute(0, 3, 1, 2) for f in (*feats, x)]

    def _attend(self, i: int, f: Tensor) -> Tensor:
        """Level i: channel attention, spatial attention, 1x1 conv + BN to mid_channels."""
        f = getattr(self, f"ca_{i}")(f) * f
        f = getattr(self, f"sa_{i}")(f) * f
        return getattr(self, f"Translayer_{i}")(f)

    def side_outputs(self, x: Tensor) -> list[Tensor]:
        """The side logits this model uses, finest first, each bilinearly upsampled x4 as in the
        original: [at H (, at H/2 with deep supervision)]. ``x`` must have a valid size."""
        fs = [self._attend(i, f) for i, f in enumerate(self.forward_features(x), start=1)]
        g1, g2, g3, g4 = (getattr(self, f"sdi_{i}")(fs, fs[i - 1]) for i in range(1, 5))
        y = self.deconv2(g4) + g3
        y8 = self.deconv3(y) + g2
        y4 = self.deconv4(y8) + g1
        outs = [self.seg_outs["3"](y4)]
        if self.deep_supervision:
            outs.append(self.seg_outs["2"](y8))
        return [F.interpolate(o, scale_factor=4, mode="bilinear") for o in outs]

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.check_and_pad(x)
        outs = self.side_outputs(x)
        logits = outs[0] + self.deconv6(outs[1]) if self.deep_supervision else outs[0]
        return logits[..., :H, :W]
