"""Registry: names, paper parameter count, overrides and their errors."""

from __future__ import annotations

import pytest
import torch

from vmunet.models import VMUNet, count_parameters, create_model, list_models
from vmunet.models.registry import ModelSpec, model_config, model_description, model_spec


def test_list_models_has_the_contract_names():
    assert {"vmunet", "vmunet_deep", "vmunet_test", "vmunet_v2", "mamba_unet", "swin_umamba",
            "swin_umamba_d"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_paper_config_parameter_count_matches_original():
    # the original VM-UNet code (depths [2,2,2,2], decoder [2,2,2,1]) gives exactly this count
    model = create_model("vmunet", num_classes=1, in_chans=3)
    assert count_parameters(model) == 27_427_561
    assert len(model.state_dict()) == 222
    # Synapse (9 classes, grey): head 24*9+9 instead of 24+1 (+200), stem 96*1*16 instead of
    # 96*3*16 (-3072) -> 27_427_561 + 200 - 3072
    assert count_parameters(create_model("vmunet", num_classes=9, in_chans=1)) == 27_424_689


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
    with pytest.raises(ValueError, match=r"unknown model 'nope'; available: mamba_unet, swin_umamba, swin_umamba_d, ultralight_vmunet, vmunet, vmunet_deep"):
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


def test_registry_entries_are_named_specs():
    spec = model_spec("vmunet_test")
    assert isinstance(spec, ModelSpec) and spec.builder is VMUNet
    assert spec.defaults["dims"] == (16, 32, 64, 128) and spec.defaults["d_state"] == 4
    assert model_description("vmunet_test") == spec.description == "tiny VM-UNet for tests and smoke runs"
    config = model_config("vmunet_test")
    config["d_state"] = 99  # a copy: the registry keeps its defaults
    assert model_spec("vmunet_test").defaults["d_state"] == 4


def test_weight_modules_do_not_import_the_registry():
    """models/weights.py and what it uses are leaves below registry.py (no import circle)."""
    import ast
    from pathlib import Path

    import vmunet.models as pkg

    folder = Path(pkg.__file__).parent
    for name in ("weights.py", "layouts.py", "safe_load.py"):
        tree = ast.parse((folder / name).read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"vmunet.models.registry", "vmunet.models.checkpoint", "vmunet.models"}, name


@pytest.mark.parametrize("size", [
    "narrow",  # the registry's depths at width 16: every constructor, cheap on the CPU
    pytest.param("registry", marks=pytest.mark.slow),
])
@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_on_the_meta_device(name, size):
    # users count parameters / check shapes without allocating: nothing in a constructor may need
    # tensor values (a .tolist() of a meta tensor fails)
    kw = dict(dims=16, d_state=4) if size == "narrow" else {}
    with torch.device("meta"):
        meta = create_model(name, num_classes=3, in_chans=1, **kw)
    cpu = create_model(name, num_classes=3, in_chans=1, **kw)
    assert {t.device.type for t in meta.state_dict().values()} == {"meta"}
    assert count_parameters(meta) == count_parameters(cpu)
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in cpu.state_dict().items()}
