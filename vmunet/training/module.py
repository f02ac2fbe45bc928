"""The LightningModule: model + MONAI loss + AdamW/schedule + volume- or image-wise evaluation.

Evaluation follows the data module's ``eval_mode``:

* ``"volume"`` (Synapse): each val/test item is one whole case, ``image`` (1, D, C, h, w) at model
  size and ``label`` (1, D, H, W) at native size. Slices go through the project's one slice
  inferer (:class:`vmunet.inference.slicewise.SliceInferer`, the same as ``vmunet predict``):
  probabilities resampled back to (H, W) (or labels, ``resample="labels"``), the decision rule
  applied, and each case scored with :func:`vmunet.evaluation.metrics.case_metrics` (Dice, HD95 in
  voxels and mm; HD95 definition ``hd95``, medpy's pooled one by default).
* ``"image"`` (ISIC): batches of 2D images at model size; binary models feed one pooled confusion
  matrix (the papers' metrics) plus per-image Dice/IoU; multi-class models score each image as a
  2D "case".

Validation is summarized under the ``strict`` empty-mask convention (a collapsed model must not
look good in the logged curves); ``vmunet test`` under each of ``metric_conventions`` (the first
gives the unprefixed ``test/dice``..., the others ``test/<convention>/dice``...).

Per-case rows are gathered from every rank at epoch end and de-duplicated by case name, because
the distributed sampler pads the last round by repeating items; metrics are therefore identical
for 1 or N processes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from vmunet.errors import ConfigError, VmunetError
from vmunet.evaluation import metrics as M
from vmunet.inference.slicewise import SliceInferer, check_model_input_size, decide
from vmunet.training.callbacks import GiveBackNewLogDirs
from vmunet.training.ckpt_settings import check_checkpoint_data
from vmunet.training.fit_checks import (
    check_best_monitor,
    hide_missing_monitor_warnings,
    show_hidden_warnings,
    trainer_settings,
)
from vmunet.training.fit_checks import check_resume as check_resume_of
from vmunet.training.losses import DiceCELoss
from vmunet.training.reports import write_test_reports
from vmunet.training.runs import is_rank_zero, logger_dirs
from vmunet.training.schedulers import LRSchedule

log = logging.getLogger(__name__)

EvalMode = Literal["volume", "image"]


def _version() -> str:
    import vmunet

    return vmunet.__version__


def get_rng_states() -> dict[str, Any]:
    """torch / CUDA / NumPy / Python RNG states as tensors and plain lists (``weights_only``-loadable)."""
    import random

    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(state), gauss],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_states`."""
    import random

    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


#: True while ``vmunet fit|validate|test --ckpt_path`` builds its module: the checkpoint's weights replace
#: the initial ones at once, so ``weights`` (still recorded in the hyper-parameters, as trained) is not
#: read -- a run stays testable and resumable after its initialization file is moved or deleted.
CHECKPOINT_REPLACES_WEIGHTS: ContextVar[bool] = ContextVar("CHECKPOINT_REPLACES_WEIGHTS", default=False)


class TrainingDivergedError(VmunetError, FloatingPointError):
    """The training loss became NaN or infinite: a setting (learning rate, precision) the run cannot
    train with; ``vmunet fit`` says so in one line (exit 2) instead of a traceback."""


class CaseLoss:
    """The model as the slice inferer calls it, adding up the training loss of one case on the way.

    The inferer calls it once per slice batch, in slice order; each batch's logits (at model size)
    are scored with the training loss against the case's native-size label resized to model size
    by nearest neighbour (as the training transforms resize labels). :meth:`mean` is the case's
    loss: the batch losses averaged with the batch sizes as weights. No extra forward pass.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, to_target: Any, label: torch.Tensor,
                 model_hw: tuple[int, int]) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.target = to_target(F.interpolate(label[:, None].float(), size=model_hw, mode="nearest"))  # (D, 1, h, w)
        self.losses: list[tuple[torch.Tensor, int]] = []
        self.done = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        n = x.shape[0]
        self.losses.append((self.loss_fn(logits, self.target[self.done:self.done + n]), n))
        self.done += n
        return logits

    def mean(self) -> torch.Tensor:
        if self.done != len(self.target):
            raise RuntimeError(f"CaseLoss saw {self.done} slices, the case has {len(self.target)}")
        return sum(loss * n for loss, n in self.losses) / self.done


class SegmentationModule(pl.LightningModule):
    """VM-UNet segmentation training and evaluation.

    Args:
        model_name: a name from ``vmunet.models.list_models()``.
        num_classes: model output channels (1 = binary with sigmoid). Linked from the data module
            by ``vmunet fit``; required when building the module by hand.
        in_chans: model input channels (linked from the data module like ``num_classes``).
        model_kwargs: extra ``create_model`` overrides (``depths``, ``scan_backend``, ...).
        weights: optional initialization checkpoint for ``create_model`` (VMamba / VM-UNet / ours;
            read safely, layouts in docs/models.md).
        weights_strict: with False, load only what fits (e.g. everything but the head when the
            class count differs) and log what loaded, what was skipped and what kept its init.
        weights_entry: ``auto`` | ``model`` | ``model_ema``: which weights of a VMamba file to use
            (``auto`` prefers ``model_ema`` when present).
        preprocessing: the data module's preprocessing record; filled in from the data module at
            setup so the checkpoint alone rebuilds inference.
        lr, betas, weight_decay: AdamW settings (paper: 1e-3, (0.9, 0.999), 1e-2).
        scheduler: ``cosine`` | ``poly`` | ``constant``, stepped once per epoch.
        t_max, eta_min, poly_power, warmup_epochs, warmup_start_factor: schedule settings.
        lambda_ce, lambda_dice: loss weights (paper 1:1); CE is BCE for binary models.
        class_weights: optional per-class CE/Dice weights (``num_classes`` entries).
        dice_include_background: include background in the multi-class Dice term.
        batch_dice: Dice over the whole batch (VM-UNet Synapse) instead of per sample (VM-UNet ISIC).
        dice_squared_pred: square the Dice denominator terms (VM-UNet Synapse).
        dice_smooth_nr, dice_smooth_dr: Dice smoothing in numerator / denominator (VM-UNet:
            1e-5 Synapse, 1 ISIC). See :mod:`vmunet.training.losses`.
        slice_batch_size: slices per forward pass in volume-wise evaluation.
        val_hd95: compute HD95 during validation too (test always does; it costs CPU time). Never
            in Lightning's sanity check, whose values are discarded.
        threshold: foreground probability threshold for binary models (paper 0.5, ``p >= threshold``).
        resample: what volume-wise evaluation resizes back to native size: ``"probabilities"``
            (bilinear, then the decision rule) or ``"labels"`` (the original VM-UNet Synapse test:
            decide at model size, nearest-neighbour label map back). Both this and ``threshold``
            are stored in the checkpoint's preprocessing record, so ``vmunet predict`` decides alike.
        hd95: HD95 definition, ``pooled`` (medpy, the papers) or ``monai``.
        metric_conventions: empty-mask conventions of ``vmunet test`` reports, ``strict`` and/or
            ``paper`` (first = primary); validation always uses ``strict``.
    """

    def __init__(
        self,
        model_name: str = "vmunet",
        num_classes: int | None = None,
        in_chans: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        weights: str | None = None,
        weights_strict: bool = True,
        weights_entry: Literal["auto", "model", "model_ema"] = "auto",
        preprocessing: dict[str, Any] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-2,
        scheduler: Literal["cosine", "poly", "constant"] = "cosine",
        t_max: int = 100,
        eta_min: float = 1e-5,
        poly_power: float = 0.9,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
        lambda_ce: float = 1.0,
        lambda_dice: float = 1.0,
        class_weights: list[float] | None = None,
        dice_include_background: bool = True,
        batch_dice: bool = True,
        dice_squared_pred: bool = False,
        dice_smooth_nr: float = 1e-5,
        dice_smooth_dr: float = 1e-5,
        slice_batch_size: int = 32,
        val_hd95: bool = True,
        threshold: float = 0.5,
        resample: Literal["probabilities", "labels"] = "probabilities",
        hd95: Literal["pooled", "monai"] = "pooled",
        metric_conventions: list[Literal["strict", "paper"]] | None = None,
    ) -> None:
        super().__init__()
        if num_classes is None or in_chans is None:
            raise ValueError(
                "model.num_classes and model.in_chans are required (vmunet fit links them from the "
                "data module; set them when building SegmentationModule by hand)"
            )
        if num_classes < 1 or in_chans < 1:
            raise ValueError(f"num_classes and in_chans must be >= 1, got {num_classes}, {in_chans}")
        finite = {"lr": lr, "weight_decay": weight_decay, "eta_min": eta_min, "poly_power": poly_power,
                  "warmup_start_factor": warmup_start_factor, "lambda_ce": lambda_ce, "lambda_dice": lambda_dice,
                  "dice_smooth_nr": dice_smooth_nr, "dice_smooth_dr": dice_smooth_dr, "threshold": threshold}
        for name, value in finite.items():  # NaN/inf would train on NaN (or not at all), silently
            if not math.isfinite(value):
                raise ValueError(f"model.{name}: expected a finite number, got {value}")
        if not lr > 0:
            raise ValueError(f"model.lr: expected > 0, got {lr}")
        for name in ("lambda_ce", "lambda_dice"):  # a negative weight would maximise that loss
            if finite[name] < 0:
                raise ValueError(f"model.{name}: expected >= 0, got {finite[name]}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(
                f"model.class_weights: expected {num_classes} entries (one per class), got {len(class_weights)}"
            )
        if class_weights is not None and not (all(math.isfinite(w) and w >= 0 for w in class_weights)
                                              and any(w > 0 for w in class_weights)):
            raise ValueError(f"model.class_weights: expected finite weights >= 0, not all 0, got {list(class_weights)}")
        if lambda_ce == 0 and lambda_dice == 0:  # a zero loss: nothing would be learnt
            raise ValueError(f"model.lambda_ce + model.lambda_dice: expected > 0 (a loss to train on), "
                             f"got {lambda_ce} + {lambda_dice}")
        if not (len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"model.betas: expected two numbers in [0, 1), got {list(betas)}")
        if not weight_decay >= 0:
            raise ValueError(f"model.weight_decay: expected >= 0, got {weight_decay}")
        clash = sorted({"num_classes", "in_chans"} & set(model_kwargs or {}))
        if clash:  # create_model would get them twice; the data module decides them
            raise ValueError(f"model.model_kwargs: {clash} come from the data module (model.num_classes, "
                             f"model.in_chans); remove them from model_kwargs")
        if slice_batch_size < 1:
            raise ValueError(f"model.slice_batch_size must be >= 1, got {slice_batch_size}")
        try:
            M.check_hd95_definition(hd95)
            for name in metric_conventions or ["strict"]:
                M.check_convention(name)
        except ValueError as err:
            raise ValueError(f"model: {err}") from None
        if metric_conventions is not None and (not metric_conventions or len(set(metric_conventions)) != len(metric_conventions)):
            raise ValueError(f"model.metric_conventions: expected distinct names, got {metric_conventions}")
        self.save_hyperparameters()
        self._inferer(image_size=(1, 1))  # validates threshold and resample at construction
        from vmunet.models import create_model, list_models

        if model_name not in list_models():
            raise ValueError(f"model.model_name: expected one of {', '.join(list_models())}, got {model_name}")
        try:
            initial = None if CHECKPOINT_REPLACES_WEIGHTS.get() else weights
            self.model = create_model(
                model_name, num_classes=num_classes, in_chans=in_chans, weights=initial, strict=weights_strict,
                weights_entry=weights_entry, **(model_kwargs or {})
            )
        except (TypeError, ValueError) as err:  # the family refused an option: model_kwargs (weights errors pass)
            if isinstance(err, VmunetError) or not model_kwargs:
                raise
            raise ValueError(f"model.model_kwargs: {err}") from err
        self.loss_fn = self._build_loss()
        # LRSchedule validates its arguments; fail at construction, not at the first epoch
        self._schedule(total=None if scheduler != "poly" else max(warmup_epochs + 1, 2))
        self._rows: list[dict[str, Any]] = []
        self._confusion = M.BinaryConfusion(threshold=threshold)
        self.last_summary: dict[str, Any] | None = None
        self._fit_settings: dict[str, Any] | None = None  # trainer_settings of the fit, for its checkpoints
        # the checks vmunet fit|validate|test made before the Trainer started: (check, stage, abspath(ckpt_path))
        self._checked_before: set[tuple[str, str, str]] = set()
        self._hidden_warnings: list[Any] = []  # Lightning's warnings hidden during this fit (check_best_monitor)

    # ----------------------------------------------------------------------------- building
    @property
    def binary(self) -> bool:
        return self.hparams.num_classes == 1

    def _build_loss(self) -> nn.Module:
        hp = self.hparams
        return DiceCELoss(hp.num_classes, lambda_ce=hp.lambda_ce, lambda_dice=hp.lambda_dice,
                          squared_pred=hp.dice_squared_pred, smooth_nr=hp.dice_smooth_nr,
                          smooth_dr=hp.dice_smooth_dr, batch_dice=hp.batch_dice,
                          include_background=hp.dice_include_background, class_weights=hp.class_weights)

    def _schedule(self, total: int | None) -> LRSchedule:
        hp = self.hparams
        return LRSchedule(hp.scheduler, base_lr=hp.lr, eta_min=hp.eta_min, t_max=hp.t_max, total=total,
                          power=hp.poly_power, warmup_epochs=hp.warmup_epochs,
                          warmup_start_factor=hp.warmup_start_factor)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # fused AdamW updates all parameters in one kernel instead of a Python loop over tensors
        # (3-4x faster optimiser step on CPU, same update up to rounding); torch fuses CPU/CUDA only
        params = list(self.parameters())
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        opt = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay,
                                fused=fused or None)
        schedule = self.check_schedule(self.trainer.max_epochs if self._trainer is not None else None)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def check_schedule(self, max_epochs: int | None) -> LRSchedule:
        """The schedule for a run of ``max_epochs`` (None or <= 0: unknown); :class:`ConfigError` if the
        settings do not fit that length (the poly schedule needs it). ``vmunet fit`` calls this before
        building the Trainer, and ``configure_optimizers`` with the Trainer's own length."""
        try:
            return self._schedule(max_epochs if max_epochs and max_epochs > 0 else None)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    def setup(self, stage: str) -> None:
        """Take the preprocessing record from the data module and check it matches the model; note the
        fit's Trainer settings (before a callback adjusts any mid-run) for its checkpoints."""
        if self._trainer is not None:
            self._fit_settings = trainer_settings(self.trainer) if stage == "fit" else None
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        rec = getattr(dm, "preprocessing", None)
        if rec is None:
            return
        self.check_data(rec)
        self.hparams["preprocessing"] = {**dict(rec), **self.decision_record()}

    def check_data(self, rec: Mapping[str, Any]) -> None:
        """:class:`ConfigError` unless the data module's preprocessing record fits the model (class and
        channel counts, input size); ``vmunet fit`` calls this before building the Trainer too."""
        for key in ("num_classes", "in_chans"):
            if int(rec[key]) != int(self.hparams[key]):
                raise ConfigError(
                    f"model.{key}={self.hparams[key]} does not match the data module's {key}={rec[key]}"
                )
        check_model_input_size(self.model, rec["image_size"], "data.image_size")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the self-contained inference record (see the checkpoint contract in docs/training.md)."""
        hp = self.hparams
        kwargs = dict(hp.model_kwargs or {})
        kwargs.update(num_classes=int(hp.num_classes), in_chans=int(hp.in_chans))
        checkpoint["vmunet"] = {
            "model_name": str(hp.model_name),
            "model_kwargs": kwargs,
            "preprocessing": None if hp.preprocessing is None else {**dict(hp.preprocessing), **self.decision_record()},
            "version": _version(),
        }
        if self._fit_settings is not None:  # compared when a fit resumes from this checkpoint
            checkpoint["vmunet"]["trainer"] = dict(self._fit_settings)
        checkpoint["rng_states"] = get_rng_states()

    def check_checkpoint_data(self, checkpoint: Mapping[str, Any], datamodule: Any, ckpt_path: str,
                              stage: str) -> None:
        """:func:`vmunet.training.ckpt_settings.check_checkpoint_data` of a ``stage`` (``fit``, ``validate``,
        ``test``) from ``checkpoint`` with ``datamodule``: otherwise prepared data refused, a resume's
        changed data settings named. ``on_load_checkpoint`` calls it when the Trainer restores a
        checkpoint; ``vmunet fit|validate|test`` before the Trainer starts (nothing written into the run
        before a refusal), and the hook then does not repeat it."""
        check_checkpoint_data(checkpoint, datamodule, str(ckpt_path), stage)
        self._checked_before.add(("data", stage, os.path.abspath(ckpt_path)))

    def check_resume(self, checkpoint: Mapping[str, Any], trainer: pl.Trainer, ckpt_path: str) -> None:
        """:func:`vmunet.training.fit_checks.check_resume` of a ``fit`` from ``checkpoint`` under ``trainer``.

        ``on_load_checkpoint`` calls it when a fit restores a checkpoint (``Trainer.fit(..., ckpt_path=X)``);
        ``vmunet fit`` calls it before the fit starts, so that a refused resume writes nothing into the
        run's folder, and the hook then does not repeat it."""
        check_resume_of(checkpoint, trainer, str(ckpt_path))
        self._checked_before.add(("resume", "fit", os.path.abspath(ckpt_path)))

    def configure_callbacks(self) -> list[pl.Callback]:
        """:class:`~vmunet.training.callbacks.GiveBackNewLogDirs` with the log folders this run's loggers are
        about to create (Lightning calls this hook before it starts them): a run refused in a hook below
        (``on_load_checkpoint``, ``setup``) leaves no empty ``lightning_logs/version_N`` behind."""
        dirs = logger_dirs(self.trainer.loggers) if is_rank_zero() else None
        kept = next((c for c in self.trainer.callbacks if isinstance(c, GiveBackNewLogDirs)), None)
        if kept is not None:  # the same Trainer runs again (fit, then test): renewed, not added twice (which
            kept.dirs = dirs  # Lightning would announce as "callbacks ... will override existing callbacks")
            return []
        return [GiveBackNewLogDirs(dirs)]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the data of a fit / validate / test from a checkpoint (:meth:`check_checkpoint_data`) and a
        resumed fit (:meth:`check_resume`), then restore the RNG streams of a resumed single-process run
        (shuffling, dropout, augmentation)."""
        fn = self.trainer.state.fn if self._trainer is not None else None  # (None: load_from_checkpoint)
        if fn in (TrainerFn.FITTING, TrainerFn.VALIDATING, TrainerFn.TESTING):
            path = str(self.trainer.ckpt_path)
            where = (fn.value, os.path.abspath(path))
            done, self._checked_before = self._checked_before, set()
            if ("data", *where) not in done:
                check_checkpoint_data(checkpoint, self.trainer.datamodule, path, fn.value)
            if fn == TrainerFn.FITTING and ("resume", *where) not in done:
                check_resume_of(checkpoint, self.trainer, path)
        states = checkpoint.get("rng_states")
        if states is None:
            return
        if self._trainer is not None and self.trainer.world_size > 1:
            # one checkpoint holds rank 0's streams; giving them to every rank would correlate them
            log.info("resume under %d processes: RNG streams are re-seeded, not restored", self.trainer.world_size)
            return
        set_rng_states(states)

    # ----------------------------------------------------------------------------- training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _target(self, label: torch.Tensor) -> torch.Tensor:
        return label.float() if self.binary else label.long()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss_fn(logits, self._target(batch["label"]))
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} (step "
                f"{self.global_step}): the training diverged; lower model.lr, clip gradients "
                "(trainer.gradient_clip_val) or train in 32-bit precision; the checkpoints of finished epochs are kept"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_train_start(self) -> None:
        show_hidden_warnings(self._hidden_warnings)  # (a fit that failed left them hidden: not its teardown)
        # before the first step; the validation loader is known by now. Having said why no best checkpoint
        # is written, Lightning's later "could not find the monitored key ... Did you call log(...)"
        # about the same monitors would mislead: hidden for this fit only
        self._hidden_warnings = hide_missing_monitor_warnings(check_best_monitor(self.trainer))

    def teardown(self, stage: str) -> None:
        show_hidden_warnings(self._hidden_warnings)
        self._hidden_warnings = []

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers()
        self.log("train/lr", opt.param_groups[0]["lr"], on_step=False, on_epoch=True)

    # ----------------------------------------------------------------------------- evaluation
    def _eval_mode(self) -> EvalMode:
        dm = getattr(self.trainer, "datamodule", None)
        mode = getattr(dm, "eval_mode", None)
        if mode not in ("volume", "image"):
            raise ValueError(f"the data module's eval_mode must be 'volume' or 'image', got {mode!r}")
        return mode

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) if self.binary else torch.softmax(logits.float(), dim=1)

    def _labels(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) probabilities -> (N, H, W) int label map: the slice inferer's decision rule."""
        return decide(probs, self.hparams.threshold)

    def _inferer(self, image_size: Sequence[int]) -> SliceInferer:
        hp = self.hparams
        return SliceInferer(image_size=tuple(image_size), threshold=float(hp.threshold), resample=hp.resample,
                            batch_size=int(hp.slice_batch_size))

    def decision_record(self) -> dict[str, Any]:
        """The decision-rule fields this module adds to the preprocessing record."""
        return {"threshold": float(self.hparams.threshold), "resample": str(self.hparams.resample)}

    @torch.no_grad()
    def predict_volume(self, image: torch.Tensor, out_hw: Sequence[int], model: Any = None) -> torch.Tensor:
        """Segment a (D, C, h, w) stack (at model size) slice-batch-wise -> (D, H, W) labels at
        ``out_hw``, through :class:`~vmunet.inference.slicewise.SliceInferer` (as ``vmunet predict``).
        ``model``: what the inferer calls instead of ``self.model`` (validation passes a
        :class:`CaseLoss` around it)."""
        out = self._inferer(image.shape[-2:])(model or self.model, image, tuple(out_hw))
        return torch.from_numpy(out.labels).to(image.device)

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> dict[str, Any]:
        hd95 = stage == "test" or (self.hparams.val_hd95 and not self._sanity_checking())
        if self._eval_mode() == "volume":
            if batch["image"].shape[0] != 1:
                raise ValueError(f"volume-wise evaluation needs batch size 1, got {batch['image'].shape[0]}")
            image, label = batch["image"][0], batch["label"][0]
            case_loss = CaseLoss(self.model, self.loss_fn, self._target, label, tuple(image.shape[-2:]))
            pred = self.predict_volume(image, label.shape[-2:], case_loss)
            self.log(f"{stage}/loss", case_loss.mean(), on_epoch=True, batch_size=1, sync_dist=True)
            spacing = batch.get("spacing")
            spacing = None if spacing is None else [float(s) for s in spacing[0]]
            self._score_case(pred.cpu().numpy(), label.cpu().numpy(), str(batch["case"][0]), spacing, hd95)
            mid = int((label > 0).flatten(1).sum(1).argmax())  # the slice with most foreground
            img2d = F.interpolate(image[mid:mid + 1, :1].float(), size=tuple(label.shape[-2:]), mode="bilinear")
            return {"preview": (img2d[0, 0].cpu(), label[mid].cpu(), pred[mid].cpu())}
        logits = self(batch["image"])
        label = batch["label"]
        loss = self.loss_fn(logits, self._target(label))
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=label.shape[0], sync_dist=True)
        ids = [str(c) for c in batch["case"]]
        probs = self._probabilities(logits)
        if self.binary:
            self._confusion.update(probs.cpu().numpy(), label.float().cpu().numpy(), ids)
        pred = self._labels(probs)
        if not self.binary:
            for i, case in enumerate(ids):
                self._score_case(pred[i].cpu().numpy(), label[i, 0].cpu().numpy(), case, None, hd95)
        return {"preview": (batch["image"][0, 0].cpu(), label[0, 0].cpu(), pred[0].cpu())}

    def _sanity_checking(self) -> bool:
        """Lightning's sanity check (``num_sanity_val_steps`` batches before training) is running.
        It runs the whole validation path, but Lightning discards what it logs and nothing else
        reads it, so HD95 is skipped there: an untrained model's noisy masks make HD95 by far the
        slowest part of validation (76 s for two 512x512x32 volumes in a GPU run, the training
        epoch taking 6 s). Dice, the case rows and the summary still run and catch their errors."""
        return self._trainer is not None and self.trainer.sanity_checking

    def _score_case(self, pred: np.ndarray, gt: np.ndarray, case: str, spacing, hd95: bool) -> None:
        rows = M.case_metrics(pred, gt, self._class_names(), spacing=spacing,
                              hd95=self.hparams.hd95 if hd95 else None)
        self._rows.extend({"case": case, **r} for r in rows)

    def _class_names(self) -> list[str]:
        rec = self.hparams.preprocessing
        if rec is not None:
            return list(rec["class_names"])
        n = max(2, int(self.hparams.num_classes))
        return ["background", *[f"class_{i}" for i in range(1, n)]]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def on_test_epoch_start(self) -> None:
        self._reset_eval()

    def _reset_eval(self) -> None:
        self._rows = []
        self._confusion = M.BinaryConfusion(threshold=self.hparams.threshold)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        summary = self._finish_eval("test")
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir  # a collective call under DDP
        if self.trainer.is_global_zero:
            write_test_reports(summary, log_dir)

    def _gather(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return items
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, items)
        return [row for part in out for row in part]

    def _conventions(self, stage: str) -> list[str]:
        return ["strict"] if stage == "val" else list(self.hparams.metric_conventions or ["strict"])

    def _finish_eval(self, stage: str) -> dict[str, Any]:
        """Gather rows from all ranks, de-duplicate, summarize, log; returns the summary.

        The summary's top-level ``per_class``/``mean``/``per_image`` use the primary convention;
        ``by_convention`` holds every requested one. Each names its convention and HD95 definition.
        """
        names = self._class_names()
        conventions = self._conventions(stage)
        summary: dict[str, Any] = {"stage": stage, "class_names": names, "conventions": conventions,
                                   "by_convention": {}}
        scalars: dict[str, float] = {}
        rows = M.dedup_rows(self._gather(self._rows), ("case", "class"))
        if rows:
            summary["cases"] = rows
            for conv in conventions:
                cases = M.summarize_cases(rows, names, conv)
                summary["by_convention"][conv] = cases
                prefix = "" if conv == conventions[0] else f"{conv}/"
                mean = cases["mean"]
                scalars.update({f"{prefix}dice": mean["dice"], f"{prefix}hd95": mean["hd95"],
                                f"{prefix}misses": float(mean["misses"]),
                                f"{prefix}false_positives": float(mean["false_positives"])})
                if mean["hd95_mm"] is not None:
                    scalars[f"{prefix}hd95_mm"] = mean["hd95_mm"]
                for name, vals in cases["per_class"].items():
                    scalars[f"{prefix}dice_{name}"] = vals["dice"]
                    scalars[f"{prefix}hd95_{name}"] = vals["hd95"]
            summary.update(summary["by_convention"][conventions[0]])
        if self.binary:
            conf = M.BinaryConfusion.from_images(self._gather(self._confusion.images), self.hparams.threshold)
            if conf.images:
                pooled = conf.pooled()
                summary.update(pooled=pooled, num_images=len(conf.images), images=conf.images)
                scalars.update(pooled)  # "dice" here is the papers' pooled Dice/F1 (no empty-mask rule involved)
                for conv in conventions:
                    per_image = conf.per_image(conv)
                    summary["by_convention"].setdefault(conv, {"convention": conv})["per_image"] = per_image
                    prefix = "" if conv == conventions[0] else f"{conv}/"
                    scalars[f"{prefix}image_dice"], scalars[f"{prefix}image_iou"] = per_image["dice"], per_image["iou"]
                summary["per_image"] = summary["by_convention"][conventions[0]]["per_image"]
                summary["convention"] = conventions[0]
        scalars = {k: v for k, v in scalars.items() if not (isinstance(v, float) and math.isnan(v))}
        # values are identical on every rank after the gather, so no further reduction is needed
        for key, value in scalars.items():
            self.log(f"{stage}/{key}", float(value), prog_bar=key == "dice", sync_dist=False, rank_zero_only=False)
        summary["scalars"] = scalars
        self.last_summary = summary
        self._rows = []
        return summary
