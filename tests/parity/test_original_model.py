"""Our VM-UNet against the original model code executed (JCruan519/VM-UNet ``models/vmunet``, with
mamba-ssm's ``selective_scan_ref`` as its scan): logits (which checks the four VMamba v0 scan
directions and their merge), key names, shapes and parameter count, 1-channel input, and loading
a VMamba v0 ImageNet checkpoint the way the original ``VMUNet.load_from`` does.

Frozen outputs: produced by the original code (VM-UNet commit ``43c495b``, mamba-ssm 2.3.2.post1,
torch 2.13 CPU, float32) with the inputs and weights of ``original_code.deterministic_*``; when
``third_party/`` is present the tests recompute them from the original and check both.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from original_code import deterministic_input, deterministic_tensors, original_vmunet_package

from vmunet.models import create_model
from vmunet.models.weights import load_weights

TINY = dict(depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1], dims=[16, 32, 64, 128],
            dims_decoder=[128, 64, 32, 16], d_state=4)  # = our "vmunet_test"
PAPER = dict(depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1], drop_path_rate=0.2)  # config_setting*.py

# The original VSSM(**TINY, in_chans=3, num_classes=2), deterministic_tensors weights, eval mode,
# input deterministic_input((1, 3, 32, 64)): logits[0, c, 1::7, 3::13] and the sum of each class map.
FROZEN_TINY_LOGITS = [
    [
        [0.634614, -0.106342, -0.148281, 0.569331, 0.652744],
        [0.649072, -0.114531, 0.415519, 0.591051, 0.158417],
        [0.593373, -0.046747, 0.653574, -0.156413, 0.573473],
        [0.594535, 0.012385, 0.095814, 0.401577, 0.182596],
        [0.646155, -0.097648, -0.051884, -0.141853, 0.617930],
    ],
    [
        [-1.428684, 1.471442, 0.602646, -1.518272, -1.331848],
        [-1.357639, 1.466860, -1.381896, -1.508089, 1.141261],
        [-1.506190, 1.461684, -1.319243, 1.397175, -1.516999],
        [-1.504901, 1.401799, 1.268561, -1.355639, -0.831233],
        [-1.377559, 1.474264, 1.464364, 1.434035, -1.472378],
    ],
]
FROZEN_TINY_SUMS = [474.8372, -58.4486]
# The original VMUNet(num_classes=1, input_channels=3, **PAPER).vmunet.state_dict(): tensor count,
# parameter count, and sha256 of its sorted "key:shape" lines.
FROZEN_PAPER_TENSORS = 222
FROZEN_PAPER_PARAMETERS = 27_427_561
FROZEN_PAPER_KEYS_SHA256 = "29b76fad9a936a18e09420236f87f83d1a74260af81cd8a287a6b98c7131642f"
# The original VMUNet.load_from() on the VMamba-S v0 checkpoint of _vmamba_small_checkpoint: how many
# model tensors it sets, and sha256 of the sorted "model key<-checkpoint key" lines.
FROZEN_LOAD_FROM_COUNT = 208
FROZEN_LOAD_FROM_SHA256 = "ee6bf5e2efd1bba0969dce1b86d933a172136645983e487d279b10df41dbbe83"


def _keys_sha256(state_dict) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state_dict.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.fixture(scope="module")
def original_paper_model():
    """The original paper model, built once (2-3 s) with the original's own initialisation."""
    package = original_vmunet_package()
    torch.manual_seed(0)
    return package.vmunet.VMUNet(num_classes=1, input_channels=3, **PAPER).eval()


@pytest.fixture(scope="module")
def ours_paper():
    """Our paper model (1 class, 3 channels), built once; tests that change it take a copy."""
    return create_model("vmunet", num_classes=1, in_chans=3, scan_backend="torch").eval()


def _tiny_ours(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = create_model("vmunet_test", num_classes=2, in_chans=3, scan_backend="torch").eval()
    report = load_weights(model, {"vmunet." + k: v for k, v in weights.items()})  # the original's best.pth layout
    assert report.layout == "vmunet_original" and len(report.loaded) == len(weights) and not report.missing
    return model


def _tiny_case():
    shapes = {k: tuple(v.shape) for k, v in create_model("vmunet_test", num_classes=2, in_chans=3)
              .state_dict().items()}
    x = deterministic_input((1, 3, 32, 64))  # H != W: a transposed direction shows
    return shapes, deterministic_tensors(shapes), x


def test_tiny_model_logits_equal_the_frozen_original_logits():
    """A wrong scan order, merge, direction-to-weights pairing or transposition changes these by
    8e-2 to 1.5e-1, the sums by 1.8 to 6 (measured by permuting the four directions); float32
    noise is below 1e-5 and 1e-4."""
    _, weights, x = _tiny_case()
    with torch.no_grad():
        ours = _tiny_ours(weights)(x)
    torch.testing.assert_close(ours[0, :, 1::7, 3::13], torch.tensor(FROZEN_TINY_LOGITS), rtol=0, atol=2e-4)
    torch.testing.assert_close(ours.sum((0, 2, 3)), torch.tensor(FROZEN_TINY_SUMS), rtol=0, atol=5e-3)


def test_tiny_model_logits_equal_the_original_vssm():
    package = original_vmunet_package()  # skips without third_party/
    ours_shapes, weights, x = _tiny_case()
    with torch.no_grad():
        ours = _tiny_ours(weights)(x)
    original = package.vmamba.VSSM(in_chans=3, num_classes=2, **TINY).eval()
    assert {k: tuple(v.shape) for k, v in original.state_dict().items()} == ours_shapes
    original.load_state_dict(weights)
    with torch.no_grad():
        ref = original(x)
    torch.testing.assert_close(ref[0, :, 1::7, 3::13], torch.tensor(FROZEN_TINY_LOGITS), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


def test_tiny_gray_input_equals_the_original_vmunet_forward():
    """1-channel input: the original VMUNet.forward (repeat to 3 channels, VSSM, no sigmoid for
    2 classes) around the tiny VSSM, against ours with in_chans=1 and the RGB kernel summed."""
    package = original_vmunet_package()
    _, weights, x = _tiny_case()
    original = package.vmamba.VSSM(in_chans=3, num_classes=2, **TINY).eval()
    original.load_state_dict(weights)
    wrapper = package.vmunet.VMUNet.__new__(package.vmunet.VMUNet)  # its __init__ builds the paper size
    torch.nn.Module.__init__(wrapper)
    wrapper.vmunet, wrapper.num_classes = original, 2
    ours = create_model("vmunet_test", num_classes=2, in_chans=1, scan_backend="torch").eval()
    report = load_weights(ours, {"vmunet." + k: v for k, v in weights.items()})
    assert report.adapted == [("patch_embed.proj.weight", "summed 3 input channels into 1")]
    gray = x[:, :1]
    with torch.no_grad():
        torch.testing.assert_close(ours(gray), wrapper.eval()(gray), rtol=0, atol=1e-4)


def test_paper_model_keys_shapes_and_parameter_count_are_the_originals(ours_paper):
    ours = ours_paper.state_dict()
    assert len(ours) == FROZEN_PAPER_TENSORS
    assert sum(v.numel() for v in ours.values()) == FROZEN_PAPER_PARAMETERS  # docs/models.md: 27,427,561
    assert _keys_sha256(ours) == FROZEN_PAPER_KEYS_SHA256


def test_paper_model_keys_frozen_from_the_original(original_paper_model):
    original = original_paper_model.vmunet.state_dict()
    assert len(original) == FROZEN_PAPER_TENSORS
    assert sum(p.numel() for p in original_paper_model.parameters()) == FROZEN_PAPER_PARAMETERS
    assert _keys_sha256(original) == FROZEN_PAPER_KEYS_SHA256


@pytest.mark.slow  # ~8 s: the paper-size original forward with mamba-ssm's Python-loop scan
def test_paper_model_gray_input_equals_the_originals_repeat(original_paper_model):
    """Synapse: the original repeats a CT slice to 3 channels; ours takes 1 channel with the
    patch-embedding kernel summed, loading the original's state dict (best.pth layout)."""
    ours = create_model("vmunet", num_classes=1, in_chans=1, scan_backend="torch").eval()
    report = load_weights(ours, original_paper_model.state_dict())
    assert report.adapted == [("patch_embed.proj.weight", "summed 3 input channels into 1")]
    x = deterministic_input((1, 1, 32, 32))
    with torch.no_grad():
        probs = original_paper_model(x)  # the original forward: repeat, VSSM, sigmoid (1 class)
        logits_ref = original_paper_model.vmunet(x.repeat(1, 3, 1, 1))
        logits = ours(x)
    torch.testing.assert_close(logits, logits_ref, rtol=0, atol=1e-4 * logits_ref.abs().max().item())
    torch.testing.assert_close(torch.sigmoid(logits), probs, rtol=0, atol=1e-5)


def _vmamba_small_checkpoint(path, state_dict) -> None:
    """A VMamba-S v0 file as VMamba's save_checkpoint_ema writes it (``model`` and ``model_ema``),
    keys and shapes from the VM-UNet encoder of ``state_dict`` (stage 3 has 27 blocks in
    VMamba-S) plus the ImageNet ``norm``/``head``. Every tensor holds one value, its tag: +i under
    ``model``, -i under ``model_ema`` (stored as 1-element expansions, so the file is small)."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith(("patch_embed.", "layers."))}
    block = {k.split("blocks.0.", 1)[1]: s for k, s in shapes.items() if k.startswith("layers.2.blocks.0.")}
    for j in range(2, 27):
        shapes.update({f"layers.2.blocks.{j}.{name}": s for name, s in block.items()})
    shapes.update({"norm.weight": (768,), "norm.bias": (768,), "head.weight": (1000, 768), "head.bias": (1000,)})
    keys = sorted(shapes)

    def tagged(sign):
        return {k: torch.full((1,), sign * (i + 1.0)).expand(shapes[k]) for i, k in enumerate(keys)}

    torch.save({"model": tagged(1), "model_ema": tagged(-1), "epoch": 237}, path)
    return keys


def _sources(state_dict, keys) -> dict[str, str]:
    """Model key -> the checkpoint key whose tag it holds ("init" for 0: not loaded)."""
    out = {}
    for k, v in state_dict.items():
        tag = int(v.max().item())
        assert tag == int(v.min().item()), k  # one tag per tensor: it came whole from one source
        out[k] = "init" if tag == 0 else ("ema:" if tag < 0 else "") + keys[abs(tag) - 1]
    return out


def _mapping_digest(sources: dict[str, str]) -> tuple[int, str]:
    loaded = sorted(f"{k}<-{s}" for k, s in sources.items() if s != "init")
    return len(loaded), hashlib.sha256("\n".join(loaded).encode()).hexdigest()


def test_vmamba_v0_checkpoint_loads_like_the_original_load_from(tmp_path, ours_paper):
    ours = copy.deepcopy(ours_paper)
    path = tmp_path / "vmamba_small_e238_ema.pth"
    keys = _vmamba_small_checkpoint(path, ours.state_dict())
    with torch.no_grad():
        for v in ours.state_dict().values():
            v.zero_()
    load_weights(ours, path, entry="model")  # the original reads ['model']
    sources = _sources(ours.state_dict(), keys)
    assert not any(s.startswith("ema:") for s in sources.values())
    assert _mapping_digest(sources) == (FROZEN_LOAD_FROM_COUNT, FROZEN_LOAD_FROM_SHA256)


def test_vmamba_v0_mapping_frozen_from_the_original_load_from(tmp_path, original_paper_model, capsys):
    original = copy.deepcopy(original_paper_model)
    path = tmp_path / "vmamba_small_e238_ema.pth"
    keys = _vmamba_small_checkpoint(path, original.vmunet.state_dict())
    with torch.no_grad():
        for v in original.vmunet.state_dict().values():
            v.zero_()
    original.load_ckpt_path = str(path)
    original.load_from()
    assert "decoder loaded finished!" in capsys.readouterr().out
    sources = _sources(original.vmunet.state_dict(), keys)
    assert _mapping_digest(sources) == (FROZEN_LOAD_FROM_COUNT, FROZEN_LOAD_FROM_SHA256)
