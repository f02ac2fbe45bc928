"""Registry: names, paper parameter count, overrides and their errors."""

from __future__ import annotations

import pytest
import torch

from vmunet.models import count_parameters, create_model, list_models


def test_list_models_has_the_contract_names():
    assert {"vmunet", "vmunet_deep", "vmunet_test"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_paper_config_parameter_count_matches_original():
    # the original VM-UNet code (depths [2,2,2,2], decoder [2,2,2,1]) gives exactly this count
    model = create_model("vmunet", num_classes=1, in_chans=3)
    assert count_parameters(model) == 27_427_561
    assert len(model.state_dict()) == 222


def test_deep_config_has_more_blocks():
    model = create_model("vmunet_deep", num_classes=1, in_chans=3)
    assert len(model.layers[2].blocks) == 9 and len(model.layers_up[1].blocks) == 9


def test_overrides_change_the_architecture():
    model = create_model("vmunet_test", num_classes=3, in_chans=1, depths=[2, 1, 1, 1],
                         dims=[8, 16, 32, 64], d_state=2, directions=("h", "v"))
    assert len(model.layers[0].blocks) == 2
    ss2d = model.layers[0].blocks[0].self_attention
    assert ss2d.x_proj_weight.shape == (2, 1 + 2 * 2, 16)
    assert ss2d.A_logs.shape == (2 * 16, 2)
    assert model.model_kwargs == {"num_classes": 3, "in_chans": 1, "depths": [2, 1, 1, 1],
                                  "dims": [8, 16, 32, 64], "d_state": 2, "directions": ("h", "v")}
    rebuilt = create_model(model.model_name, **model.model_kwargs)
    assert [k for k in rebuilt.state_dict()] == [k for k in model.state_dict()]


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; available: vmunet, vmunet_deep"):
        create_model("nope", num_classes=1)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['depth'\]"):
        create_model("vmunet_test", num_classes=1, depth=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="dims must have 4 entries"):
        create_model("vmunet_test", num_classes=1, dims=[8, 16])
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        create_model("vmunet_test", num_classes=0)


def test_init_matches_vmamba_rules():
    torch.manual_seed(0)
    model = create_model("vmunet", num_classes=1)
    ss2d = model.layers[0].blocks[0].self_attention
    # S4D-real A, D = 1, softplus(dt bias) inside [dt_min, dt_max] (floor 1e-4)
    assert torch.equal(ss2d.A_logs, torch.log(torch.arange(1, 17.0)).repeat(4 * 192, 1))
    assert torch.equal(ss2d.Ds, torch.ones(4 * 192))
    dt = torch.nn.functional.softplus(ss2d.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert ss2d.dt_projs_weight.abs().max() <= 6**-0.5  # dt_rank = ceil(96 / 16) = 6
    assert ss2d.x_proj_weight.abs().max() <= 192**-0.5
    # Linear: trunc normal std .02 (|w| <= 2), LayerNorm 1/0
    w = ss2d.in_proj.weight
    assert abs(w.std().item() - 0.02) < 0.002 and w.abs().max() <= 2
    assert torch.equal(model.patch_embed.norm.weight, torch.ones(96))
