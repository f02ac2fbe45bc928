"""Callbacks: ``last.ckpt`` every epoch, per-epoch reseeding, validation of the final epoch, the
validation preview (PNG + TensorBoard), the log folders of a failed start given back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from vmunet.data.fileio import atomic_path
from vmunet.training.runs import LoggerDirs, discard_new_logger_files

log = logging.getLogger(__name__)

# distinct colours for label values 1..; background stays the plain image
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
], dtype=np.float32) / 255.0


def last_checkpoint(dirpath: str | None = None) -> ModelCheckpoint:
    """A stock ``ModelCheckpoint`` that keeps ``last.ckpt`` = the end of the latest epoch.

    With no monitor and ``save_top_k=1`` Lightning writes a checkpoint every epoch and removes the
    previous one; naming it ``last`` makes that one file. (``save_last=True`` on the best-score
    callback refreshes ``last.ckpt`` only when the best changes in Lightning 2.6, so a resumed run
    would repeat epochs.) ``enable_version_counter=False``: a resumed run overwrites it, never
    ``last-v1.ckpt``. ``save_on_train_epoch_end=True``: Lightning's default saves at the end of
    *validation* unless validation runs every epoch, so with ``check_val_every_n_epoch: 10`` (the
    Synapse recipe) ``last.ckpt`` was written every 10th epoch only, and a shorter run wrote none.
    """
    return ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                           enable_version_counter=False, save_on_train_epoch_end=True)


class GiveBackNewLogDirs(pl.Callback):
    """Remove the log folders and empty event files a run's loggers created (``dirs``:
    :func:`~vmunet.training.runs.logger_dirs`, read before Lightning started them) when the run fails
    before it has produced anything.

    Lightning creates ``lightning_logs/version_N`` and its TensorBoard event file before any hook can
    check the run, so ``Trainer.fit(module, dm, ckpt_path=X)`` refused in a hook (a run that has ended,
    data prepared otherwise) left an empty version folder behind. What existed before the run, and any
    folder holding a checkpoint, metrics or a logged value, is kept. Added by
    :meth:`SegmentationModule.configure_callbacks <vmunet.training.module.SegmentationModule.configure_callbacks>`.
    """

    def __init__(self, dirs: LoggerDirs | None) -> None:
        self.dirs = dirs

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.dirs is None or not (self.dirs.new or self.dirs.existing) or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            # closed first: a TensorBoard writer re-creates its file when it flushes. (Lightning finalizes
            # them again right after this hook; a second finalize("failed") writes nothing.)
            logger.finalize("failed")
        discard_new_logger_files(self.dirs)
        self.dirs = None


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's global RNGs for one epoch (NumPy ``SeedSequence``, 32 bits)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank, 0x5EED]).generate_state(1)[0])


class EpochSeed(pl.Callback):
    """Seed Python, NumPy and torch (CPU + CUDA) from ``(seed, epoch, rank)`` when a training epoch starts.

    The model's random layers (drop-path, dropout) draw from torch's global generator; the data
    path does not (:mod:`vmunet.data.sampling`). Reseeding at every epoch start makes an epoch's
    draws independent of everything before it, so a run resumed from ``last.ckpt`` replays the
    interrupted epoch exactly, on any number of ranks. ``seed``: default the run's
    (``seed_everything``).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import random

        from vmunet.data.sampling import run_seed

        seed = rank_seed(run_seed() if self.seed is None else self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device


class FinalEpochValidation(pl.Callback):
    """Validate the last epoch of ``trainer.max_epochs`` even when ``check_val_every_n_epoch`` would skip it.

    Lightning validates epoch ``e`` (0-based) only when ``(e + 1) % check_val_every_n_epoch == 0``,
    so a run with ``max_epochs: 7`` and ``check_val_every_n_epoch: 5`` never scored its last two
    epochs, and one shorter than the interval never validated at all: no best checkpoint, and the
    final weights never competed for it. In the final epoch this callback sets the Trainer's public
    ``check_val_every_n_epoch`` attribute, which the training loop reads afresh at every batch
    (there is no hook that asks for one extra validation), to 1, and restores it when training ends.
    With 1, ``ModelCheckpoint`` (``save_on_train_epoch_end`` unset) saves at the end of the training
    epoch instead of the validation's end: after that validation either way, so the final epoch's
    ``val/dice`` is scored. Runs ended by ``max_steps``, ``max_time`` or early stopping before
    ``max_epochs`` are not covered (their last epoch is not known in advance); neither is
    ``check_val_every_n_epoch: null`` (validation every N batches, Lightning's rule).
    """

    def __init__(self) -> None:
        self._every: int | None = None  # the configured interval while the final epoch overrides it

    def _final_epoch(self, trainer: pl.Trainer) -> None:
        every, max_epochs = trainer.check_val_every_n_epoch, trainer.max_epochs
        if (isinstance(every, int) and every > 1 and isinstance(max_epochs, int) and max_epochs > 0
                and trainer.current_epoch == max_epochs - 1 and max_epochs % every != 0):
            self._every = every
            trainer.check_val_every_n_epoch = 1
            log.debug("epoch %d is the last (max_epochs): validating it although check_val_every_n_epoch is %d",
                      max_epochs, every)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._final_epoch(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run resumed in the middle of its final epoch gets no on_train_epoch_start for it
        self._final_epoch(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # not on_train_epoch_end: ModelCheckpoint's own on_train_epoch_end runs after ours and must
        # still see 1 there, or it would save neither there nor at the validation's end
        if self._every is not None:
            trainer.check_val_every_n_epoch, self._every = self._every, None


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Gray image (H, W) min-max scaled, labels > 0 blended in palette colours; -> (H, W, 3) in [0, 1]."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    label = np.asarray(label).astype(np.int64)
    fg = label > 0
    colours = PALETTE[(label[fg] - 1) % len(PALETTE)]
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours
    return rgb


#: Column titles of the preview, left to right.
PREVIEW_COLUMNS = ("image", "ground truth", "prediction")


def class_colour(label: int) -> np.ndarray:
    """RGB in [0, 1] of a foreground label value (>= 1), as :func:`overlay` paints it."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def preview_figure(samples: list[tuple[Any, Any, Any]], class_names: list[str] | None = None,
                   panel_px: int = 256, dpi: int = 100) -> Any:
    """A matplotlib ``Figure``: one row per sample of [image, image + ground truth, image +
    prediction] under the column titles :data:`PREVIEW_COLUMNS`, and a legend of the foreground classes.

    Every panel is a square of ``panel_px`` pixels (at ``dpi``) laid out in pixels, so no tile is
    shrunk by the layout; images are drawn at their aspect ratio inside it. ``class_names[c]`` names
    label value ``c``; without names (or for values past the list) the legend says ``class c``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(class_names or [])
    rows, classes = [], max(len(names) - 1, 0)  # foreground classes in the legend
    for image, gt, pred in samples:
        image, gt, pred = (np.asarray(t.float() if isinstance(t, torch.Tensor) else t) for t in (image, gt, pred))
        rows.append((overlay(image, np.zeros_like(gt)), overlay(image, gt), overlay(image, pred)))
        classes = max(classes, int(gt.max()), int(pred.max()))
    pad, title_px, legend_px = 8, 28, 26 * (1 + max(classes - 1, 0) // 4) + 8
    width = 3 * panel_px + 4 * pad
    height = title_px + len(rows) * (panel_px + pad) + legend_px
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    for r, tiles in enumerate(rows):
        top = title_px + r * (panel_px + pad)  # pixels from the figure's top
        for c, tile in enumerate(tiles):
            left = pad + c * (panel_px + pad)
            ax = fig.add_axes((left / width, 1 - (top + panel_px) / height, panel_px / width, panel_px / height))
            ax.imshow(tile, interpolation="antialiased")
            ax.set_axis_off()
            if r == 0:  # column titles over the first row
                ax.set_title(PREVIEW_COLUMNS[c], fontsize=12, pad=4)
    if classes:
        handles = [Patch(facecolor=class_colour(c), edgecolor="black", linewidth=0.5) for c in range(1, classes + 1)]
        labels = [names[c] if c < len(names) else f"class {c}" for c in range(1, classes + 1)]
        fig.legend(handles, labels, loc="lower center", ncol=min(4, classes), frameon=False, fontsize=10,
                   handlelength=1.5, borderaxespad=0.3)
    return fig


def render_figure(fig: Any) -> np.ndarray:
    """A matplotlib ``Figure`` -> uint8 RGB array (H, W, 3) at the figure's own size and dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def preview_grid(samples: list[tuple[Any, Any, Any]], class_names: list[str] | None = None,
                 panel_px: int = 256) -> np.ndarray:
    """:func:`preview_figure` rendered: uint8 RGB (H, W, 3), what the PNG and TensorBoard show."""
    return render_figure(preview_figure(samples, class_names, panel_px=panel_px))


class ValidationImageGrid(pl.Callback):
    """Save a PNG preview of the first ``num_samples`` validation items each epoch, and log it to TensorBoard.

    The module's ``validation_step`` returns ``{"preview": (image2d, gt2d, pred2d)}``. One row per
    item: image / ground truth / prediction under those titles, ``panel_px`` pixels per panel, and
    a legend naming each class colour (names from the data module's preprocessing record, else the
    module's). Files go to ``<log_dir>/val_images/epoch_NNN.png``; a ``TensorBoardLogger`` gets the
    same picture as image ``val/preview``.
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1, panel_px: int = 256) -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"num_samples and every_n_epochs must be >= 1, got {num_samples}, {every_n_epochs}")
        if panel_px < 64:
            raise ValueError(f"panel_px must be >= 64, got {panel_px}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.panel_px = panel_px
        self._samples: list[tuple[Any, Any, Any]] = []

    def _due(self, trainer: pl.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.is_global_zero and self._due(trainer) and isinstance(outputs, dict) and "preview" in outputs:
            if len(self._samples) < self.num_samples:
                self._samples.append(outputs["preview"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective call under DDP: every rank
        if not trainer.is_global_zero or not self._samples:
            return
        grid = preview_grid(self._samples, _class_names(trainer, pl_module), panel_px=self.panel_px)
        self._samples = []
        out_dir = Path(log_dir) / "val_images"
        path = out_dir / f"epoch_{trainer.current_epoch:03d}.png"
        _save_png(grid, path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/preview", grid, global_step=trainer.global_step, dataformats="HWC")
        log.debug("validation preview written to %s", path)


def _class_names(trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str] | None:
    """Class names (index == label value): the data module's preprocessing record, else the module's."""
    for source in (getattr(trainer, "datamodule", None), getattr(pl_module, "hparams", None)):
        record = getattr(source, "preprocessing", None)  # hparams: Lightning's AttributeDict
        if record and record.get("class_names"):
            return [str(n) for n in record["class_names"]]
    return None


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
