"""``vmunet fit|validate|test`` through LightningCLI.

One module class (:class:`~vmunet.training.module.SegmentationModule`) and any LightningDataModule
chosen by ``data.class_path`` in the YAML. ``num_classes``/``in_chans`` are linked from the
instantiated data module into the model, so a config states them once. Always added:

* ``checkpoint`` -- best by ``val/dice`` (max) plus ``last.ckpt`` after every epoch;
* ``image_grid`` -- :class:`~vmunet.training.callbacks.ValidationImageGrid`;
* unless ``trainer.logger`` is given: TensorBoard + CSV loggers sharing one
  ``<trainer.default_root_dir>/version_N`` folder (checkpoints, config, reports go there too).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from vmunet.training.callbacks import BestAndLastCheckpoint, ValidationImageGrid
from vmunet.training.module import SegmentationModule
from vmunet.training.noise import silence_lightning_notices

log = logging.getLogger(__name__)

SUBCOMMANDS = ("fit", "validate", "test", "predict")
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/dice",
    "checkpoint.mode": "max",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": 1,
    "checkpoint.filename": "best-epoch{epoch:03d}-dice{val/dice:.4f}",
    "checkpoint.auto_insert_metric_name": False,
}


class VMUNetCLI(LightningCLI):
    """LightningCLI with the project's callbacks, loggers and model <- data links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(ValidationImageGrid, "image_grid")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.in_chans", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        if cfg.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = default_loggers(cfg.get("default_root_dir") or "runs")
        return super().instantiate_trainer(**kwargs)


def default_loggers(root: str) -> list:
    """TensorBoard + CSV loggers writing to the same ``<root>/version_N`` (TensorBoard picks N)."""
    tb = TensorBoardLogger(save_dir=root, name="", default_hp_metric=False)
    csv = CSVLogger(save_dir=root, name="", version=tb.version)
    return [tb, csv]


def run_lightning_cli(argv: Sequence[str]) -> VMUNetCLI:
    """Run ``fit|validate|test`` with LightningCLI arguments, e.g. ``["fit", "--config", "x.yaml"]``.

    Returns the CLI object (``.trainer``, ``.model``, ``.datamodule``) for programmatic callers.
    Config errors exit with status 2 and a message naming the offending key (jsonargparse).
    """
    # known-harmless notices: `vmunet` passes sys.argv on explicitly; TensorBoard and CSV share a folder
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    silence_lightning_notices()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        if logging.getLogger(name).handlers:  # Lightning's own console handler: don't print twice
            logging.getLogger(name).propagate = False
    try:
        return _lightning_cli(argv)
    except ArgumentError as exc:
        # A config typo: the error line first (jsonargparse would print an 85-line usage before it).
        sub = argv[0] if argv else "fit"
        print(f"vmunet {sub}: error: {exc}\n(`vmunet {sub} --help` lists the accepted options)",
              file=sys.stderr)
        raise SystemExit(2) from None


def _lightning_cli(argv: Sequence[str]) -> VMUNetCLI:
    return VMUNetCLI(
        SegmentationModule,
        LightningDataModule,
        subclass_mode_data=True,
        args=list(argv),
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        # a misspelt key must fail, not silently match a longer one (`--trainer.max_epoch`); config
        # errors raise ArgumentError so `vmunet` prints the error line, not the 85-line usage first
        parser_kwargs={
            "allow_abbrev": False,
            "exit_on_error": False,
            **{c: {"allow_abbrev": False, "exit_on_error": False} for c in SUBCOMMANDS},
        },
        auto_configure_optimizers=False,
    )
