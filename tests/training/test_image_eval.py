"""Multi-class image-mode evaluation (``eval_mode = "image"``, more than one foreground class):
every image is scored as a 2D case, against Dice written out here on a known prediction."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from vmunet.training.module import SegmentationModule

NAMES = ["background", "red", "green"]


class ChannelLogits(nn.Module):
    """Fixed fake model: the image's three channels are the three class scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _maps(seed: int, n: int, size: int = 12):
    """Ground-truth and predicted label maps, every class present in every ground truth; the
    prediction moves the regions around (and drops class 2 from the last image)."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(n):
        gt = np.zeros((size, size), np.int64)
        gt[2:7, 1:6] = 1
        gt[6:11, 5 + i % 3:11] = 2
        pred = np.roll(gt, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
        pred[rng.random((size, size)) < 0.1] = 0
        if i == n - 1:
            pred[pred == 2] = 1
        gts.append(gt)
        preds.append(pred)
    return gts, preds


class MultiClassImages(pl.LightningDataModule):
    eval_mode = "image"
    in_chans = 3
    num_classes = 3
    class_names = NAMES

    def __init__(self) -> None:
        super().__init__()
        self.preprocessing = {
            "dataset": "isic", "in_chans": 3, "image_size": [12, 12], "class_names": NAMES, "num_classes": 3,
            "intensity": {"mode": "none"}, "orientation": None, "slice_axis": None,
        }
        self.gts, self.preds = _maps(0, 5)
        self.items = []
        for i, (gt, pred) in enumerate(zip(self.gts, self.preds, strict=True)):
            scores = np.eye(3, dtype=np.float32)[pred].transpose(2, 0, 1) * 4.0  # one-hot of pred -> logits
            self.items.append({"image": torch.from_numpy(scores), "label": torch.from_numpy(gt[None]),
                               "case": f"img{i}"})

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=2)


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    return 2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum())


def test_multiclass_image_mode_scores_each_image_as_a_case():
    dm = MultiClassImages()
    module = SegmentationModule(model_name="vmunet_test", num_classes=3, in_chans=3, val_hd95=False)
    module.model = ChannelLogits()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    summary = module.last_summary
    assert "pooled" not in summary  # the binary (ISIC) pooled confusion is not used for 3 classes
    rows = {(r["case"], r["class"]): r["dice"] for r in summary["cases"]}
    expected = {(f"img{i}", NAMES[c]): _dice(pred == c, gt == c)
                for i, (gt, pred) in enumerate(zip(dm.gts, dm.preds, strict=True)) for c in (1, 2)}
    assert rows.keys() == expected.keys()
    for key, value in expected.items():
        assert rows[key] == pytest.approx(value, abs=1e-12), key
    assert expected[("img4", "green")] == 0.0  # the dropped class scores 0
    per_class = {n: np.mean([v for (_, c), v in expected.items() if c == n]) for n in NAMES[1:]}
    for name in NAMES[1:]:
        assert summary["per_class"][name]["dice"] == pytest.approx(per_class[name])
    assert summary["mean"]["dice"] == pytest.approx(np.mean(list(per_class.values())))
    assert trainer.callback_metrics["val/dice"].item() == pytest.approx(np.mean(list(per_class.values())), rel=1e-6)
