"""UltraLight VM-UNet (``ultralight_vmunet``): the Mamba block against a plain loop written here
(forward and backward, float32 and float64), the PVM layer against the original's four separate
calls, the original's initialisation rules, options and their errors, and its checkpoint files.
The whole model against the original code: tests/parity/test_original_ultralight_vmunet.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vmunet.layers import Mamba, PVMLayer
from vmunet.models import count_parameters, create_model
from vmunet.models.weights import load_weights


def _mamba_loop(m: Mamba, u: torch.Tensor) -> torch.Tensor:
    """mamba-ssm's Mamba forward written out step by step: causal conv as a sum over taps, the
    recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, gated by SiLU(z)."""
    Bsz, L, _ = u.shape
    di, N, R, K = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    xz = u @ m.in_proj.weight.t()
    x, z = xz[..., :di], xz[..., di:]                                   # (B, L, di)
    w = m.conv1d.weight[:, 0, :]                                        # (di, K): tap K-1 is the current step
    conv = []
    for t in range(L):
        acc = m.conv1d.bias.expand(Bsz, di)
        for k in range(K):
            s = t - (K - 1 - k)
            if s >= 0:
                acc = acc + w[:, k] * x[:, s]
        conv.append(acc)
    x = F.silu(torch.stack(conv, dim=1))
    proj = x @ m.x_proj.weight.t()
    dt = F.softplus(proj[..., :R] @ m.dt_proj.weight.t() + m.dt_proj.bias)
    Bm, Cm = proj[..., R:R + N], proj[..., R + N:]
    A = -torch.exp(m.A_log)                                             # (di, N)
    h = torch.zeros(Bsz, di, N, dtype=u.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + m.D * x[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return y @ m.out_proj.weight.t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_mamba_block_equals_the_plain_loop_forward_and_backward(dtype):
    torch.manual_seed(0)
    m = Mamba(4, d_state=3, d_conv=4, expand=2, scan_backend="torch").to(dtype)
    with torch.no_grad():  # a dt bias and D away from their init, so they matter
        m.dt_proj.bias.uniform_(-1, 1)
        m.D.uniform_(0.5, 1.5)
        m.conv1d.bias.uniform_(-0.5, 0.5)
    u = torch.randn(2, 9, 4, dtype=dtype, requires_grad=True)
    out = m(u)
    ref_u = u.detach().clone().requires_grad_(True)
    ref = _mamba_loop(m, ref_u)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    g = torch.randn_like(out)
    params = list(m.parameters())
    grads = torch.autograd.grad(out, [u, *params], g)
    ref_grads = torch.autograd.grad(ref, [ref_u, *params], g)
    for (name, _), a, b in zip([("input", None), *m.named_parameters()], grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **tol, msg=lambda msg, name=name: f"{name}: {msg}")


def test_mamba_block_is_causal():
    torch.manual_seed(1)
    m = Mamba(4, d_state=2, scan_backend="torch").eval()
    u = torch.randn(1, 10, 4)
    v = u.clone()
    v[:, 6:] += torch.randn(1, 4, 4)
    with torch.no_grad():
        a, b = m(u), m(v)
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:])


def test_pvm_layer_equals_the_originals_four_calls():
    """The original's forward: chunk the normed tokens into 4, the same Mamba on each, cat."""
    torch.manual_seed(2)
    layer = PVMLayer(12, 8, d_state=4, scan_backend="torch").double().eval()
    with torch.no_grad():
        layer.skip_scale.fill_(0.7)
    x = torch.randn(2, 12, 5, 3, dtype=torch.float64)
    B, C, H, W = x.shape
    tokens = layer.norm(x.reshape(B, C, H * W).transpose(-1, -2))
    parts = [layer.mamba(p) + layer.skip_scale * p for p in torch.chunk(tokens, 4, dim=2)]
    expected = layer.proj(layer.norm(torch.cat(parts, dim=2))).transpose(-1, -2).reshape(B, 8, H, W)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_paper_model_size_and_init_are_the_originals_rules():
    torch.manual_seed(0)
    model = create_model("ultralight_vmunet", num_classes=1, in_chans=3)
    assert count_parameters(model) == 49_457  # the original's count (tests/parity), "0.049M" in its README
    mambas = [m for m in model.modules() if isinstance(m, Mamba)]
    assert len(mambas) == 6 and [m.d_model for m in mambas] == [6, 8, 12, 16, 12, 8]
    for m in mambas:
        # _init_weights reaches the Mamba's Linears: dt_proj bias 0 (not Mamba's dt init)
        assert torch.equal(m.dt_proj.bias, torch.zeros_like(m.dt_proj.bias))
        assert torch.equal(m.A_log, torch.log(torch.arange(1, 17.0)).repeat(m.d_inner, 1))
        assert torch.equal(m.D, torch.ones(m.d_inner))
    linear = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(linear.std().item() - 0.02) < 0.002
    # convolutions: normal with std sqrt(2 / fan_out) (Conv2d, bias 0), sqrt(2 / (k * out)) (Conv1d);
    # all weights divided by their std pooled: unit std
    conv2d = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    z2 = torch.cat([m.weight.flatten() / math.sqrt(2 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups))
                    for m in conv2d])
    assert abs(z2.std().item() - 1) < 0.05 and all(not m.bias.any() for m in conv2d)
    conv1d = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    z1 = torch.cat([m.weight.flatten() / math.sqrt(2 / (m.kernel_size[0] * m.out_channels)) for m in conv1d])
    assert len(conv1d) == 7 and abs(z1.std().item() - 1) < 0.15


def test_options_and_their_errors():
    model = create_model("ultralight_vmunet", num_classes=2, in_chans=1, dims=4, split_att="conv", bridge=False,
                         d_state=4)
    assert [m.out_channels for m in (model.encoder1[0], model.encoder2[0], model.encoder3[0])] == [4, 8, 12]
    assert model.encoder6[0].output_dim == 32 and model.encoder1[0].in_channels == 1
    assert not any(k.startswith("scab.") for k in model.state_dict())
    conv = create_model("ultralight_vmunet", num_classes=1, dims=4, split_att="conv")
    assert isinstance(conv.scab.catt.att1, torch.nn.Conv1d)
    with pytest.raises(ValueError, match=r"UltraLightVMUNet: every dims entry must be a positive multiple of 4"):
        create_model("ultralight_vmunet", num_classes=1, dims=[8, 16, 24, 32, 48, 66])
    with pytest.raises(ValueError, match=r"UltraLightVMUNet: dims must have 6 entries"):
        create_model("ultralight_vmunet", num_classes=1, dims=[8, 16, 24, 32])
    with pytest.raises(ValueError, match=r"UltraLightVMUNet: split_att must be 'fc' or 'conv', got 'mlp'"):
        create_model("ultralight_vmunet", num_classes=1, split_att="mlp")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['directions'\]"):
        create_model("ultralight_vmunet", num_classes=1, directions=["h"])
    with pytest.raises(ValueError, match=r"input height and width must be multiples of 32, got 48x32"):
        model(torch.randn(1, 1, 48, 32))


def test_latest_pth_of_the_original_training_script_loads(tmp_path):
    """``train.py``'s ``latest.pth`` (state dict under ``model_state_dict`` with optimizer and
    scheduler states) and ``best.pth`` (the bare state dict) load strictly by name."""
    torch.manual_seed(3)
    trained = create_model("ultralight_vmunet", num_classes=1, dims=4, scan_backend="torch").eval()
    opt = torch.optim.AdamW(trained.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=1e-5)
    torch.save({"epoch": 3, "min_loss": 0.41, "min_epoch": 2, "loss": 0.43, "model_state_dict": trained.state_dict(),
                "optimizer_state_dict": opt.state_dict(), "scheduler_state_dict": sched.state_dict()},
               tmp_path / "latest.pth")
    torch.save(trained.state_dict(), tmp_path / "best.pth")
    x = torch.randn(1, 3, 32, 32)
    for name in ("latest.pth", "best.pth"):
        model = create_model("ultralight_vmunet", num_classes=1, dims=4, scan_backend="torch").eval()
        report = load_weights(model, tmp_path / name)
        assert report.layout == "ultralight_vmunet" and not report.missing and not report.skipped
        with torch.no_grad():
            assert torch.equal(model(x), trained(x))
    other = create_model("ultralight_vmunet", num_classes=1, dims=4, bridge=False)
    with pytest.raises(ValueError, match=r"cannot load ultralight_vmunet weights .* unexpected key scab\."):
        load_weights(other, tmp_path / "best.pth")
