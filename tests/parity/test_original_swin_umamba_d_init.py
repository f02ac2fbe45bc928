"""Swin-UMamba†'s initialisation and drop-path rates against the original's
``get_swin_umamba_d_from_plans`` executed (JiarunLiu/Swin-UMamba ``2c1f72e``, the paper model, its
own ``InitWeights_He``): every tensor gets the same rule with the same parameters, every VSS block
the same ``DropPath`` rate. ``freeze_swin_umamba_d_init.py`` says how a rule is compared (random
fills replaced by constants naming their distribution) and what stays a stand-in.

Without ``third_party/`` the live comparison skips and ours is checked against
``frozen/swin_umamba_d_init.json`` (frozen from the original, torch 2.13 CPU).
"""

from __future__ import annotations

import json

import pytest
import torch
from freeze_swin_umamba_d import HEADS
from freeze_swin_umamba_d_init import (
    FROZEN_FILE,
    drop_path_rates,
    init_summary,
    original_paper_model,
    our_paper_model,
)
from original_code import SWIN_UMAMBA_COMMIT

FROZEN = json.loads(FROZEN_FILE.read_text())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: building and summarising 27M parameters of constants needs no more,
    and on a busy machine two threads made it several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours(one_thread) -> torch.nn.Module:
    return our_paper_model()


def test_frozen_record_is_the_pinned_original():
    assert FROZEN["provenance"]["swin_umamba_commit"] == SWIN_UMAMBA_COMMIT
    init = FROZEN["init"]
    # the rules the markers tell apart, as the original applies them (constants of the docstring):
    # He on convolutions, std sqrt(2 / (1.0001 fan_in)) (patch embedding: fan_in 1 x 4 x 4) ...
    assert init["vssm_encoder.patch_embed.proj.weight"][0] == pytest.approx((2 / 1.0001 / 16) ** 0.5)
    # ... VMamba's truncated normal (std 0.02) on the encoder's Linears, PyTorch's default
    # kaiming_uniform_(a=sqrt(5)) (bound 1/sqrt(fan_in), marker 1000 + 3 b - a = 1000 + 4 b) on the decoder's
    assert init["vssm_encoder.layers.0.blocks.0.self_attention.in_proj.weight"][0] == pytest.approx(0.02)
    assert init["decoder.stages.0.blocks.0.self_attention.in_proj.weight"][0] == pytest.approx(1000 + 4 / 384 ** 0.5)


def _differing(summary: dict[str, list[float]]) -> list[str]:
    """Keys whose ``[min, max, mean]`` is not the frozen original's."""
    assert sorted(summary) == sorted(FROZEN["init"])
    return [k for k, v in summary.items() if v != pytest.approx(FROZEN["init"][k], rel=1e-6, abs=1e-9)]


def test_our_init_and_drop_path_equal_the_frozen_original(ours):
    wrong = _differing(init_summary(ours))
    assert wrong == [], f"{len(wrong)} tensors initialised otherwise than the original's, first: {wrong[:5]}"
    assert drop_path_rates(ours) == pytest.approx(FROZEN["drop_path"], abs=1e-9)


def test_our_init_and_drop_path_equal_the_originals(ours):
    original = original_paper_model()
    assert _differing(init_summary(original)) == []  # the frozen file is this output
    assert drop_path_rates(original) == pytest.approx(FROZEN["drop_path"], abs=1e-9)
    theirs = {k: v for k, v in original.state_dict().items() if not k.startswith(HEADS)}
    mine = ours.state_dict()
    assert sorted(theirs) == sorted(mine)
    wrong = [k for k in theirs if not torch.equal(theirs[k], mine[k])]
    assert wrong == [], f"{len(wrong)} tensors initialised otherwise than the original's, first: {wrong[:5]}"
    assert drop_path_rates(ours) == drop_path_rates(original)


def test_the_comparison_sees_a_missing_he_init(monkeypatch):
    """Without nnU-Net's He init our convolutions keep PyTorch's default, and the comparison fails."""
    from vmunet.models import swin_umamba

    monkeypatch.setattr(swin_umamba, "init_he_conv", lambda module, neg_slope=1e-2: None)
    wrong = _differing(init_summary(our_paper_model()))
    assert "vssm_encoder.patch_embed.proj.weight" in wrong and "decoder.stages.0.blocks.0.self_attention.conv2d.weight" in wrong
    assert all("conv" in k or "patch_embed.proj" in k or "seg_layers" in k for k in wrong), wrong
