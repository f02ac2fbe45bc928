"""Our VM-UNet-V2 (``vmunet_v2``) against the original ``VMUNetV2`` executed (nobodyplayer1/VM-UNetV2
``models/vmunet``, commit ``b65f04c``; mamba-ssm's ``selective_scan_ref`` as its scan): the
original's state dict loads (the modules it never uses skipped), and the logits with and
without deep supervision equal, on a gray image the original repeats to 3 channels.

The original hard-codes the VSSM widths (96..768); its ``VMUNetV2.__init__`` runs with ``VSSM``
bound to the original class at the small widths below (``functools.partial``), nothing else changed.

Frozen: the original's output for ``deterministic_tensors`` weights and ``deterministic_input``
(torch 2.13 CPU, float32), for fresh clones.
"""

from __future__ import annotations

import functools

import pytest
import torch
from original_code import deterministic_input, deterministic_tensors, original_vmunet_v2_package

from vmunet.models import create_model
from vmunet.models.weights import load_weights

SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 32, 64, 128], mid=8)
CASES = {"deep_supervision": (True, 1), "plain": (False, 2)}  # the original's fused head needs 1 class

# The original VMUNetV2(mid_channel=8, depths=[1, 1, 2, 1]) with VSSM widths 16..128, input
# deterministic_input((1, 1, 32, 32)), _weights: its logits [0, c, 2::6, 1::6] (deep supervision:
# the logit of its sigmoid output; 5 decimals) and their per-class sum over the whole map.
FROZEN = {
    "deep_supervision": [
        [[[-4.90152, -5.33202, -5.2674, -5.1582, -5.30864, -3.95954],
          [-5.75333, -6.36586, -6.23615, -5.9956, -6.06187, -4.41419],
          [-5.33624, -5.6753, -5.51044, -5.4002, -5.76701, -4.33359],
          [-5.03832, -5.4271, -5.2217, -5.11519, -5.48768, -4.10727],
          [-5.04184, -4.99053, -4.57762, -4.61186, -5.01851, -3.99188]]],
        [-4699.308],
    ],
    "plain": [
        [[[-1.85676, -2.42137, -2.55686, -2.58792, -2.52748, -2.21586],
          [-2.48846, -3.12166, -3.08077, -3.03456, -2.91826, -2.45204],
          [-2.2426, -2.63743, -2.59758, -2.66196, -2.71693, -2.39634],
          [-2.42793, -3.05563, -3.1473, -3.09121, -2.9259, -2.41714],
          [-2.29789, -2.55287, -2.43981, -2.30075, -2.27668, -2.22449]],
         [[2.14364, 2.59659, 2.73047, 2.77342, 2.72301, 2.50304],
          [2.79895, 3.39941, 3.36457, 3.33994, 3.2276, 2.80136],
          [2.53973, 2.85204, 2.80517, 2.87384, 2.94218, 2.71388],
          [2.7397, 3.31803, 3.4269, 3.39766, 3.22861, 2.75252],
          [2.64118, 2.89416, 2.80509, 2.63769, 2.57538, 2.56051]]],
        [-2700.071, 2990.509],
    ],
}


def _weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """deterministic_tensors, with 1 added to the SDI convolutions' biases: SDI multiplies its four
    convolutions, and products of values near 0 would leave the output all biases."""
    weights = deterministic_tensors(shapes)
    for k in weights:
        if k.startswith("sdi_") and k.endswith(".bias"):
            weights[k] = weights[k] + 1.0
    return weights


def _ours(deep_supervision: bool, num_classes: int, weights: dict) -> torch.nn.Module:
    model = create_model("vmunet_v2", num_classes=num_classes, in_chans=1, depths=SMALL["depths"],
                         dims=SMALL["dims"], mid_channels=SMALL["mid"], deep_supervision=deep_supervision,
                         scan_backend="torch").eval()
    report = load_weights(model, weights)
    assert report.layout == "vmunet_v2_original" and not report.missing
    assert report.adapted == [("patch_embed.proj.weight", "summed 3 input channels into 1")]
    return model


def _original_names(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Our keys as the original names them: the encoder under ``vmunet.``."""
    return {("vmunet." + k if k.startswith(("patch_embed.", "layers.")) else k): tuple(v.shape)
            for k, v in model.state_dict().items()}


def _summary(logits: torch.Tensor) -> list:
    return [logits[0, :, 2::6, 1::6].tolist(), logits.sum((0, 2, 3)).tolist()]


@pytest.mark.parametrize("case", CASES)
def test_v2_logits_equal_the_frozen_original_output(case):
    ds, num_classes = CASES[case]
    template = create_model("vmunet_v2", num_classes=num_classes, in_chans=3, depths=SMALL["depths"],
                            dims=SMALL["dims"], mid_channels=SMALL["mid"], deep_supervision=ds)
    model = _ours(ds, num_classes, _weights(_original_names(template)))
    with torch.no_grad():
        sub, sums = _summary(model(deterministic_input((1, 1, 32, 32))))
    frozen_sub, frozen_sums = FROZEN[case]
    torch.testing.assert_close(torch.tensor(sub), torch.tensor(frozen_sub), rtol=0, atol=2e-4)
    torch.testing.assert_close(torch.tensor(sums), torch.tensor(frozen_sums), rtol=0, atol=5e-2)


@pytest.mark.parametrize("case", CASES)
def test_v2_logits_equal_the_original_vmunetv2(case):
    package = original_vmunet_v2_package()  # skips without third_party/
    ds, num_classes = CASES[case]
    small_vssm = functools.partial(package.vmamba.VSSM, dims=SMALL["dims"], dims_decoder=SMALL["dims"][::-1])
    real_vssm, package.vmunet_v2.VSSM = package.vmunet_v2.VSSM, small_vssm
    try:
        original = package.vmunet_v2.VMUNetV2(input_channels=3, num_classes=num_classes, mid_channel=SMALL["mid"],
                                              depths=SMALL["depths"], depths_decoder=[1, 1, 1, 1],
                                              deep_supervision=ds).eval()
    finally:
        package.vmunet_v2.VSSM = real_vssm
    weights = _weights({k: tuple(v.shape) for k, v in original.state_dict().items()})
    original.load_state_dict(weights)
    ours = _ours(ds, num_classes, weights)  # the original's full state dict, unused modules included
    x = deterministic_input((1, 1, 32, 32))
    with torch.no_grad():
        ref = original(x)
        logits = ours(x)
    if ds:  # the original returns sigmoid(fused logits)
        torch.testing.assert_close(torch.sigmoid(logits), ref, rtol=0, atol=1e-6)
        ref = torch.logit(ref.double()).float()
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-4)
    frozen_sub, frozen_sums = FROZEN[case]
    sub, sums = _summary(ref)
    torch.testing.assert_close(torch.tensor(sub), torch.tensor(frozen_sub), rtol=0, atol=2e-5)
    torch.testing.assert_close(torch.tensor(sums), torch.tensor(frozen_sums), rtol=0, atol=2e-2)
