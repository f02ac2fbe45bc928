"""Initialisation (and Swin-UMamba†'s drop-path rates) against the original code executed:
Swin-UMamba†'s ``get_swin_umamba_d_from_plans`` (JiarunLiu/Swin-UMamba ``2c1f72e``, with its own
``InitWeights_He``) and UltraLight VM-UNet's constructor with its ``_init_weights``
(wurenkai/UltraLight-VM-UNet ``d7648e4``), both paper models: every tensor gets the same rule with
the same parameters, every VSS block the same ``DropPath`` rate. ``freeze_init_rules.py`` says how
a rule is compared (random fills replaced by constants naming their distribution) and what stays
a stand-in.

Without ``third_party/`` the live comparisons skip and ours is checked against
``frozen/init_rules.json`` (frozen from the originals, torch 2.13 CPU).
"""

from __future__ import annotations

import json

import pytest
import torch
from freeze_init_rules import (
    FROZEN_FILE,
    drop_path_rates,
    init_summary,
    original_paper_model,
    our_paper_model,
)
from freeze_swin_umamba_d import HEADS
from original_code import SWIN_UMAMBA_COMMIT, ULTRALIGHT_COMMIT

FROZEN = json.loads(FROZEN_FILE.read_text())
MODELS = ["swin_umamba_d", "ultralight_vmunet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: building and summarising 27M parameters of constants needs no more,
    and on a busy machine two threads made it several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours(one_thread) -> dict[str, torch.nn.Module]:
    return {name: our_paper_model(name) for name in MODELS}


def _differing(name: str, summary: dict[str, list[float]]) -> list[str]:
    """Keys whose ``[min, max, mean]`` is not the frozen original's."""
    frozen = FROZEN[name]["init"]
    assert sorted(summary) == sorted(frozen)
    return [k for k, v in summary.items() if v != pytest.approx(frozen[k], rel=1e-6, abs=1e-9)]


def test_frozen_record_is_the_pinned_originals():
    assert FROZEN["provenance"]["swin_umamba_commit"] == SWIN_UMAMBA_COMMIT
    assert FROZEN["provenance"]["ultralight_commit"] == ULTRALIGHT_COMMIT
    swin, light = FROZEN["swin_umamba_d"]["init"], FROZEN["ultralight_vmunet"]["init"]
    # the rules the markers tell apart, as the originals apply them (constants of freeze_init_rules):
    # Swin-UMamba†: He on convolutions, std sqrt(2 / (1.0001 fan_in)) (patch embedding: fan_in 1 x 4 x 4) ...
    assert swin["vssm_encoder.patch_embed.proj.weight"][0] == pytest.approx((2 / 1.0001 / 16) ** 0.5)
    # ... VMamba's truncated normal (std 0.02) on the encoder's Linears, PyTorch's default
    # kaiming_uniform_(a=sqrt(5)) (bound 1/sqrt(fan_in), marker 1000 + 3 b - a = 1000 + 4 b) on the decoder's
    assert swin["vssm_encoder.layers.0.blocks.0.self_attention.in_proj.weight"][0] == pytest.approx(0.02)
    assert swin["decoder.stages.0.blocks.0.self_attention.in_proj.weight"][0] == pytest.approx(1000 + 4 / 384 ** 0.5)
    # UltraLight: Conv2d normal with std sqrt(2 / fan_out) (first conv: 3 x 3 x 8), bias 0
    assert light["encoder1.0.weight"][:2] == pytest.approx([(2 / 72) ** 0.5] * 2)
    assert light["encoder1.0.bias"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", MODELS)
def test_our_init_equals_the_frozen_original(name, ours):
    wrong = _differing(name, init_summary(ours[name]))
    assert wrong == [], f"{len(wrong)} tensors initialised otherwise than the original's, first: {wrong[:5]}"
    if name == "swin_umamba_d":
        assert drop_path_rates(ours[name]) == pytest.approx(FROZEN[name]["drop_path"], abs=1e-9)


@pytest.mark.parametrize("name", MODELS)
def test_our_init_equals_the_originals(name, ours):
    original = original_paper_model(name)
    assert _differing(name, init_summary(original)) == []  # the frozen file is this output
    theirs = {k: v for k, v in original.state_dict().items() if not k.startswith(HEADS)}
    mine = ours[name].state_dict()
    assert sorted(theirs) == sorted(mine)
    wrong = [k for k in theirs if not torch.equal(theirs[k], mine[k])]
    assert wrong == [], f"{len(wrong)} tensors initialised otherwise than the original's, first: {wrong[:5]}"
    if name == "swin_umamba_d":
        assert drop_path_rates(original) == pytest.approx(FROZEN[name]["drop_path"], abs=1e-9)
        assert drop_path_rates(ours[name]) == drop_path_rates(original)


def test_the_comparison_sees_a_missing_he_init(monkeypatch):
    """Without nnU-Net's He init our Swin-UMamba† convolutions keep PyTorch's default, and the
    comparison fails on them (and only them)."""
    from vmunet.models import swin_umamba

    monkeypatch.setattr(swin_umamba, "init_he_conv", lambda module, neg_slope=1e-2: None)
    wrong = _differing("swin_umamba_d", init_summary(our_paper_model("swin_umamba_d")))
    assert "vssm_encoder.patch_embed.proj.weight" in wrong and "decoder.stages.0.blocks.0.self_attention.conv2d.weight" in wrong
    assert all("conv" in k or "patch_embed.proj" in k or "seg_layers" in k for k in wrong), wrong
