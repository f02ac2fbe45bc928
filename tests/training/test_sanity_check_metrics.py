"""Lightning's sanity check runs the volume-wise validation path without HD95 (its values are
discarded; HD95 of an untrained model's noisy masks dominated a GPU run's time), and the real
validations after it still compute HD95."""

from __future__ import annotations

import lightning.pytorch as pl
from train_toy import ToyVolumeData

from vmunet.evaluation import metrics as M
from vmunet.training.module import SegmentationModule


def test_sanity_check_scores_cases_without_hd95_and_validation_with_it(tmp_path, monkeypatch):
    calls = []
    real = M.case_metrics

    def spy(pred, gt, class_names, spacing=None, hd95="pooled"):
        rows = real(pred, gt, class_names, spacing=spacing, hd95=hd95)
        calls.append((trainer.sanity_checking, hd95, rows))
        return rows

    monkeypatch.setattr(M, "case_metrics", spy)
    pl.seed_everything(3)
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1)  # val_hd95 on (the default)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=2, num_sanity_val_steps=2,
                         default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                         logger=False, enable_checkpointing=False)
    trainer.fit(module, ToyVolumeData())
    sanity = [(hd95, rows) for checking, hd95, rows in calls if checking]
    validation = [(hd95, rows) for checking, hd95, rows in calls if not checking]
    assert len(sanity) == 2 and len(validation) == 2  # every case of both went through case_metrics
    assert all(hd95 is None for hd95, _ in sanity)
    assert all(r["hd95"] is None and r["status"] in M.STATUSES for _, rows in sanity for r in rows)
    assert all(hd95 == "pooled" for hd95, _ in validation)
    assert "val/dice" in trainer.callback_metrics
    scored = [r for _, rows in validation for r in rows if r["status"] == "scored"]
    assert scored and all(r["hd95"] is not None for r in scored)  # (seeded: the toy model predicts organs)
    assert "val/hd95" in trainer.callback_metrics
