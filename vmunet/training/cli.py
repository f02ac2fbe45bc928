"""``vmunet fit|validate|test`` through LightningCLI.

One module class (:class:`~vmunet.training.module.SegmentationModule`) and any LightningDataModule
chosen by ``data.class_path`` in the YAML. ``num_classes``/``in_chans`` are linked from the
instantiated data module into the model, so a config states them once. Always added:

* ``checkpoint`` -- a stock ``ModelCheckpoint``: best by ``val/dice`` (max); with ``save_last``
  a second stock one keeps ``last.ckpt`` after every epoch (:func:`~vmunet.training.callbacks.last_checkpoint`);
* ``image_grid`` -- :class:`~vmunet.training.callbacks.ValidationImageGrid`;
* :class:`~vmunet.training.callbacks.EpochSeed` (exact resume),
  :class:`~vmunet.training.callbacks.FinalEpochValidation` (the last epoch is always validated) and
  :class:`~vmunet.training.checkpoints.AtomicCheckpointIO` (checkpoints: temp file + fsync + rename);
* the model summary without FLOPs (:class:`~vmunet.training.progress.ParameterSummary`), also in
  place of a ``ModelSummary`` / ``RichModelSummary`` of the config;
* ``seed_everything: true``: a random seed, logged and stored in the run's config (:func:`random_run_seed`);
* unless ``trainer.logger`` is given: TensorBoard + CSV loggers sharing one run folder
  ``<trainer.default_root_dir>/version_N``, claimed atomically, or the checkpoint's own run
  folder when ``fit --ckpt_path`` resumes (:mod:`vmunet.training.runs`); checkpoints, config and
  reports go there too. The process holds the folder's lock while it runs (a second process
  training in the same folder is refused: exit 2, one line); a resumed run first removes the
  temporary checkpoint files an interrupted write left there;
* ``test`` / ``validate`` of a checkpoint in a run's ``checkpoints/`` folder write their reports
  (and ``config.test.yaml``) into that run, with no loggers and no new ``version_N`` folder;
  Lightning's own results table is off (``verbose`` false): ``vmunet test`` prints the project's
  one table on stdout (:func:`run_lightning_cli`);
* with ``trainer.enable_progress_bar: false``, or stderr not a terminal (a log file), one log
  line per epoch with the training loss and validation Dice (:class:`~vmunet.training.progress.EpochLine`),
  for ``test`` / ``validate`` one per evaluated case (:class:`~vmunet.training.progress.EvalCaseLine`).

A ``--ckpt_path`` is checked before anything starts (:func:`~vmunet.training.checkpoints.check_checkpoint`,
its data by :func:`~vmunet.training.ckpt_settings.check_checkpoint_data`; a resume also by
:func:`~vmunet.training.fit_checks.check_resume`, before the fit writes into the run),
and invalid values found while building the model / data / trainer are :class:`~vmunet.errors.ConfigError`:
``vmunet`` prints them as one line.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from vmunet.data.fileio import missing_folders, remove_empty_folders
from vmunet.errors import ConfigError, VmunetError
from vmunet.runtime import LOG_FORMAT
from vmunet.training.callbacks import (
    EpochSeed,
    FinalEpochValidation,
    ValidationImageGrid,
    last_checkpoint,
)
from vmunet.training.checkpoints import (
    AtomicCheckpointIO,
    check_checkpoint,
    check_no_later_checkpoints,
    is_file_path,
    read_training_checkpoint,
    remove_stale_temp_checkpoints,
)
from vmunet.training.ckpt_settings import check_checkpoint_data, reconcile
from vmunet.training.fit_checks import RESUME_KEYS
from vmunet.training.module import CHECKPOINT_REPLACES_WEIGHTS, SegmentationModule
from vmunet.training.noise import (
    RANK_ZERO_LOGGERS,
    SEED_LOGGER,
    HeldNotices,
    silence_lightning_notices,
)
from vmunet.training.parse_errors import parse_error_line, trainer_error_line
from vmunet.training.progress import EpochLine, EvalCaseLine, ParameterSummary, without_flops
from vmunet.training.runs import (
    RunLock,
    discard_unused_run,
    is_rank_zero,
    lock_run_dir,
    run_dir_of_checkpoint,
    run_loggers,
    select_run_dir,
)

log = logging.getLogger(__name__)

SUBCOMMANDS = ("fit", "validate", "test", "predict")
LINKED_KEYS = ("num_classes", "in_chans")  # model.<key> <- data.<key>, so a config states them once
#: Trainer precisions whose weights are not float32: the models' float32 parts (the selective scan,
#: the evaluation's slice inferer) then meet weights of another dtype and fail mid-run
UNSUPPORTED_PRECISIONS = ("64", "64-true", "16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/dice",
    "checkpoint.mode": "max",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": 1,
    "checkpoint.filename": "best-epoch{epoch:03d}-dice{val/dice:.4f}",
    "checkpoint.auto_insert_metric_name": False,
}


class VMUNetCLI(LightningCLI):
    """LightningCLI with the project's callbacks, loggers, checkpoint I/O and model <- data links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(ValidationImageGrid, "image_grid")
        for key in LINKED_KEYS:
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("test", "validate"):
            parser.set_defaults(verbose=False)  # Lightning's 19-row table: run_lightning_cli prints ours
        return parser

    _fresh_run: Path | None = None
    _fresh_root: Sequence[Path] = ()  # the folders claiming _fresh_run created above it
    _run_lock: RunLock | None = None

    _held: HeldNotices | None = None
    _held_ckpt: HeldNotices | None = None
    _given_model: dict[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        finally:
            for held in (self._held, self._held_ckpt):
                if held is not None and held.active:  # the configuration failed to build
                    held.drop()
            # the subcommand ran (or failed): the next run in this process may use the folder again.
            # (Without a subcommand, run=False, the caller trains later: the lock stays until exit.)
            if self._run_lock is not None and getattr(self, "subcommand", None) is not None:
                self._run_lock.release()

    def _discard_fresh_run(self) -> None:
        if self._fresh_run is not None and discard_unused_run(self._fresh_run):
            # and the folders claiming it created (a new trainer.default_root_dir): a refusal leaves none
            remove_empty_folders(self._fresh_root)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except MisconfigurationException as err:
            # a setting Lightning can judge only once the loaders exist (limit_train_batches 0.01 of
            # 3 batches): its message names the key; one line, not a traceback
            self._discard_fresh_run()
            raise ConfigError(f"invalid configuration: {' '.join(str(err).split())}") from err
        except BaseException:
            self._discard_fresh_run()
            raise

    def _set_seed(self) -> None:
        # Seeding stays where LightningCLI puts it (before the model's initial weights are drawn), but
        # its "Seed set to 42", like the Trainer's "GPU available ...", is shown once model, data and
        # trainer are built (after_instantiate_classes): a config error is then the only line printed.
        self._held = HeldNotices((SEED_LOGGER, *RANK_ZERO_LOGGERS, "vmunet.training.runs", __name__))
        node = self.config[self.subcommand] if self.subcommand else self.config
        if node.get("seed_everything") is True:
            # Lightning 2.6 seeds `true` with $PL_GLOBAL_SEED, else 0 (its docs: "a random seed"): draw
            # one, and store it where Lightning stores an integer seed, so config.yaml repeats the run
            seed = node["seed_everything"] = random_run_seed()
            seed_everything(seed, workers=True, verbose=False)  # what Lightning does with an integer
            if is_rank_zero():
                log.info("seed_everything: true: random seed %d (saved in the run's config; "
                         "--seed_everything %d repeats the run)", seed, seed)
            return
        try:
            super()._set_seed()
        except ValueError as err:  # Lightning's seed_everything: out of NumPy's range
            seed = self._get(self.config, "seed_everything")
            raise ConfigError(f"seed_everything: expected an integer in [0, 2**32), true (a random seed) or "
                              f"false (no seeding), got {seed!r}") from err

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as exc:  # jsonargparse's indented tree -> our one line
            raise ConfigError(_parse_error_line(exc, list(args or []), self._subcommand_parsers)) from None
        # the model settings the config files and command line state (not defaults): _parse_ckpt_path
        # compares them with a checkpoint's
        explicit = parser.parse_args(args, defaults=False)
        sub = explicit.get("subcommand")
        model = explicit.get(sub, {}).get("model") if sub else None
        self._given_model = dict(model) if model is not None else {}
        # LightningCLI reads --ckpt_path right after parsing (its hyper-parameters): check it first
        sub = self.config.get("subcommand")
        ckpt_path = self.config.get(sub, {}).get("ckpt_path") if sub else None
        if is_file_path(ckpt_path):
            read_training_checkpoint(ckpt_path)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI puts the checkpoint's hyper-parameters over every model.* setting of the
        # config; reconcile() says which of the user's settings win, and refuses conflicts. What the
        # checkpoint checks say (here and in instantiate_trainer, warnings too) is held until the
        # configuration is built, then shown after the other start-up lines ("Seed set to 42", ...)
        self._held_ckpt = HeldNotices(("vmunet.training.ckpt_settings", "vmunet.training.fit_checks"),
                                     upto=logging.WARNING)
        super()._parse_ckpt_path()
        sub = self.config.get("subcommand")
        ckpt_path = self.config.get(sub, {}).get("ckpt_path") if sub else None
        if not is_file_path(ckpt_path) or self._given_model is None:
            return
        saved = self.config[sub]["model"]
        for key, value in reconcile(self._given_model, dict(saved), subcommand=sub, ckpt_path=str(ckpt_path)).items():
            saved[key] = value

    def instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        from_checkpoint = is_file_path(self.config.get(sub, {}).get("ckpt_path") if sub else None)
        token = CHECKPOINT_REPLACES_WEIGHTS.set(from_checkpoint)  # model.weights: not read, not needed
        try:
            super().instantiate_classes()
        except VmunetError:
            raise
        except (ValueError, TypeError) as err:
            # our own error (bad data folder) wrapped by jsonargparse's Union check: say it plainly
            wrapped = _find_vmunet_error(err)
            if wrapped is not None:
                raise wrapped.with_traceback(None) from None
            # a value the class refused (``--model.lr -1``): the user's setting, not a bug; a
            # message that names its key (``model.lr: ...``) needs no preface
            named = re.match(r"^(model|data|trainer)[.:]", str(err))
            raise ConfigError(str(err) if named else f"invalid configuration: {err}") from err
        finally:
            CHECKPOINT_REPLACES_WEIGHTS.reset(token)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        for held in (self._held, self._held_ckpt):
            if held is not None:
                held.release()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        ckpt_path = self._get(self.config_init, "ckpt_path") if self.subcommand else None
        resume_step = resume_epoch = resume = None
        if is_file_path(ckpt_path):
            ckpt = check_checkpoint(ckpt_path, self.model, resume=self.subcommand == "fit")
            # the module checks the data when the Trainer restores the checkpoint; here already, before a
            # run folder is chosen or written (the module then does not repeat it)
            if isinstance(self.model, SegmentationModule):
                self.model.check_checkpoint_data(ckpt, self.datamodule, str(ckpt_path), self.subcommand)
            else:
                check_checkpoint_data(ckpt, self.datamodule, str(ckpt_path), self.subcommand)
            if self.subcommand == "fit":
                resume = {k: ckpt[k] for k in RESUME_KEYS if k in ckpt}  # (not the weights)
            resume_step, resume_epoch = int(ckpt.get("global_step", 0)), int(ckpt.get("epoch", 0))
            del ckpt
        self._check_before_trainer(cfg)
        evaluated = run_dir_of_checkpoint(ckpt_path) if self.subcommand in ("test", "validate") else None
        if evaluated is not None and cfg.get("logger") in (None, True) and "logger" not in kwargs:
            # reports next to the evaluated checkpoint, in its run; the run's own logs stay untouched
            kwargs["logger"] = False
            kwargs["default_root_dir"] = str(evaluated[0])
            self.save_config_kwargs["config_filename"] = f"config.{self.subcommand}.yaml"
            log.info("%s of %s: reports go to its run folder %s", self.subcommand, ckpt_path, evaluated[0])
        elif cfg.get("logger") in (None, True) and "logger" not in kwargs:
            root = cfg.get("default_root_dir") or "runs"
            self._fresh_root = missing_folders(root)  # (read before claiming: what this run creates)
            run_dir, version, resumed = select_run_dir(root, ckpt_path if self.subcommand == "fit" else None)
            if is_rank_zero():  # DDP: rank 0 holds the lock for the processes it launched
                self._run_lock = lock_run_dir(run_dir)  # before anything is written into the folder
            if resumed:  # (under the lock: no process is writing the folder's checkpoints now)
                check_no_later_checkpoints(ckpt_path, resume_step, resume_epoch)
            if not resumed:
                self._fresh_run = run_dir  # given back if the run fails before producing anything
            elif is_rank_zero():
                remove_stale_temp_checkpoints(run_dir)
            kwargs["logger"] = run_loggers(run_dir, version, resume_step if resumed else None)
            if resumed:
                # writing into the run's own checkpoints/ is the point of resuming: not worth Lightning's
                # "Checkpoint directory ... exists and is not empty" warning
                warnings.filterwarnings("ignore", message=rf"Checkpoint directory {re.escape(str(run_dir))}\S* "
                                        "exists and is not empty")
                # the run's first config stays config.yaml; each resume records its own next to it
                self.save_config_kwargs["config_filename"] = f"config.resumed-epoch{resume_epoch:03d}.yaml"
                log.info("resuming the run in %s (from epoch %d, step %d)", run_dir, resume_epoch, resume_step)
        user_callbacks = cfg.get("callbacks") or []
        callbacks = list(user_callbacks) if isinstance(user_callbacks, (list, tuple)) else [user_callbacks]
        best = self._get(self.config_init, "checkpoint", default=None)
        last = None
        if isinstance(best, ModelCheckpoint) and best.save_last:
            # Lightning 2.6 refreshes save_last only when the best changes: a second stock callback
            best.save_last = None
            last = last_checkpoint(best.dirpath)
            callbacks.append(last)
        callbacks.append(EpochSeed())
        max_time = cfg.get("max_time")
        if self.subcommand == "fit" and max_time is not None and not any(isinstance(c, Timer) for c in callbacks):
            # Lightning's max_time stops mid-epoch, validates and saves last.ckpt as if the epoch were
            # done: a resume then skipped the rest of that epoch (fewer steps, other weights, no word).
            # Checked at epoch ends instead, every checkpoint is at an epoch's end and a resume is exact.
            callbacks.append(_epoch_timer(max_time, cfg))
            kwargs["max_time"] = None
        callbacks.append(FinalEpochValidation())  # (its hooks run in fit only)
        # a stock ModelSummary / RichModelSummary of the config would print Lightning's FLOPs, 0 or too few
        # for our models: the same summary without them (ParameterSummary)
        callbacks = [without_flops(c) for c in callbacks]
        if cfg.get("enable_model_summary") is not False and not cfg.get("barebones"):
            if not any(isinstance(c, ModelSummary) for c in callbacks):
                callbacks.append(ParameterSummary())  # in place of Lightning's default summary
            # with the flag off Lightning adds no second one (nor its "already configured with model
            # summary" notice)
            kwargs["enable_model_summary"] = False
        if cfg.get("enable_progress_bar") is False or not sys.stderr.isatty():
            # no bar, or one drawn into a log file (where Rich shows only its final state): a line per
            # epoch (fit) or per evaluated case (test, validate)
            callbacks.append(EpochLine() if self.subcommand == "fit" else EvalCaseLine())
        kwargs.setdefault("callbacks", callbacks)
        plugins = cfg.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs.setdefault("plugins", [*plugins, AtomicCheckpointIO()])
        try:
            try:
                trainer = super().instantiate_trainer(**kwargs)
            except (MisconfigurationException, ValueError, TypeError) as err:
                # a trainer setting Lightning refused (devices abc, accelerator 3, max_time xx)
                line = trainer_error_line(str(err), dict(cfg))
                if line is not None:
                    raise ConfigError(line) from err
                if isinstance(err, MisconfigurationException):
                    raise ConfigError(f"trainer: {err}") from err
                raise
        except BaseException:
            self._discard_fresh_run()
            raise
        if resume is not None and isinstance(self.model, SegmentationModule):
            # the module checks a resume when the fit restores the checkpoint; here already, before the
            # fit writes its config or logs into the run's folder (the module then does not repeat it)
            try:
                self.model.check_resume(resume, trainer, str(ckpt_path))
            except BaseException:
                self._discard_fresh_run()
                raise
        if last is not None and last in trainer.callbacks and best in trainer.callbacks:
            # trainer.checkpoint_callback (ckpt_path="best") is the first ModelCheckpoint: the best one
            trainer.callbacks.remove(last)
            trainer.callbacks.insert(trainer.callbacks.index(best) + 1, last)
        return trainer


    def _check_before_trainer(self, cfg: Mapping[str, Any]) -> None:
        """The settings that meet only once model and data exist, checked before the Trainer prints
        its "GPU available ..." lines and before a run folder is claimed (the module checks them again
        in ``setup`` / ``configure_optimizers``, for runs started without this CLI)."""
        max_epochs = cfg.get("max_epochs")
        if isinstance(max_epochs, int) and max_epochs < -1:  # Lightning's Trainer refuses it too, later
            raise ConfigError(f"trainer.max_epochs: expected >= 1 (or -1: no limit), got {max_epochs}")
        if self.subcommand == "fit" and max_epochs == 0 and not cfg.get("fast_dev_run"):
            raise ConfigError("trainer.max_epochs: expected >= 1 (or -1: no limit), got 0; fit would train nothing")
        limit = cfg.get("limit_train_batches")
        if self.subcommand == "fit" and isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit == 0:
            # Lightning skips training without a word (and exits 0)
            raise ConfigError(f"trainer.limit_train_batches: expected > 0 (batches, or a fraction of the epoch), "
                              f"got {limit}; fit would train nothing")
        max_time = cfg.get("max_time")
        if self.subcommand == "fit" and max_time is not None and _epoch_timer(max_time, cfg).time_remaining() <= 0:
            # Lightning's Timer accepts a zero duration: the run stopped at once (exit 0, nothing learnt)
            raise ConfigError(f"trainer.max_time: expected a duration > 0 (DD:HH:MM:SS, e.g. 00:12:00:00), got "
                              f"{max_time}; fit would train nothing")
        clip = cfg.get("gradient_clip_val")
        if isinstance(clip, (int, float)) and not isinstance(clip, bool) and not (clip >= 0 and math.isfinite(clip)):
            # Lightning clips only when the value is > 0: a negative one was silently no clipping at all
            raise ConfigError(f"trainer.gradient_clip_val: expected a finite number > 0 (or 0 / null: no clipping), "
                              f"got {clip}")
        precision = str(cfg.get("precision"))
        if precision in UNSUPPORTED_PRECISIONS:
            # the models' layers mix float32 with the weights' dtype (the scan, the evaluation's slice inferer)
            raise ConfigError(f"trainer.precision: expected 32-true, 16-mixed or bf16-mixed (or null), got {precision}; "
                              "the models need float32 weights (mixed precision casts the computation instead)")
        if not isinstance(self.model, SegmentationModule):
            return
        rec = getattr(self.datamodule, "preprocessing", None)
        if rec is not None:
            self.model.check_data(rec)
        if self.subcommand == "fit" and not cfg.get("fast_dev_run") and isinstance(max_epochs, int):
            self.model.check_schedule(max_epochs)


def _epoch_timer(max_time: Any, cfg: Mapping[str, Any]) -> Timer:
    """``Timer(max_time)`` checked at the end of each training epoch; a duration Lightning refuses is
    the one-line ``trainer.max_time: expected ...`` error."""
    try:
        return Timer(duration=max_time, interval="epoch")
    except (MisconfigurationException, ValueError, TypeError) as err:
        raise ConfigError(trainer_error_line(str(err), dict(cfg)) or f"trainer.max_time: {err}") from err


def random_run_seed() -> int:
    """The seed of ``seed_everything: true``: random (the OS's entropy), in NumPy's range [0, 2**32).

    A process that Lightning's DDP launcher started (``LOCAL_RANK`` > 0) re-runs the command line
    and takes the seed the first process drew, which it inherits as ``$PL_GLOBAL_SEED``: all ranks
    must agree (the training order and augmentation derive from it). A non-first process of another
    launcher (torchrun, SLURM) has no such seed: refused, as its ranks would each draw their own.
    """
    if not is_rank_zero():
        inherited = os.environ.get("PL_GLOBAL_SEED")
        if inherited is None:
            raise ConfigError("seed_everything: true draws a random seed in each process, so the processes of "
                              "this multi-process launch would not share it; set an integer seed")
        return int(inherited)
    return secrets.randbelow(2**32)


def _find_vmunet_error(err: BaseException) -> VmunetError | None:
    seen: BaseException | None = err
    for _ in range(20):  # cause chains are short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, VmunetError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _parse_error_line(exc: ArgumentError, argv: list[str],
                      parsers: dict[str, LightningArgumentParser] | None = None) -> str:
    """``exc`` in one line: a linked key set by hand, else :func:`~vmunet.training.parse_errors.parse_error_line`
    with the subcommand's keys (for "did you mean")."""
    linked = _linked_key_message(exc)
    if linked is not None:
        return linked
    sub_parser = (parsers or {}).get(argv[0]) if argv else None
    keys = [a.dest for a in sub_parser._actions] if sub_parser is not None else []
    return parse_error_line(str(exc), argv, keys)


def _linked_key_message(exc: ArgumentError) -> str | None:
    """A plain message when the user set a key ``vmunet fit`` links from the data module
    (jsonargparse says only "argument data.num_classes --> model.num_classes: ... is not callable")."""
    for key in LINKED_KEYS:
        if f"data.{key} --> model.{key}" in str(exc):
            return (f"model.{key} is set from the data module (data.{key}: what the data set declares); "
                    f"remove model.{key} from the config and command line")
    return None


def run_lightning_cli(argv: Sequence[str], print_results: bool = True) -> VMUNetCLI:
    """Run ``fit|validate|test`` with LightningCLI arguments, e.g. ``["fit", "--config", "x.yaml"]``.

    Returns the CLI object (``.trainer``, ``.model``, ``.datamodule``) for programmatic callers.
    Config errors raise :class:`~vmunet.errors.ConfigError`, one line naming the key, what was
    expected and the value given (``vmunet`` prints it, exit status 2).
    ``print_results``: ``test`` / ``validate`` print the results table on stdout (once; callers
    that print their own summary pass False).
    """
    # known-harmless notices: `vmunet` passes sys.argv on explicitly; TensorBoard and CSV share a folder
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    silence_lightning_notices()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        if logging.getLogger(name).handlers:  # Lightning's own console handler: don't print twice
            logging.getLogger(name).propagate = False
    try:
        cli = _lightning_cli(argv)
    except ArgumentError as exc:  # one raised after parsing (a link): one line too
        raise ConfigError(_parse_error_line(exc, list(argv))) from None
    summary = getattr(cli.model, "last_summary", None)
    if print_results and argv and argv[0] in ("test", "validate") and summary is not None:
        from vmunet.training.reports import format_table

        print(format_table(summary).rstrip())
    return cli


def _lightning_cli(argv: Sequence[str]) -> VMUNetCLI:
    return VMUNetCLI(
        SegmentationModule,
        LightningDataModule,
        subclass_mode_data=True,
        args=list(argv),
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        # a misspelt key must fail, not silently match a longer one (`--trainer.max_epoch`); config
        # errors raise ArgumentError (VMUNetCLI.parse_arguments makes it our one-line ConfigError),
        # not print the 85-line usage and exit
        parser_kwargs={
            "allow_abbrev": False,
            "exit_on_error": False,
            **{c: {"allow_abbrev": False, "exit_on_error": False} for c in SUBCOMMANDS},
        },
        auto_configure_optimizers=False,
    )
