"""timm-style checks of every registered model: shapes, gradients, determinism, round trips,
scan backends, input-size handling, checkpointing, autocast. Big variants run at 32-64 px."""

from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch

from vmunet.models import create_model, list_models
from vmunet.models.registry import model_spec
from vmunet.ops import cuda_available

SMALL = {"vmunet_test", "ultralight_vmunet"}  # cheap enough for every check in the default run


def _seeded(name, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_classes", 2)
    return create_model(name, **kw)


def all_models(slow_big: bool = False):
    """list_models(), with the big variants marked slow when ``slow_big`` (keeps the default run
    within its time budget; ``make test-slow`` runs them all)."""
    return [pytest.param(n, marks=pytest.mark.slow) if slow_big and n not in SMALL else n
            for n in list_models()]


@pytest.mark.parametrize("name", all_models())
def test_forward_shapes_and_finite(name):
    cases = [(9, 1, 32, 64)]
    if name in SMALL:
        cases += [(1, 3, 64, 64), (4, 3, 128, 32), (2, 1, 32, 32)]
    for num_classes, in_chans, H, W in cases:
        model = _seeded(name, num_classes=num_classes, in_chans=in_chans).eval()
        with torch.no_grad():
            y = model(torch.randn(2, in_chans, H, W))
        assert y.shape == (2, num_classes, H, W)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("name", all_models(slow_big=True))
def test_backward_reaches_every_parameter(name):
    # drop_path 0: a dropped residual branch would legitimately get no gradient (UltraLight
    # VM-UNet has no drop path, hence no such option)
    no_drop = {"drop_path_rate": 0.0} if "drop_path_rate" in inspect.signature(model_spec(name).builder).parameters else {}
    model = _seeded(name, **no_drop).train()
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", all_models(slow_big=True))
def test_eval_is_deterministic_and_state_dict_round_trips(name, tmp_path):
    model = _seeded(name, seed=1).eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    assert torch.equal(y1, y2)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = _seeded(name, seed=2).eval()
    with torch.no_grad():
        assert not torch.equal(other(x), y1)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(other(x), y1)


@pytest.mark.parametrize("name", all_models(slow_big=True))
def test_scan_backends_agree(name):
    # numba installed (found without importing our kernel) -> the numba backend must work
    backends = (["ref", "torch"] + (["numba"] if importlib.util.find_spec("numba") else [])
                + (["cuda"] if cuda_available() else []))
    model = _seeded(name, seed=3, scan_backend="ref").eval()
    x = torch.randn(1, 3, 32, 32)
    outs = {}
    with torch.no_grad():
        for b in backends:
            model.set_scan_backend(b)
            dev = "cuda" if b == "cuda" else "cpu"
            outs[b] = model.to(dev)(x.to(dev)).cpu()
    ref = outs["ref"]
    for b, y in outs.items():
        assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), b


def test_size_not_multiple_of_32_is_a_clear_error():
    model = _seeded("vmunet_test").eval()
    with pytest.raises(ValueError, match=r"input height and width must be multiples of 32, got 40x64; "
                                         r"resize the input or build the model with pad_to_multiple=True"):
        model(torch.randn(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 3, H, W\), got \(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))


def test_pad_to_multiple_pads_with_zeros_and_crops_back():
    model = _seeded("vmunet_test", pad_to_multiple=True).eval()
    x = torch.randn(2, 3, 40, 50)
    with torch.no_grad():
        y = model(x)
        padded = torch.zeros(2, 3, 64, 64)
        padded[..., :40, :50] = x
        expected = model(padded)[..., :40, :50]
    assert y.shape == (2, 2, 40, 50)
    assert torch.allclose(y, expected, atol=1e-6)


def test_drop_path_schedule_is_the_original():
    model = create_model("vmunet", num_classes=1)
    enc = [b.drop_path.drop_prob for stage in model.layers for b in stage.blocks]
    dec = [b.drop_path.drop_prob for stage in model.layers_up for b in stage.blocks]
    assert enc == pytest.approx(torch.linspace(0, 0.2, 8).tolist())
    assert dec == pytest.approx(torch.linspace(0, 0.2, 7).tolist()[::-1])


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for use_checkpoint in (False, True):
        model = _seeded("vmunet_test", seed=4, use_checkpoint=use_checkpoint, drop_path_rate=0.3).train()
        torch.manual_seed(5)  # same drop-path draws; checkpoint replays the RNG state
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7), n


def test_autocast_bf16_on_cpu():
    model = _seeded("vmunet_test", seed=6).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = model(x)
    assert y16.shape == y32.shape and torch.isfinite(y16).all()
    assert y16.dtype == torch.bfloat16  # the 1x1 head runs in bf16 under autocast
    assert (y16.float() - y32).abs().max() < 0.1 * y32.abs().max()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("directions", [("h", "v"), ("h", "v", "h_flip", "v_flip", "d", "d_flip", "ad", "ad_flip")])
def test_other_scan_direction_sets(directions):
    model = _seeded("vmunet_test", directions=directions).eval()
    ss2d = model.layers[0].blocks[0].self_attention
    K = len(directions)
    assert ss2d.x_proj_weight.shape[0] == K and ss2d.Ds.shape == (K * ss2d.d_inner,)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_autocast_fp16_on_gpu():
    model = _seeded("vmunet_test", seed=7, scan_backend="torch").cuda().eval()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        y32 = model(x)
        with torch.autocast("cuda", dtype=torch.float16):
            y16 = model(x)
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    assert (y16.float() - y32).abs().max() < 0.05 * y32.abs().max()
