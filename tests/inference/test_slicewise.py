"""One slice inferer: validation (the training module) and Predictor give the same label maps; the
binary decision rule is ``p >= threshold`` with the threshold from the checkpoint's record."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from inference_helpers import volume_record
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader

from vmunet.data.common import VolumeDataset
from vmunet.data.preprocessing import PreprocessingError, apply_intensity, volume_to_slices
from vmunet.inference import Predictor
from vmunet.inference.slicewise import SliceInferer
from vmunet.training.module import SegmentationModule


class SigmoidRamp(nn.Module):
    """Binary fake model with a known probability: ``p = sigmoid(8 * (x - 0.3))`` per pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * (x[:, :1] - 0.3)


def np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class _EvalData(pl.LightningDataModule):
    """Volume-wise evaluation of given cases through the data modules' own VolumeDataset."""

    eval_mode = "volume"

    def __init__(self, record: dict, cases: list[tuple[np.ndarray, np.ndarray]], image_mode: str) -> None:
        super().__init__()
        self.preprocessing = record
        self.num_classes, self.in_chans = record["num_classes"], record["in_chans"]
        loaders = [lambda s=s, lab=lab, i=i: (s, lab, (1.0, 1.0, 1.0), f"case{i}") for i, (s, lab) in enumerate(cases)]
        self.dataset = VolumeDataset(loaders, record["image_size"], image_mode)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=1)


def _validate_and_capture(module: SegmentationModule, data: _EvalData) -> tuple[list[np.ndarray], pl.Trainer]:
    """Run Lightning validation; return the label maps validation scored (one per case) and the trainer."""
    seen: list[np.ndarray] = []
    original = module.predict_volume

    def spy(image, out_hw, *args):
        labels = original(image, out_hw, *args)
        seen.append(labels.cpu().numpy())
        return labels

    module.predict_volume = spy
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=data, verbose=False)
    return seen, trainer


def _case(rng: np.random.Generator, shape=(23, 19, 4)) -> tuple[np.ndarray, np.ndarray]:
    vol = rng.uniform(0, 100, size=shape).astype(np.float32)  # RAS (X, Y, Z), window [0, 100]
    return vol, np.zeros(shape, np.int64)


@pytest.mark.parametrize(("image_mode", "resample"), [("bilinear", "probabilities"), ("bicubic", "labels")])
def test_validation_and_predictor_give_identical_label_maps(tmp_path, image_mode, resample):
    torch.manual_seed(0)
    rec = volume_record(image_size=(32, 32), class_names=["background", "liver", "spleen"], num_classes=3,
                        image_interpolation=image_mode)
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1, val_hd95=False, slice_batch_size=3,
                                resample=resample)
    rng = np.random.default_rng(0)
    vol, lab = _case(rng)
    # what the data modules do: normalize, slice (D, H, W), resize to model size in VolumeDataset
    slices = volume_to_slices(apply_intensity(vol, rec["intensity"]), 2)
    data = _EvalData(rec, [(slices, volume_to_slices(lab, 2))], image_mode)
    (val_labels,), trainer = _validate_and_capture(module, data)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", batch_size=2)
    assert predictor.preprocessing["resample"] == resample and predictor.preprocessing["threshold"] == 0.5
    pred = predictor.predict_volume(vol)
    assert val_labels.shape == (4, 19, 23)
    np.testing.assert_array_equal(volume_to_slices(pred.labels, 2), val_labels)
    assert len(np.unique(val_labels)) > 1  # a real map, not a constant


def test_binary_threshold_from_the_record_is_honoured(tmp_path):
    """A module trained with threshold 0.9 writes it to the record; Predictor labels p >= 0.9."""
    rec = volume_record(image_size=(19, 23), class_names=["background", "organ"], num_classes=1)
    vol = np.random.default_rng(1).uniform(0, 100, size=(23, 19, 3)).astype(np.float32)
    x = volume_to_slices(vol / 100.0, 2)
    p = np_sigmoid(8.0 * (x.astype(np.float64) - 0.3))  # the fake model's probability, in numpy
    at_09, at_05 = p >= 0.9, p >= 0.5
    assert (at_09 != at_05).mean() > 0.2  # the two rules differ a lot on this volume
    clear = np.abs(p - 0.9) > 1e-5  # float32 vs float64 rounding only matters right at the threshold

    module = SegmentationModule("vmunet_test", num_classes=1, in_chans=1, threshold=0.9, val_hd95=False)
    module.model = SigmoidRamp()
    data = _EvalData(rec, [(x.astype(np.float32), (x > 0.5).astype(np.int64))], "bilinear")
    (val_labels,), _ = _validate_and_capture(module, data)
    np.testing.assert_array_equal(val_labels[clear], at_09[clear])

    assert module.hparams.preprocessing["threshold"] == 0.9
    predictor = Predictor(SigmoidRamp(), module.hparams.preprocessing, device="cpu")
    pred = predictor.predict_volume(vol)
    np.testing.assert_array_equal(volume_to_slices(pred.labels, 2)[clear], at_09[clear])


def test_training_module_decides_binary_at_p_ge_default_threshold():
    """Issue 20.4: the module's binary rule is ``p >= 0.5`` by default; ``p > 0.9`` must fail here."""
    rec = volume_record(image_size=(16, 16), class_names=["background", "organ"], num_classes=1)
    x = np.random.default_rng(2).uniform(0, 1, size=(3, 16, 16)).astype(np.float32)
    x[0, 0, :4] = 0.3  # exactly p = 0.5: a tie is foreground under >=
    p = np_sigmoid(8.0 * (x.astype(np.float64) - 0.3))
    expected = p >= 0.5
    assert (expected != (p > 0.9)).any() and expected[0, 0, :4].all()
    module = SegmentationModule("vmunet_test", num_classes=1, in_chans=1, val_hd95=False)
    module.model = SigmoidRamp()
    data = _EvalData(rec, [(x, np.zeros(x.shape, np.int64))], "bilinear")
    (val_labels,), _ = _validate_and_capture(module, data)
    np.testing.assert_array_equal(val_labels, expected)
    # image mode (ISIC) decides with the same rule
    probs = torch.from_numpy(p.astype(np.float32))[:, None]
    np.testing.assert_array_equal(module._labels(probs).numpy(), expected)


def test_labels_mode_resamples_the_label_map_like_the_original_test():
    """``resample="labels"``: argmax at model size, then scipy zoom(order=0) back (VM-UNet's test_single_volume)."""

    class Ramp(nn.Module):
        def forward(self, x):
            cols = torch.linspace(-1, 1, x.shape[-1])
            return torch.stack([x[:, 0], 0.5 + 0 * x[:, 0], cols.expand_as(x[:, 0]) + x[:, 0]], dim=1)

    rng = np.random.default_rng(3)
    small = rng.uniform(0, 1, size=(2, 1, 8, 8)).astype(np.float32)  # already at model size
    model = Ramp()
    inferer = SliceInferer(image_size=(8, 8), resample="labels", num_classes=3)
    out = inferer(model, small, (13, 11))
    logits = model(torch.from_numpy(small)).numpy()
    expected = np.stack([ndimage.zoom(lg.argmax(0), (13 / 8, 11 / 8), order=0) for lg in logits])
    np.testing.assert_array_equal(out.labels, expected)
    probs_mode = SliceInferer(image_size=(8, 8), num_classes=3)(model, small, (13, 11))
    assert not np.array_equal(probs_mode.labels, out.labels)  # the mode matters on this input


def test_bad_decision_settings_are_named():
    with pytest.raises(ValueError, match="resample: expected one of"):
        SliceInferer(image_size=(8, 8), resample="nearest")
    with pytest.raises(ValueError, match=r"threshold: expected a probability in \(0, 1\)"):
        SegmentationModule("vmunet_test", num_classes=1, in_chans=1, threshold=1.5)
    with pytest.raises(PreprocessingError, match="preprocessing field 'threshold'"):
        Predictor(SigmoidRamp(), {**volume_record(), "threshold": 0.0})
    with pytest.raises(PreprocessingError, match="preprocessing field 'resample'"):
        Predictor(SigmoidRamp(), {**volume_record(), "resample": "nearest"})


@pytest.mark.parametrize("classes", [1, 4])
def test_probabilities_mode_labels_equal_the_batch_resize_then_decide(classes):
    """``resample="probabilities"`` keeps its exact definition (the guard for any faster path):
    labels are those of resizing the batch's probabilities bilinearly (torch, ``align_corners=False``)
    and deciding with numpy (argmax, first maximum; binary ``p >= 0.5``), with or without kept
    probabilities, across mini-batch boundaries (5 slices in batches of 3)."""
    torch.manual_seed(0)
    model = nn.Conv2d(1, classes, 3, padding=1)
    rng = np.random.default_rng(5)
    slices = rng.normal(size=(5, 1, 16, 12)).astype(np.float32)
    inferer = SliceInferer(image_size=(8, 8), batch_size=3, num_classes=max(2, classes))
    with torch.no_grad():
        x = torch.nn.functional.interpolate(torch.from_numpy(slices), size=(8, 8), mode="bilinear", align_corners=False)
        logits = model(x)
        probs = torch.sigmoid(logits) if classes == 1 else torch.softmax(logits, dim=1)
        native = torch.nn.functional.interpolate(probs, size=(16, 12), mode="bilinear", align_corners=False).numpy()
    expected = (native[:, 0] >= 0.5).astype(np.int64) if classes == 1 else native.argmax(axis=1)
    out = inferer(model, slices)
    kept = inferer(model, slices, keep_probabilities=True)
    np.testing.assert_array_equal(out.labels, expected)
    np.testing.assert_array_equal(kept.labels, expected)
    assert out.probabilities is None and kept.probabilities.shape == (max(2, classes), 5, 16, 12)


def test_tta_averages_the_four_in_plane_flips():
    # a fixed 3x3 convolution without symmetry: each of the four flips gives other probabilities,
    # so leaving one out or repeating one changes the average (a model symmetric under a flip, such
    # as a ramp along one axis, cannot tell a flip of the other axis from none)
    conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(3, 1, 3, 3, generator=torch.Generator().manual_seed(0)))
        x = torch.randn(2, 1, 6, 5, generator=torch.Generator().manual_seed(1))
        got = SliceInferer(image_size=(6, 5), tta=True).probabilities(conv, x).numpy()
        terms = []
        for flip in (lambda a: a, lambda a: a[..., ::-1], lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, ::-1]):
            logits = conv(torch.from_numpy(flip(x.numpy()).copy())).numpy()
            e = np.exp(logits - logits.max(1, keepdims=True))
            terms.append(flip(e / e.sum(1, keepdims=True)))  # every flip here is its own inverse
    np.testing.assert_allclose(got, np.mean(terms, axis=0), rtol=1e-5, atol=1e-6)
    assert min(np.abs(a - b).max() for i, a in enumerate(terms) for b in terms[i + 1:]) > 0.01
