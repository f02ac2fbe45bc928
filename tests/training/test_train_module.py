"""The LightningModule: schedules, loss, fit/test through the CLI, checkpoints, resume, config errors."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_toy import ToyImageData, ToyVolumeData

from vmunet.errors import ConfigError
from vmunet.evaluation.metrics import BinaryConfusion, case_metrics, summarize_cases
from vmunet.models import create_model
from vmunet.training.callbacks import last_checkpoint
from vmunet.training.cli import run_lightning_cli
from vmunet.training.module import SegmentationModule
from vmunet.training.schedulers import LRSchedule

FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1"]


def _lrs(scheduler, epochs):
    opt = scheduler.optimizer
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def _opt():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)


def test_cosine_schedule_equals_torch_cosine_annealing_including_the_bounce():
    ours = _lrs(torch.optim.lr_scheduler.LambdaLR(o := _opt(), LRSchedule("cosine", base_lr=1e-3, eta_min=1e-5,
                                                                          t_max=50)), 160)
    del o
    ref = _lrs(torch.optim.lr_scheduler.CosineAnnealingLR(_opt(), T_max=50, eta_min=1e-5), 160)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)
    assert ours[50] == pytest.approx(1e-5) and ours[100] == pytest.approx(1e-3)


def test_poly_and_warmup_closed_forms():
    s = LRSchedule("poly", base_lr=1e-2, eta_min=0.0, total=12, power=0.9, warmup_epochs=2, warmup_start_factor=0.1)
    assert [s(0), s(1)] == pytest.approx([0.1, 0.55])
    assert s(2) == pytest.approx(1.0)
    assert s(2 + 5) == pytest.approx((1 - 5 / 10) ** 0.9)
    assert s(12) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="poly schedule needs the total number of epochs"):
        LRSchedule("poly", base_lr=1e-3)
    with pytest.raises(ValueError, match="scheduler: expected one of"):
        LRSchedule("step", base_lr=1e-3)
    for name in ("cosine", "constant"):  # a warm-up as long as the run never reaches lr
        with pytest.raises(ValueError, match="warmup_epochs=5 is not shorter than the run"):
            LRSchedule(name, base_lr=1e-3, total=5, warmup_epochs=5)
        assert LRSchedule(name, base_lr=1e-3, total=6, warmup_epochs=5)(5) == pytest.approx(1.0)


@pytest.mark.parametrize("num_classes", [4, pytest.param(1, marks=pytest.mark.slow)])
def test_loss_decreases_on_a_tiny_batch(num_classes):
    pl.seed_everything(0)
    module = SegmentationModule("vmunet_test", num_classes=num_classes, in_chans=1, lr=3e-3)
    data = ToyVolumeData(num_classes=max(num_classes, 2), size=32)
    batch = next(iter(data.train_dataloader()))
    if num_classes == 1:
        batch["label"] = (batch["label"] > 0).float()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = module.loss_fn(module(batch["image"]), module._target(batch["label"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.85 * losses[0], losses


def test_module_argument_errors():
    with pytest.raises(ValueError, match="model.num_classes and model.in_chans are required"):
        SegmentationModule("vmunet_test")
    with pytest.raises(ValueError, match=r"model.class_weights: expected 3 entries"):
        SegmentationModule("vmunet_test", num_classes=3, in_chans=1, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="eta_min must be in"):
        SegmentationModule("vmunet_test", num_classes=3, in_chans=1, lr=1e-4, eta_min=1e-3)


def _run_dir(root: Path) -> Path:
    versions = sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return versions[-1]


def _ref_predict(model, image, out_hw):
    with torch.no_grad():
        probs = F.interpolate(torch.softmax(model(image), 1), size=out_hw, mode="bilinear", align_corners=False)
    return probs.argmax(1).numpy()


def test_cli_fit_then_test_writes_checkpoints_previews_and_exact_reports(tmp_path, capsys, caplog, recwarn):
    import logging

    root = tmp_path / "runs"
    common = ["--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test",
              "--trainer.default_root_dir", str(root), *FAST]
    caplog.set_level(logging.INFO)
    cli = run_lightning_cli(["fit", *common, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"])
    run = _run_dir(root)
    # no progress bar: one line per epoch with the loss and the validation Dice
    lines = [r.getMessage() for r in caplog.records if r.name == "vmunet.training.progress"]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: loss ") and lines[1].startswith("epoch 2/2: loss ")
    assert all(", val Dice " in line for line in lines), lines
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch") for n in ckpts), ckpts
    assert sorted(p.name for p in (run / "val_images").iterdir()) == ["epoch_000.png", "epoch_001.png"]
    assert list(run.glob("events.out.tfevents.*")) and (run / "metrics.csv").exists()
    best = cli.trainer.checkpoint_callback.best_model_path
    assert Path(best).parent == run / "checkpoints"

    # the checkpoint contract: plain data only, and enough to rebuild the model for inference
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["vmunet"]
    assert meta["model_name"] == "vmunet_test"
    assert meta["model_kwargs"] == {"num_classes": 3, "in_chans": 1}
    assert meta["preprocessing"] == {**ToyVolumeData().preprocessing, "threshold": 0.5, "resample": "probabilities"}
    assert ckpt["hyper_parameters"]["preprocessing"] == meta["preprocessing"]
    assert isinstance(meta["version"], str) and meta["version"]
    assert ckpt["epoch"] == 1
    model = create_model(meta["model_name"], **meta["model_kwargs"]).eval()
    model.load_state_dict({k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})

    training_config = (run / "config.yaml").read_text()
    before = sorted(p.name for p in run.iterdir())
    capsys.readouterr()
    recwarn.clear()
    caplog.clear()
    run_lightning_cli(["test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    # no progress bar: one line per evaluated case
    lines = [r.getMessage() for r in caplog.records if r.name == "vmunet.training.progress"]
    assert [re.sub(r" \([0-9.]+ s\)$", "", line) for line in lines] == [
        "test 1/3: case0000", "test 2/3: case0001", "test 3/3: case0002"], lines
    # the reports land in the evaluated checkpoint's run: no new version_N, its config and logs untouched
    assert sorted(p.name for p in root.iterdir()) == [run.name]
    assert sorted(p.name for p in run.iterdir()) == sorted([*before, "config.test.yaml", "test_cases.csv",
                                                            "test_metrics.json", "test_per_class.csv"])
    assert (run / "config.yaml").read_text() == training_config
    assert not any("dirpath has changed" in str(w.message) for w in recwarn) and "dirpath has changed" not in caplog.text
    # stdout: the project's one table (no Lightning results table)
    out = capsys.readouterr().out
    assert out.count("test: 3 cases, mean over cases, then classes") == 1
    assert "Test metric" not in out and "DataLoader 0" not in out and "organ2" in out
    test_run = run
    report = json.loads((test_run / "test_metrics.json").read_text())
    with open(test_run / "test_cases.csv") as fh:
        case_rows = list(csv.DictReader(fh))
    assert len(case_rows) == 3 * 2 and {r["case"] for r in case_rows} == {"case0000", "case0001", "case0002"}

    # independent re-evaluation of the same checkpoint gives the same numbers
    data = ToyVolumeData()
    rows = []
    for item in data.test_dataloader():
        pred = _ref_predict(model, item["image"][0], tuple(item["label"].shape[-2:]))
        for r in case_metrics(pred, item["label"][0].numpy(), data.class_names, item["spacing"][0].tolist()):
            rows.append({"case": item["case"][0], **r})
    ref = summarize_cases(rows, data.class_names)
    assert report["mean"]["dice"] == pytest.approx(ref["mean"]["dice"], abs=1e-6)
    assert report["mean"]["hd95"] == pytest.approx(ref["mean"]["hd95"], abs=1e-5)
    assert report["mean"]["hd95_mm"] == pytest.approx(ref["mean"]["hd95_mm"], abs=1e-5)
    assert report["per_class"]["organ2"]["dice"] == pytest.approx(ref["per_class"]["organ2"]["dice"], abs=1e-6)
    with open(test_run / "test_per_class.csv") as fh:
        per_class = list(csv.DictReader(fh))
    assert [r["class"] for r in per_class] == ["organ1", "organ2", "mean"]
    assert float(per_class[-1]["dice"]) == pytest.approx(ref["mean"]["dice"], abs=1e-6)


class _Capture(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.start_epoch = trainer.current_epoch
        self.lr = opt.param_groups[0]["lr"]
        self.exp_avg = {i: s["exp_avg"].clone() for i, s in enumerate(opt.state.values())}
        self.steps = [float(s["step"]) for s in opt.state.values()]


def _trainer(root, epochs, callbacks=()):
    return pl.Trainer(max_epochs=epochs, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                      default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, callbacks=[last_checkpoint(root),
                                               *callbacks])


def test_resume_from_last_restores_epoch_optimizer_schedule_and_rng(tmp_path):
    kwargs = dict(num_classes=3, in_chans=1, lr=2e-3, t_max=3, eta_min=1e-4, val_hd95=False)
    pl.seed_everything(1)
    straight = SegmentationModule("vmunet_test", **kwargs)
    _trainer(tmp_path / "straight", 3).fit(straight, ToyVolumeData())

    pl.seed_everything(1)
    _trainer(tmp_path, 2).fit(SegmentationModule("vmunet_test", **kwargs), ToyVolumeData())
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1

    cap = _Capture()
    trainer = _trainer(tmp_path / "resumed", 3, [cap])
    torch.manual_seed(12345)  # a different stream: the checkpoint's must win
    resumed = SegmentationModule("vmunet_test", **kwargs)
    trainer.fit(resumed, ToyVolumeData(), ckpt_path=tmp_path / "last.ckpt")
    assert cap.start_epoch == 2 and trainer.current_epoch == 3
    # shuffling, drop-path and the optimizer continue exactly: same weights as the uninterrupted run
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    saved = ckpt["optimizer_states"][0]["state"]
    assert cap.steps == [float(s["step"]) for s in saved.values()]
    for i, s in enumerate(saved.values()):
        torch.testing.assert_close(cap.exp_avg[i], s["exp_avg"])
    # the third epoch (index 2) runs at the cosine value for t=2
    expected = 1e-4 + (2e-3 - 1e-4) * (1 + math.cos(math.pi * 2 / 3)) / 2
    assert cap.lr == pytest.approx(expected)


def test_binary_image_mode_reports_pooled_and_per_image_metrics(tmp_path):
    pl.seed_everything(2)
    module = SegmentationModule("vmunet_test", num_classes=1, in_chans=3, lr=3e-3)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False, logger=False)
    data = ToyImageData()
    trainer.fit(module, data)
    assert {"val/dice", "val/iou", "val/accuracy", "val/image_dice", "val/loss"} <= set(trainer.callback_metrics)
    trainer.test(module, data, ckpt_path=None, verbose=False)
    summary = module.last_summary
    ref = BinaryConfusion()
    module.eval()
    with torch.no_grad():
        for b in data.test_dataloader():
            ref.update(torch.sigmoid(module(b["image"])).numpy(), b["label"].numpy(), b["case"])
    assert summary["num_images"] == 6
    for key, value in ref.pooled().items():
        assert summary["pooled"][key] == pytest.approx(value, abs=1e-9)
    assert summary["per_image"]["dice"] == pytest.approx(ref.per_image()["dice"])
    assert json.loads((tmp_path / "test_metrics.json").read_text())["pooled"]["dice"] == pytest.approx(
        ref.pooled()["dice"])


def test_config_errors_name_the_key(tmp_path):
    # were a check to pass wrongly, keep the accidental run short
    short = ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", *FAST]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  model_name: vmunet_test\n  learning_rate: 0.1\n"
                   "data:\n  class_path: train_toy.ToyVolumeData\n")
    with pytest.raises(ConfigError) as exc:
        run_lightning_cli(["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path), *short])
    assert str(exc.value).startswith("model.learning_rate: unknown key")
    with pytest.raises(ConfigError) as exc:
        run_lightning_cli(["fit", "--data", "train_toy.ToyVolumeData", "--model.scheduler", "cosin",
                           "--trainer.default_root_dir", str(tmp_path), *short])
    assert str(exc.value) == "model.scheduler: expected one of cosine, poly, constant, got cosin"
    with pytest.raises(ConfigError) as exc:
        run_lightning_cli(["fit", "--data", "train_toy.ToyVolumeData", "--trainer.max_epoch", "3",
                           "--trainer.default_root_dir", str(tmp_path), *short])
    assert str(exc.value).startswith("trainer.max_epoch: unknown key; did you mean trainer.max_epochs?")
    assert not list(tmp_path.glob("version_*"))  # nothing started


def test_ema_of_weights_through_the_cli_lands_in_the_checkpoint(tmp_path):
    """EMA is Lightning's EMAWeightAveraging callback, configured in YAML / on the command line:
    validation and checkpoints use the averaged weights, the raw ones are kept for resuming.

    The expected average is the EMA formula written here over the recorded per-step weights:
    a_1 = w_1, a_k = d a_{k-1} + (1 - d) w_k with d = 0.5 (2 epochs x 2 steps)."""
    root = tmp_path / "runs"
    cli = run_lightning_cli(["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test",
                             "--trainer.default_root_dir", str(root), *FAST, "--trainer.max_epochs", "2",
                             "--trainer.limit_train_batches", "2",
                             "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
                             "--trainer.callbacks.decay", "0.5",
                             "--trainer.callbacks+=train_toy.WeightRecorder"])
    rec = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "WeightRecorder")
    assert len(rec.steps) == 4 and len(rec.validated) == 2
    d, averages = 0.5, []
    for w in rec.steps:
        averages.append(dict(w) if not averages else {k: d * averages[-1][k] + (1 - d) * w[k] for k in w})

    def close(a, b):
        return all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in b)

    assert not close(averages[-1], rec.steps[-1])  # the average really differs from the raw weights
    assert close(rec.validated[0], averages[1]) and close(rec.validated[1], averages[3])
    ckpt = torch.load(_run_dir(root) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert ema.keys() == raw.keys() and ckpt["vmunet"]["model_name"] == "vmunet_test"
    assert close(ema, averages[-1]) and close(raw, rec.steps[-1])
    model = create_model("vmunet_test", **ckpt["vmunet"]["model_kwargs"])
    model.load_state_dict({k[len("model."):]: v for k, v in ema.items() if k.startswith("model.")})


def test_optimizer_is_fused_adamw_with_the_same_update_as_the_loop():
    """configure_optimizers builds the fused AdamW; one step equals torch's per-tensor loop."""
    import copy

    torch.manual_seed(0)
    module = SegmentationModule("vmunet_test", num_classes=2, in_chans=1, lr=1e-3, weight_decay=1e-2)
    ref_model = copy.deepcopy(module.model)
    opt = module.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
    ref = torch.optim.AdamW(ref_model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2,
                            foreach=False)
    for _ in range(2):
        for p, q in zip(module.model.parameters(), ref_model.parameters(), strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    for p, q in zip(module.model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
