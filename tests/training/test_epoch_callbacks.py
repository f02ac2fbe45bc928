"""FinalEpochValidation and EpochSeed hook by hook, on a stand-in trainer (the attributes Lightning's
loops read): which epoch gets the extra validation, that the interval comes back, and that every
(epoch, rank) draws its own random numbers. The whole-run checks: test_fit_cli_settings.py
(final epoch validated) and test_resume_exact.py (bit-identical resume)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vmunet.training.callbacks import EpochSeed, FinalEpochValidation


def _trainer(max_epochs: int, every: int, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(max_epochs=max_epochs, check_val_every_n_epoch=every, current_epoch=epoch)


def _validated(max_epochs: int, every: int) -> list[int]:
    """The 0-based epochs validated over a whole run with the callback (Lightning's rule
    ``(e + 1) % interval == 0`` at each epoch, with the interval the callback leaves)."""
    cb, trainer, out = FinalEpochValidation(), _trainer(max_epochs, every, 0), []
    cb.on_train_start(trainer, None)
    for e in range(max_epochs):
        trainer.current_epoch = e
        cb.on_train_epoch_start(trainer, None)
        if (e + 1) % trainer.check_val_every_n_epoch == 0:
            out.append(e)
    cb.on_train_end(trainer, None)
    assert trainer.check_val_every_n_epoch == every  # the configured interval is back
    return out


@pytest.mark.parametrize("max_epochs,every,expected", [
    (7, 5, [4, 6]),        # the last two epochs were never scored
    (3, 10, [2]),          # shorter than the interval: validated once, at the end
    (10, 5, [4, 9]),       # a multiple: Lightning's own schedule
    (4, 1, [0, 1, 2, 3]),
    (1, 2, [0]),
])
def test_the_final_epoch_is_validated_and_the_interval_restored(max_epochs, every, expected):
    assert _validated(max_epochs, every) == expected


def test_a_run_resumed_inside_its_final_epoch_validates_it():
    # resumed mid-epoch: Lightning calls on_train_start but no on_train_epoch_start for that epoch
    cb, trainer = FinalEpochValidation(), _trainer(max_epochs=3, every=10, epoch=2)
    cb.on_train_start(trainer, None)
    assert trainer.check_val_every_n_epoch == 1
    cb.on_train_end(trainer, None)
    assert trainer.check_val_every_n_epoch == 10


def _draws(epoch: int, rank: int) -> tuple[float, float, float]:
    EpochSeed(seed=123).on_train_epoch_start(SimpleNamespace(current_epoch=epoch, global_rank=rank), None)
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_epoch_seed_repeats_an_epoch_and_separates_epochs_and_ranks():
    cells = [(e, r) for e in range(3) for r in range(3)]
    draws = {cell: _draws(*cell) for cell in cells}
    assert all(_draws(*cell) == draws[cell] for cell in cells)  # a resumed epoch draws the same numbers
    for k in range(3):  # python, numpy and torch each: nine different streams
        assert len({d[k] for d in draws.values()}) == len(cells)
