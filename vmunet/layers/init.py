"""Weight initialisation shared by the VM-UNet family (VMamba's ``_init_weights``)."""

from __future__ import annotations

from torch import nn


def init_vmunet_weights(module: nn.Module) -> None:
    """Linear: truncated normal (std 0.02, cut at ±2) and zero bias; LayerNorm: weight 1, bias 0.

    Meant for ``model.apply``. Convolutions keep PyTorch's default init and the SS2D parameters
    (``x_proj_weight``, ``dt_projs_*``, ``A_logs``, ``Ds``) keep their own, exactly as in VMamba v0,
    because those are plain ``nn.Parameter`` s, not ``nn.Linear`` modules.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
