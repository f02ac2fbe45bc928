"""Scan orders per stage: one list for every stage or one per stage (encoder, then decoder deepest
first), validated by name, recorded in training checkpoints and rebuilt from them."""

from __future__ import annotations

import pytest
import torch

from vmunet.layers import SS2D
from vmunet.models import create_model
from vmunet.models.checkpoint import model_from_checkpoint

GLOBAL = ["h", "v", "h_flip", "v_flip"]
PER_STAGE = [["h", "v"], ["snake_h", "hilbert"], ["local2", "cyc_d", "h"], ["v"],          # encoder 0..3
             ["v_flip"], ["local2_t", "d"], ["hilbert_t", "snake_v_flip"], ["h", "ad"]]    # decoder, deepest first


def _model(directions, seed=0):
    torch.manual_seed(seed)
    return create_model("vmunet_test", num_classes=3, in_chans=1, directions=directions, scan_backend="torch")


def _stage_orders(model):
    enc = [{blk.self_attention.directions for blk in stage.blocks} for stage in model.layers]
    dec = [{blk.self_attention.directions for blk in stage.blocks} for stage in model.layers_up]
    return enc, dec


def test_per_stage_lists_equal_for_all_stages_give_the_global_model():
    x = torch.randn(2, 1, 32, 32)
    a, b = _model(GLOBAL).eval(), _model([GLOBAL] * 8).eval()
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb), na
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_each_stage_gets_its_own_orders():
    model = _model(PER_STAGE)
    enc, dec = _stage_orders(model)
    assert enc == [{tuple(d)} for d in PER_STAGE[:4]]
    assert dec == [{tuple(d)} for d in PER_STAGE[4:]]
    ss2d = model.layers[2].blocks[0].self_attention
    assert ss2d.x_proj_weight.shape[0] == 3  # K follows the stage's own list
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("directions,message", [
    ([GLOBAL] * 7, r"VMUNet: directions: expected one list of names for all stages or 8 lists \(one per "
                   r"stage: 4 encoder, then 4 decoder, deepest first\), got 7 entries of which 7 are lists"),
    ([*([GLOBAL] * 7), "h"], r"VMUNet: directions: expected .* got 8 entries of which 7 are lists"),
    ([*([GLOBAL] * 7), ["h", "spiral"]], r"VMUNet: directions: unknown scan direction\(s\) \['spiral'\]"),
    ([*([GLOBAL] * 7), []], r"VMUNet: directions: directions must not be empty"),
    ("h", r"VMUNet: directions must be a list of scan-order names or one such list per stage, got 'h'"),
])
def test_bad_per_stage_configs_name_the_field(directions, message):
    with pytest.raises(ValueError, match=message):
        _model(directions)


def test_per_stage_orders_travel_in_the_training_checkpoint(tmp_path):
    from vmunet.training.module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1,
                                model_kwargs={"directions": PER_STAGE, "scan_backend": "torch"})
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "run.ckpt")
    rebuilt, record = model_from_checkpoint(tmp_path / "run.ckpt")
    assert record["model_kwargs"]["directions"] == PER_STAGE
    assert _stage_orders(rebuilt) == _stage_orders(module.model)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), module.model.eval()(x))
    assert sum(isinstance(m, SS2D) for m in rebuilt.modules()) == 8


# Every family: the VSS stages it has, in the order of a per-stage list (encoder shallow to deep,
# then decoder deepest first), written out by hand from each model's module layout.
FAMILY_STAGES = {
    "vmunet": lambda m: [*m.layers, *m.layers_up],
    "mamba_unet": lambda m: [*m.layers, *m.layers_up[1:]],         # layers_up.0: PatchExpand only
    "vmunet_v2": lambda m: list(m.layers),                        # 3 built stages, SDI decoder
    "swin_umamba": lambda m: list(m.vssm_encoder.layers),         # UNETR decoder
    "swin_umamba_d": lambda m: [*m.vssm_encoder.layers, *m.decoder.stages],  # the x4 level: no blocks
}
FAMILY_SMALL = dict(dims=16, d_state=4, scan_backend="torch")
FAMILY_COUNTS = {"vmunet": 8, "mamba_unet": 7, "vmunet_v2": 3, "swin_umamba": 4, "swin_umamba_d": 7}


def _family(name, directions):
    torch.manual_seed(0)
    kw = dict(FAMILY_SMALL, depths=[1, 2, 1, 1], directions=directions)
    if name == "vmunet":
        kw["depths_decoder"] = [1, 1, 2, 1]
    if name == "swin_umamba_d":
        kw["depths_decoder"] = [1, 2, 1]
    return create_model(name, num_classes=2, in_chans=1, **kw)


@pytest.mark.parametrize("name", sorted(FAMILY_STAGES))
def test_per_stage_lists_reach_the_blocks_of_every_family(name):
    lists = PER_STAGE[:FAMILY_COUNTS[name]]
    model = _family(name, lists)
    stages = FAMILY_STAGES[name](model)
    assert [{blk.self_attention.directions for blk in st.blocks} for st in stages] == [{tuple(d)} for d in lists]
    # every SS2D of the model is in one of those stages
    assert sum(isinstance(m, SS2D) for m in model.modules()) == sum(len(st.blocks) for st in stages)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("name", sorted(FAMILY_STAGES))
def test_one_list_is_every_stage_of_every_family(name):
    model = _family(name, ["v", "h_flip"])
    assert {blk.self_attention.directions for st in FAMILY_STAGES[name](model) for blk in st.blocks} == {("v", "h_flip")}


@pytest.mark.parametrize("name,message", [
    ("vmunet", "VMUNet: directions: expected one list of names for all stages or 8 lists (one per stage: "
               "4 encoder, then 4 decoder, deepest first), got 5 entries of which 5 are lists"),
    ("mamba_unet", "MambaUNet: directions: expected one list of names for all stages or 7 lists (one per stage: "
                   "4 encoder, then 3 decoder, deepest first; layers_up.0 has no blocks), got 5 entries of which "
                   "5 are lists"),
    ("vmunet_v2", "VMUNetV2: directions: expected one list of names for all stages or 3 lists (one per stage: "
                  "3 encoder; the last encoder stage's blocks are not built and the SDI decoder has none), "
                  "got 5 entries of which 5 are lists"),
    ("swin_umamba", "SwinUMamba: directions: expected one list of names for all stages or 4 lists (one per stage: "
                    "4 encoder; the UNETR decoder has no VSS blocks), got 5 entries of which 5 are lists"),
    ("swin_umamba_d", "SwinUMambaD: directions: expected one list of names for all stages or 7 lists (one per "
                      "stage: 4 encoder, then 3 decoder, deepest first; the last, x4, decoder level has no blocks), "
                      "got 5 entries of which 5 are lists"),
])
def test_wrong_per_stage_count_is_a_one_line_error(name, message):
    with pytest.raises(ValueError) as err:
        _family(name, PER_STAGE[:5])
    assert str(err.value) == message
