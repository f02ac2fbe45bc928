"""Our Mamba-UNet (``mamba_unet``) against the original executed (ziyangwang007/Mamba-UNet
``code/networks``, commit ``dfe92ba``; mamba-ssm's ``selective_scan_ref`` as its scan): the
original ``MambaUnet`` state dict loads by name, the logits equal on a gray H != W image (the
original repeats it to 3 channels), and a VMamba v0 file initialises the same tensors as the
original ``MambaUnet.load_from``.

``MambaUnet.__init__`` only reads a yacs config into ``VSSM(...)``: the tests build the original
``VSSM`` directly and put it in an otherwise unchanged ``MambaUnet``. Frozen: the original's
outputs for ``deterministic_tensors`` / ``deterministic_input`` (torch 2.13 CPU, float32).
"""

from __future__ import annotations

import hashlib
import types

import torch
from original_code import deterministic_input, deterministic_tensors, original_mamba_unet_package

from vmunet.models import create_model
from vmunet.models.weights import load_weights

SMALL = dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])

# The original MambaUnet around VSSM(in_chans=3, num_classes=3, **SMALL), deterministic_tensors
# weights, input deterministic_input((1, 1, 32, 64)): logits [0, c, 2::6, 3::13] (5 decimals)
# and the per-class sums.
FROZEN_LOGITS = [
    [[4.34181, 3.68618, 4.49991, 5.48366, 5.38650], [-5.98232, -1.87853, -1.33063, -2.83388, -2.76009],
     [5.36899, 1.03281, 4.42745, 3.31500, 5.32230], [-3.98747, 3.81010, -1.21003, -0.75304, -5.55245],
     [5.06263, 4.40277, 0.38037, 3.27302, 4.81182]],
    [[5.07517, 1.83638, 2.89511, 4.61180, 5.30552], [-5.71613, 0.03076, 0.58117, -0.97562, -0.89580],
     [4.32420, -1.07079, 2.79463, 1.38863, 5.33205], [-2.29736, 4.78900, 0.69956, 1.13943, -4.46687],
     [5.32876, 2.76211, -1.70591, 1.33867, 3.34845]],
    [[5.14641, -0.25300, 0.91262, 3.13828, 4.53238], [-4.70420, 1.93603, 2.41714, 1.00992, 1.08536],
     [2.71529, -3.03469, 0.79723, -0.71891, 4.64617], [-0.30755, 5.14314, 2.51789, 2.88325, -2.79853],
     [4.89969, 0.76111, -3.56965, -0.77033, 1.44825]],
]
FROZEN_SUMS = [-485.758, -96.855, 304.683]
# The original MambaUnet.load_from on the tagged VMamba v0 file of _vmamba_file: how many model
# tensors it sets and sha256 of the sorted "model key<-file key" lines. It loads every name-and-shape
# match, so VMamba's final `norm` (before the ImageNet head) lands in Mamba-UNet's encoder `norm`.
FROZEN_LOAD_FROM = (106, "ac8489daabfc58ab51c4d1ffee72a1981e2a7de9989d1934f3a169b0a5dd11ad")


def _ours(in_chans: int = 1) -> torch.nn.Module:
    return create_model("mamba_unet", num_classes=3, in_chans=in_chans, scan_backend="torch", **SMALL).eval()


def _original(package) -> torch.nn.Module:
    vssm = package.mamba_sys.VSSM(in_chans=3, num_classes=3, **SMALL)
    wrapper = package.vision_mamba.MambaUnet.__new__(package.vision_mamba.MambaUnet)
    torch.nn.Module.__init__(wrapper)
    wrapper.mamba_unet, wrapper.num_classes = vssm, 3
    return wrapper.eval()


def _load(model: torch.nn.Module, weights: dict) -> None:
    report = load_weights(model, weights)
    assert report.layout == "mamba_unet_original" and not report.missing and not report.skipped
    assert report.adapted == [("patch_embed.proj.weight", "summed 3 input channels into 1")]


def test_mamba_unet_logits_equal_the_frozen_original_output():
    model = _ours()
    shapes = {"mamba_unet." + k: tuple(v.shape) for k, v in _ours(in_chans=3).state_dict().items()}
    _load(model, deterministic_tensors(shapes))
    with torch.no_grad():
        logits = model(deterministic_input((1, 1, 32, 64)))
    torch.testing.assert_close(logits[0, :, 2::6, 3::13], torch.tensor(FROZEN_LOGITS), rtol=0, atol=5e-4)
    torch.testing.assert_close(logits.sum((0, 2, 3)), torch.tensor(FROZEN_SUMS), rtol=0, atol=5e-2)


def test_mamba_unet_logits_equal_the_original():
    original = _original(original_mamba_unet_package())  # skips without third_party/
    weights = deterministic_tensors({k: tuple(v.shape) for k, v in original.state_dict().items()})
    original.load_state_dict(weights)
    model = _ours()
    _load(model, weights)  # the original's own state dict: keys mamba_unet.*
    x = deterministic_input((1, 1, 32, 64))
    with torch.no_grad():
        ref = original(x)
        logits = model(x)
    torch.testing.assert_close(ref[0, :, 2::6, 3::13], torch.tensor(FROZEN_LOGITS), rtol=0, atol=1e-4)
    torch.testing.assert_close(ref.sum((0, 2, 3)), torch.tensor(FROZEN_SUMS), rtol=0, atol=1e-2)
    torch.testing.assert_close(logits, ref, rtol=0, atol=5e-4)


def _vmamba_file(path, state_dict) -> list[str]:
    """A VMamba v0 file for this width: the encoder keys of ``state_dict`` plus ImageNet
    ``norm``/``head``; every tensor holds its tag (+i under ``model``, -i under ``model_ema``)."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith(("patch_embed.", "layers."))}
    shapes.update({"norm.weight": (128,), "norm.bias": (128,), "head.weight": (1000, 128), "head.bias": (1000,)})
    keys = sorted(shapes)

    def tagged(sign):
        return {k: torch.full((1,), sign * (i + 1.0)).expand(shapes[k]) for i, k in enumerate(keys)}

    torch.save({"model": tagged(1), "model_ema": tagged(-1)}, path)
    return keys


def _mapping(state_dict, keys) -> tuple[int, str]:
    lines = []
    for k, v in state_dict.items():
        if not v.is_floating_point():
            continue
        tag = int(v.max().item())
        assert tag == int(v.min().item()), k
        if tag:
            lines.append(f"{k}<-{'ema:' if tag < 0 else ''}{keys[abs(tag) - 1]}")
    lines.sort()
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _zeroed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for v in model.state_dict().values():
            v.zero_()
    return model


def test_vmamba_v0_file_loads_like_the_frozen_original_load_from(tmp_path):
    model = _zeroed(_ours(in_chans=3))
    keys = _vmamba_file(tmp_path / "vmamba.pth", model.state_dict())
    load_weights(model, tmp_path / "vmamba.pth", entry="model")  # load_from reads ['model']
    assert _mapping(model.state_dict(), keys) == FROZEN_LOAD_FROM


def test_vmamba_v0_mapping_of_the_original_load_from(tmp_path, capsys):
    original = _original(original_mamba_unet_package())
    keys = _vmamba_file(tmp_path / "vmamba.pth", original.mamba_unet.state_dict())
    _zeroed(original.mamba_unet)
    config = types.SimpleNamespace(MODEL=types.SimpleNamespace(PRETRAIN_CKPT=str(tmp_path / "vmamba.pth")))
    original.load_from(config)
    assert "start load pretrained modle of swin encoder" in capsys.readouterr().out
    assert _mapping(original.mamba_unet.state_dict(), keys) == FROZEN_LOAD_FROM
