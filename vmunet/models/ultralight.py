"""UltraLight VM-UNet (Wu et al. 2024, *UltraLight VM-UNet: Parallel Vision Mamba Significantly
Reduces Parameters for Skin Lesion Segmentation*; wurenkai/UltraLight-VM-UNet
``models/UltraLight_VM_UNet.py``): a six-level U-Net of 3x3 convolutions and Parallel Vision Mamba
layers (``vmunet.layers.pvm``), 49k parameters at the paper's widths 8, 16, 24, 32, 48, 64.

    t_i   = GELU(maxpool2(GroupNorm4(encoder_i(t_{i-1}))))    i = 1..5 (H/2 .. H/32)
            encoder_1..3: conv3x3; encoder_4, 5: PVM layers
    t_1..t_5 = SCAttBridge(t_1..t_5)                           (bridge=True)
    y     = GELU(encoder_6(t_5))                               # PVM, H/32
    y     = GELU(GroupNorm(decoder_1(y))) + t_5                # PVM, H/32
    y     = GELU(up2(GroupNorm(decoder_k(y)))) + t_{6-k}       k = 2..5; decoder_2, 3 PVM, 4, 5 conv3x3
    logits = up2(final(y))                                     # 1x1 conv; up2: bilinear, align_corners

Module names are the original's (``encoder1``..``encoder6`` and ``decoder1``..``decoder5`` as
one-module ``Sequential`` s, ``ebn1``.., ``dbn1``.., ``scab``, ``final``), so the state dicts its
``train.py`` saves (``best.pth``: ``model.module.state_dict()``; ``latest.pth``: under
``model_state_dict``) load by name. The original returns ``sigmoid(logits)``; this model returns
the logits (the training module's loss and inference apply the sigmoid). It takes ``in_chans``
channels natively, as the original's ``input_channels``; there is no gray-to-RGB repeat in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vmunet.layers import PVMLayer, SCAttBridge, init_ultralight_weights
from vmunet.models.common import VSSModel, check_model_args

#: the paper's channel widths per level, as multiples of the first (8, 16, 24, 32, 48, 64)
WIDTH_RATIOS = (1, 2, 3, 4, 6, 8)


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=(2, 2), mode="bilinear", align_corners=True)


class UltraLightVMUNet(VSSModel):
    """UltraLight VM-UNet: (B, in_chans, H, W) -> logits (B, num_classes, H, W).

    Args:
        num_classes: output channels (1 = binary; logits, no sigmoid inside).
        in_chans: input channels.
        dims: the six level widths (the original's ``c_list``), each a multiple of 4 (GroupNorm
            with 4 groups; a PVM layer splits its input in four); an int ``d`` means
            ``d * (1, 2, 3, 4, 6, 8)``.
        split_att: the channel bridge's per-level projection, "fc" (Linear, the original's
            default) or "conv" (1x1 Conv1d).
        bridge: use the spatial/channel attention bridge on the skips (the original's default).
        d_state, d_conv, expand: every PVM layer's Mamba settings (the original's PVMLayer
            defaults 16, 4, 2, which its model never overrides).
        pad_to_multiple: zero-pad inputs to a multiple of 32 and crop back.
        scan_backend: selective-scan backend of every Mamba block.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        dims: int | Sequence[int] = (8, 16, 24, 32, 48, 64),
        split_att: str = "fc",
        bridge: bool = True,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        pad_to_multiple: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        name = type(self).__name__
        if isinstance(dims, int):
            dims = [dims * r for r in WIDTH_RATIOS]
        _, dims = check_model_args(name, num_classes=num_classes, in_chans=in_chans, depths=[1] * len(WIDTH_RATIOS),
                                   dims=dims, drop_path_rate=0.0)
        if any(d < 4 or d % 4 for d in dims):
            raise ValueError(f"{name}: every dims entry must be a positive multiple of 4 (GroupNorm of 4 groups, "
                             f"four parallel Mamba quarters), got {dims}")
        if split_att not in ("fc", "conv"):
            raise ValueError(f"{name}: split_att must be 'fc' or 'conv', got {split_att!r}")
        super().__init__(num_classes, in_chans, pad_to_multiple=pad_to_multiple, size_multiple=2**5)
        self.bridge = bool(bridge)
        c = dims
        pvm = dict(d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)

        def conv(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=1, padding=1))

        self.encoder1, self.encoder2, self.encoder3 = conv(in_chans, c[0]), conv(c[0], c[1]), conv(c[1], c[2])
        for i in (4, 5, 6):
            setattr(self, f"encoder{i}", nn.Sequential(PVMLayer(c[i - 2], c[i - 1], **pvm)))
        if self.bridge:
            self.scab = SCAttBridge(c[:5], split_att)
        for k in (1, 2, 3):
            setattr(self, f"decoder{k}", nn.Sequential(PVMLayer(c[6 - k], c[5 - k], **pvm)))
        self.decoder4, self.decoder5 = conv(c[2], c[1]), conv(c[1], c[0])
        for i in range(1, 6):
            setattr(self, f"ebn{i}", nn.GroupNorm(4, c[i - 1]))
        for k in range(1, 6):
            setattr(self, f"dbn{k}", nn.GroupNorm(4, c[5 - k]))
        self.final = nn.Conv2d(c[0], num_classes, kernel_size=1)
        self.apply(init_ultralight_weights)

    @classmethod
    def vss_stage_counts(cls, num_stages: int) -> tuple[int, int, str]:
        return 0, 0, "; PVM layers scan 1D token sequences, they take no 2D scan orders"

    def forward(self, x: Tensor) -> Tensor:
        x, H, W = self.check_and_pad(x)
        skips = []
        for i in range(1, 6):
            x = F.gelu(F.max_pool2d(getattr(self, f"ebn{i}")(getattr(self, f"encoder{i}")(x)), 2, 2))
            skips.append(x)
        if self.bridge:
            skips = self.scab(skips)
        y = F.gelu(self.encoder6(x))
        y = F.gelu(self.dbn1(self.decoder1(y))) + skips[4]
        for k in range(2, 6):
            y = F.gelu(_up2(getattr(self, f"dbn{k}")(getattr(self, f"decoder{k}")(y)))) + skips[5 - k]
        logits = _up2(self.final(y))
        return logits[..., :H, :W]
