"""What the three data modules share (:mod:`vmunet.data.datamodule`): worker cap, seeded batches
whatever the worker count, seeded validation hold-out, one-line errors for a missing data folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vmunet.data.datamodule import held_out_cases
from vmunet.data.errors import LayoutError
from vmunet.data.isic import ISICDataModule
from vmunet.data.nifti import NiftiDataModule
from vmunet.data.synapse import SynapseDataModule

MODULES = {  # name -> (class, data set fixture, settings that keep it small)
    "synapse": (SynapseDataModule, "synapse_root", {"image_size": 32, "val_cases": 1}),
    "isic": (ISICDataModule, "isic_root", {"image_size": 32}),
    "nifti": (NiftiDataModule, "nifti_ct", {"image_size": 24, "val_cases": 1, "foreground_oversample": 0.5}),
}


def _dm(request, name, **kw):
    cls, fixture, small = MODULES[name]
    return cls(str(request.getfixturevalue(fixture)), **{"batch_size": 4, **small, **kw})


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_loader_caps_the_workers_at_the_cores(request, name):
    dm = _dm(request, name, num_workers=_cores() + 3)
    dm.setup(None)
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}
    assert {k: v.num_workers for k, v in loaders.items()} == dict.fromkeys(loaders, _cores())
    assert loaders["train"].persistent_workers and not loaders["test"].persistent_workers


@pytest.mark.parametrize("name", sorted(MODULES))
def test_same_seed_same_batches_with_or_without_workers(request, name, monkeypatch):
    def epoch(seed, workers):
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))  # what seed_everything(seed) exports
        dm = _dm(request, name, num_workers=workers)
        dm.setup("fit")
        # the whole (tiny) epoch: a half-read loader's workers take seconds to shut down
        return [(b["image"], b["label"]) for b in dm.train_dataloader()]

    two = epoch(5, min(2, _cores()))
    for other in (epoch(5, 0), epoch(5, min(2, _cores()))):
        for (image, label), (image2, label2) in zip(two, other, strict=True):
            assert torch.equal(image, image2) and torch.equal(label, label2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(two, epoch(6, 0), strict=True))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_missing_data_folder_is_one_line_naming_it(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(LayoutError) as err:
        MODULES[name][0](str(missing)).setup("fit")
    text = str(err.value)
    assert text.startswith(f"{missing}: ") and "does not exist" in text and "\n" not in text


def test_held_out_cases_are_the_original_seeded_choice():
    """Frozen reference: the expression the Synapse module used before the shared helper."""
    names = [f"case{i:04d}" for i in range(12)]
    for seed in range(20):
        for k in (0, 1, 3, 11):
            before = sorted(np.random.default_rng(seed).choice(names, size=k, replace=False).tolist())
            assert [names[i] for i in held_out_cases(12, k, seed)] == before
    with pytest.raises(ValueError, match=r"val_cases=3 leaves no training case \(3 training cases in x\)"):
        held_out_cases(3, 3, 0, where=" in x")
