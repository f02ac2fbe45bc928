"""``vmunet.models.checkpoint``: the rebuild record of checkpoints with and without the ``vmunet``
record, and overrides of the model options when rebuilding."""

from __future__ import annotations

import torch

from vmunet.layers.ss2d import SS2D
from vmunet.models import create_model
from vmunet.models.checkpoint import checkpoint_record, model_from_checkpoint


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {"model." + k: v for k, v in model.state_dict().items()}


def test_an_rgb_model_is_rebuilt_from_lightning_hyper_parameters():
    src = create_model("vmunet_test", num_classes=2, in_chans=3, d_state=2)
    hparams = {"model_name": "vmunet_test", "num_classes": 2, "in_chans": 3, "model_kwargs": {"d_state": 2}}
    model, record = model_from_checkpoint({"state_dict": _state(src), "hyper_parameters": hparams})
    assert record["model_kwargs"] == {"d_state": 2, "num_classes": 2, "in_chans": 3}
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.eval()(x), rtol=0, atol=0)


def test_a_record_without_preprocessing_takes_the_hyper_parameters_one():
    prep = {"image_size": [32, 32], "class_names": ["background", "liver"]}
    ckpt = {"vmunet": {"model_name": "vmunet_test", "model_kwargs": {"num_classes": 2}, "preprocessing": None},
            "hyper_parameters": {"preprocessing": prep}}
    assert checkpoint_record(ckpt)["preprocessing"] == prep
    own = {"image_size": [64, 64]}  # the record's own wins
    assert checkpoint_record({**ckpt, "vmunet": {**ckpt["vmunet"], "preprocessing": own}})["preprocessing"] == own


def test_overrides_replace_the_recorded_model_options():
    src = create_model("vmunet_test", num_classes=2, in_chans=1, d_state=2, scan_backend="torch")
    ckpt = {"state_dict": _state(src),
            "vmunet": {"model_name": "vmunet_test", "model_kwargs": dict(src.model_kwargs), "preprocessing": {}}}
    assert ckpt["vmunet"]["model_kwargs"]["scan_backend"] == "torch"
    model, _ = model_from_checkpoint(ckpt, scan_backend="ref")
    backends = {m.scan_backend for m in model.modules() if isinstance(m, SS2D)}
    assert backends == {"ref"}
