"""Our UltraLight VM-UNet (``ultralight_vmunet``) against the original executed
(wurenkai/UltraLight-VM-UNet ``models/UltraLight_VM_UNet.py``, commit ``d7648e4``; its ``Mamba``
mamba-ssm 2.3.2.post1's own, slow path, ``selective_scan_ref`` as the scan): state-dict keys,
order and shapes, parameter count, the original's state dicts loading by name, logits in float32
and float64 at a small and the paper size, gray (1-channel) input as the original takes it
(natively, ``input_channels=1``), and our Mamba block against mamba-ssm's.

Without ``third_party/`` the tests that run the original skip, and their twins check the outputs
that ``freeze_ultralight_vmunet.py`` froze from it into ``frozen/ultralight_vmunet.json``
(torch 2.13 CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from freeze_swin_umamba import SAMPLE, key_lines, shapes
from freeze_ultralight_vmunet import (
    FROZEN_FILE,
    PAPER_CLASSES,
    PAPER_DIMS,
    PAPER_IN,
    PAPER_INPUT,
    SMALL_CLASSES,
    SMALL_DIMS,
    SMALL_IN,
    SMALL_INPUT,
    build_original,
    original_logits,
    paper_record,
    small_record,
)
from original_code import (
    ULTRALIGHT_COMMIT,
    deterministic_input,
    deterministic_tensors,
    mamba_ssm_mamba,
    original_ultralight_module,
    ultralight_file,
)

from vmunet.layers import Mamba
from vmunet.models import count_parameters, create_model
from vmunet.models.weights import load_weights

FROZEN = json.loads(FROZEN_FILE.read_text())
# Tolerances, for logits up to 0.28 (small) and 0.41 (paper) in size: in float32 ours and the original
# differ by up to 2.9e-7 (small) and 1.0e-7 (paper), in float64 by 4e-16; reading every Mamba's
# tokens in reverse order moves them by 9.5e-3 and 1.6e-3. Measured 2026-11-26, torch 2.13 CPU,
# the `torch` scan backend.
ATOL32 = 1e-5
RTOL64 = 1e-10


def _ours(small: bool, dtype: torch.dtype = torch.float32, **kw) -> torch.nn.Module:
    if small:
        kw = dict(num_classes=SMALL_CLASSES, in_chans=SMALL_IN, dims=SMALL_DIMS, **kw)
    else:
        kw = dict(num_classes=PAPER_CLASSES, in_chans=PAPER_IN, dims=PAPER_DIMS, **kw)
    return create_model("ultralight_vmunet", scan_backend="torch", **kw).to(dtype).eval()


def _our_logits(small: bool, dtype: torch.dtype, **kw) -> torch.Tensor:
    """Ours with the frozen run's weights: ``deterministic_tensors`` of our keys and shapes (the
    original's: tested above; its values depend on key and shape alone)."""
    model = _ours(small, dtype, **kw)
    report = load_weights(model, deterministic_tensors(shapes(model)))
    assert report.layout == "ultralight_vmunet" and not report.missing and not report.skipped
    with torch.no_grad():
        return model(deterministic_input(SMALL_INPUT if small else PAPER_INPUT).to(dtype))


def _assert_summary(logits: torch.Tensor, frozen: dict, dtype: torch.dtype) -> None:
    tol = dict(rtol=0, atol=ATOL32) if dtype == torch.float32 else dict(rtol=RTOL64, atol=RTOL64)
    torch.testing.assert_close(logits[SAMPLE], torch.tensor(frozen["sample"], dtype=dtype), **tol)
    sum_tol = dict(rtol=1e-5, atol=1e-3) if dtype == torch.float32 else dict(rtol=RTOL64, atol=0)
    torch.testing.assert_close(logits.sum((0, 2, 3)), torch.tensor(frozen["class_sums"], dtype=dtype), **sum_tol)
    torch.testing.assert_close(logits.square().sum((0, 2, 3)),
                               torch.tensor(frozen["class_sums_of_squares"], dtype=dtype), **sum_tol)


# ----- against the frozen outputs (always run) -------------------------------------------------


def test_frozen_file_is_from_the_pinned_commit():
    assert FROZEN["commit"] == ULTRALIGHT_COMMIT


@pytest.mark.parametrize("small", [True, False], ids=["small", "paper"])
def test_keys_order_and_shapes_are_the_frozen_originals(small):
    # the same order too: the original's state dict and ours list the tensors alike
    assert key_lines(shapes(_ours(small))) == FROZEN["small" if small else "paper"]["keys"]


def test_paper_parameter_count_is_the_frozen_originals():
    assert FROZEN["paper"]["parameters"] == 49_457  # docs/models.md; the README's "0.049M"
    assert count_parameters(_ours(small=False)) == FROZEN["paper"]["parameters"]


@pytest.mark.parametrize("small", [True, False], ids=["small_gray", "paper_256"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_logits_equal_the_frozen_original_output(small, dtype):
    key = "float32" if dtype == torch.float32 else "float64"
    _assert_summary(_our_logits(small, dtype), FROZEN["small" if small else "paper"][key], dtype)


def test_conv_split_attention_logits_equal_the_frozen_original_output():
    _assert_summary(_our_logits(True, torch.float64, split_att="conv"), FROZEN["small"]["conv_float64"],
                    torch.float64)


# ----- against the original code (skip without third_party/) -----------------------------------


def test_frozen_small_record_is_what_the_original_gives():
    original_ultralight_module()  # skips without third_party/
    live, frozen = small_record(), FROZEN["small"]
    assert live["keys"] == frozen["keys"]
    for key, dtype in (("float32", torch.float32), ("float64", torch.float64), ("conv_float64", torch.float64)):
        for part in ("sample", "class_sums", "class_sums_of_squares"):
            tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(torch.tensor(live[key][part], dtype=dtype),
                                       torch.tensor(frozen[key][part], dtype=dtype), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_small_gray_logits_equal_the_original(dtype):
    ref = original_logits(small=True, float64=dtype == torch.float64)
    logits = _our_logits(True, dtype)
    assert logits.shape == ref.shape == (1, SMALL_CLASSES, *SMALL_INPUT[2:])
    if dtype == torch.float32:
        torch.testing.assert_close(logits, ref, rtol=0, atol=ATOL32)
    else:
        torch.testing.assert_close(logits, ref, rtol=RTOL64, atol=RTOL64 * ref.abs().max().item())


def test_original_state_dict_with_its_own_init_loads_and_gives_its_output():
    """The original's own initialisation (its ``_init_weights`` over mamba-ssm's: ``dt_proj`` bias
    0, as ours) and state dict; its unedited forward returns ``sigmoid(logits)``."""
    torch.manual_seed(3)
    original = build_original(original_ultralight_module(logits=False), small=False)
    assert all(not m.dt_proj.bias.any() for m in original.modules() if hasattr(m, "dt_proj"))
    model = _ours(small=False)
    report = load_weights(model, original.state_dict())
    assert report.layout == "ultralight_vmunet" and not report.missing and not report.skipped
    x = torch.rand(2, PAPER_IN, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model(x)), original(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_mamba_block_equals_mamba_ssm_forward_and_backward(dtype):
    torch.manual_seed(5)
    theirs = mamba_ssm_mamba(float64=dtype == torch.float64)(d_model=6, d_state=16, d_conv=4, expand=2).to(dtype)
    ours = Mamba(6, d_state=16, d_conv=4, expand=2, scan_backend="torch").to(dtype)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    u = torch.randn(3, 20, 6, dtype=dtype)
    u1, u2 = u.clone().requires_grad_(True), u.clone().requires_grad_(True)
    out, ref = ours(u1), theirs(u2)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(u1.grad, u2.grad, **tol)
    theirs_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_grads[name].grad, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.slow
def test_frozen_paper_record_is_what_the_original_gives():
    original_ultralight_module()
    live, frozen = paper_record(), FROZEN["paper"]
    assert live["keys"] == frozen["keys"] and live["parameters"] == frozen["parameters"]
    for key, tol in (("float32", 1e-5), ("float64", 1e-12)):
        for part in ("sample", "class_sums", "class_sums_of_squares"):
            torch.testing.assert_close(torch.tensor(live[key][part]), torch.tensor(frozen[key][part]),
                                       rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_paper_logits_equal_the_original_at_256(dtype):
    ref = original_logits(small=False, float64=dtype == torch.float64)
    logits = _our_logits(False, dtype)
    assert logits.shape == ref.shape == (1, PAPER_CLASSES, 256, 256)
    if dtype == torch.float32:
        torch.testing.assert_close(logits, ref, rtol=0, atol=ATOL32)
    else:
        torch.testing.assert_close(logits, ref, rtol=RTOL64, atol=RTOL64 * ref.abs().max().item())


# ----- the training settings of experiments/isic17_ultralight.yaml --------------------------------

# configs/config_setting.py at ULTRALIGHT_COMMIT (read by hand; checked against the file below)
FROZEN_CONFIG = {"network": "UltraLight_VM_UNet", "num_classes": 1, "input_size_h": 256, "input_size_w": 256,
                 "input_channels": 3, "seed": 42, "batch_size": 8, "epochs": 250, "threshold": 0.5, "amp": False,
                 "opt": "AdamW", "lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01,
                 "amsgrad": False, "sch": "CosineAnnealingLR", "T_max": 50, "eta_min": 1e-05,
                 "model_config": {"num_classes": 1, "input_channels": 3, "c_list": [8, 16, 24, 32, 48, 64],
                                  "split_att": "fc", "bridge": True}}


def test_isic17_recipe_has_the_frozen_original_settings():
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "experiments" / "isic17_ultralight.yaml").read_text())
    model, data = cfg["model"], cfg["data"]["init_args"]
    ours = {"seed": cfg["seed_everything"], "epochs": cfg["trainer"]["max_epochs"], "batch_size": data["batch_size"],
            "input_size_h": data["image_size"], "input_size_w": data["image_size"], "lr": model["lr"],
            "betas": tuple(model["betas"]), "weight_decay": model["weight_decay"], "T_max": model["t_max"],
            "eta_min": model["eta_min"], "threshold": model["threshold"],
            "sch": {"cosine": "CosineAnnealingLR"}[model["scheduler"]], "amp": cfg["trainer"]["precision"] != "32-true"}
    assert ours == {k: FROZEN_CONFIG[k] for k in ours}
    kw = model["model_kwargs"]
    assert {"c_list": kw["dims"], "split_att": kw["split_att"], "bridge": kw["bridge"]} == \
        {k: FROZEN_CONFIG["model_config"][k] for k in ("c_list", "split_att", "bridge")}
    assert model["model_name"] == "ultralight_vmunet" and model["weights"] is None
    # BceDiceLoss(wb=1, wd=1): per-sample Dice with smooth 1 (utils.py, as VM-UNet's)
    assert (model["lambda_ce"], model["lambda_dice"], model["batch_dice"], model["dice_smooth_nr"],
            model["dice_smooth_dr"]) == (1.0, 1.0, False, 1.0, 1.0)
    # torch.optim.AdamW's defaults (the module passes lr, betas, weight_decay): eps 1e-8, amsgrad False
    adamw = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    assert (adamw.defaults["eps"], adamw.defaults["amsgrad"]) == (FROZEN_CONFIG["eps"], FROZEN_CONFIG["amsgrad"])
    assert cfg["checkpoint"]["monitor"] == "val/loss" and cfg["checkpoint"]["mode"] == "min"  # train.py: min_loss


def test_original_config_file_gives_the_frozen_settings():
    from test_original_protocols import _config_values

    path = ultralight_file().parents[1] / "configs" / "config_setting.py"
    values = _config_values(path)
    assert {k: values[k] for k in FROZEN_CONFIG} == FROZEN_CONFIG
