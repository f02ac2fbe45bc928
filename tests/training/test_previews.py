"""Validation previews (titled panels >= 256 px, a class legend, PNG + TensorBoard) and the
volume-wise validation loss."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from train_toy import ToyVolumeData

from vmunet.training.callbacks import ValidationImageGrid, preview_figure, render_figure
from vmunet.training.module import SegmentationModule


def _disc_sample(size: int, label_value: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A constant (black after min-max) image, a centred disc of ``label_value`` as ground truth, and
    an empty prediction."""
    yy, xx = np.mgrid[:size, :size]
    gt = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2).astype(np.int64) * label_value
    return np.zeros((size, size), np.float32), gt, np.zeros_like(gt)


def test_preview_has_column_titles_large_panels_and_a_legend_in_the_overlay_colours():
    names = ["background", "liver", "spleen", "aorta"]
    samples = [_disc_sample(40, 2), _disc_sample(24, 3)]  # small images: panels must still be 256 px
    fig = preview_figure(samples, names)
    rgb = render_figure(fig)
    axes = fig.axes
    assert len(axes) == 2 * 3
    assert [ax.get_title() for ax in axes[:3]] == ["image", "ground truth", "prediction"]
    for ax in axes:
        box = ax.get_window_extent()
        assert box.width >= 256 - 1e-6 and box.height >= 256 - 1e-6, box
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["liver", "spleen", "aorta"]
    assert rgb.dtype == np.uint8 and rgb.shape[1] >= 3 * 256 and rgb.shape[0] >= 2 * 256

    # the ground-truth panel of row 0: centre pixel = black image blended 50/50 with spleen's colour,
    # which must be the colour of the legend's "spleen" patch
    spleen = np.array(legend.get_patches()[1].get_facecolor()[:3])
    box = axes[1].get_window_extent()
    row, col = int(rgb.shape[0] - (box.y0 + box.y1) / 2), int((box.x0 + box.x1) / 2)
    np.testing.assert_allclose(rgb[row, col] / 255.0, 0.5 * spleen, atol=2 / 255)
    # a legend patch is drawn in the class's full colour somewhere in the picture
    assert (np.abs(rgb.astype(int) - np.round(spleen * 255)).max(axis=-1) <= 1).any()


def test_preview_without_names_numbers_the_classes_it_sees():
    fig = preview_figure([_disc_sample(32, 2)], None)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class 1", "class 2"]


def test_preview_callback_rejects_bad_settings():
    with pytest.raises(ValueError, match="panel_px must be >= 64"):
        ValidationImageGrid(panel_px=10)


def test_fit_writes_the_preview_png_and_the_tensorboard_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    pl.seed_everything(0)
    data = ToyVolumeData(n_train=4, n_val=2, depth=3)
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1, val_hd95=False)
    logger = TensorBoardLogger(tmp_path, name="", version=0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0,
                         logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ValidationImageGrid(num_samples=2)])
    trainer.fit(module, datamodule=data)
    logger.experiment.flush()
    png = Image.open(tmp_path / "version_0" / "val_images" / "epoch_000.png")
    assert png.mode == "RGB" and png.width >= 3 * 256 and png.height >= 2 * 256

    events = EventAccumulator(str(tmp_path / "version_0"), size_guidance={IMAGES: 0})
    events.Reload()
    assert "val/preview" in events.Tags()["images"]
    (image,) = events.Images("val/preview")
    assert (image.width, image.height) == png.size
    assert "val/loss" in events.Tags()["scalars"]


@pytest.mark.parametrize(("batch_dice", "slice_batch_size"),
                         [pytest.param(True, 32, marks=pytest.mark.slow), (False, 2)])
def test_volume_wise_validation_logs_the_training_loss_at_model_size(batch_dice, slice_batch_size):
    """One slice batch per case (batch Dice: the loss depends on the batching), or batches of 2 of the
    5 slices with per-slice Dice (any batching gives the same slice-weighted mean): either way
    ``val/loss`` = mean over cases of the training loss of all the case's slices at model size, the
    label resized there by nearest neighbour."""
    torch.manual_seed(0)
    data = ToyVolumeData(n_val=3, depth=5, size=32, native=40)
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1, val_hd95=False,
                                batch_dice=batch_dice, slice_batch_size=slice_batch_size)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    (logged,) = trainer.validate(module, datamodule=data, verbose=False)

    module.eval()
    expected = []
    with torch.no_grad():
        for item in data.val_dataloader():
            image, label = item["image"][0], item["label"][0]
            small = F.interpolate(label[:, None].float(), size=(32, 32), mode="nearest").long()  # (D, 1, h, w)
            expected.append(module.loss_fn(module.model(image), small).item())
    assert logged["val/loss"] == pytest.approx(float(np.mean(expected)), rel=1e-5)
