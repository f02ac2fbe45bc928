"""Bad data-module settings fail in ``__init__`` (or, for what needs the folder, in ``setup``) with
one :class:`~vmunet.errors.ConfigError` naming ``data.<key>`` and what was expected -- before any
loader, NumPy or MONAI call could fail with its own message, and never silently (an ISIC
``eval_batch_size: 0`` used to mean "as batch_size"; a NIfTI ``zscore_stats`` on a CT channel used
to be ignored)."""

from __future__ import annotations

import pytest

from vmunet.data.isic import ISICDataModule
from vmunet.data.nifti import NiftiDataModule
from vmunet.data.synapse import SynapseDataModule
from vmunet.errors import ConfigError

MODULES = {  # name -> (class, data set fixture, settings that keep it small)
    "synapse": (SynapseDataModule, "synapse_root", {"image_size": 32, "val_cases": 1}),
    "isic": (ISICDataModule, "isic_root", {"image_size": 32}),
    "nifti": (NiftiDataModule, "nifti_ct", {"image_size": 24, "val_cases": 1}),
}

SHARED = [  # every module: (key, bad value, the whole expected message)
    ("batch_size", 0, "data.batch_size: expected an integer >= 1, got 0"),
    ("batch_size", -2, "data.batch_size: expected an integer >= 1, got -2"),
    ("num_workers", -1, "data.num_workers: expected an integer >= 0 (0: load in the main process), got -1"),
    ("image_size", 0, "data.image_size: expected a positive integer or [H, W], got 0"),
    ("image_size", (32, -32), "data.image_size: expected a positive integer or [H, W], got (32, -32)"),
    ("seed", -1, "data.seed: expected an integer in [0, 2**32), got -1"),
    ("seed", 2**32, "data.seed: expected an integer in [0, 2**32), got 4294967296"),
]
OWN = [  # (module, key, bad value, the whole expected message)
    ("synapse", "val_cases", -1, "data.val_cases: expected an integer >= 0 (0: no validation), got -1"),
    ("synapse", "rotation_degrees", -5.0, "data.rotation_degrees: expected an angle in [0, 180], got -5.0"),
    ("synapse", "augmentation", "torchvision", "data.augmentation: expected 'monai' or 'paper', got 'torchvision'"),
    ("isic", "eval_batch_size", 0, "data.eval_batch_size: expected an integer >= 1, got 0"),
    ("isic", "normalization", "imagenet", "data.normalization: expected 'dataset' or 'paper', got 'imagenet'"),
    ("isic", "test_split", "train", "data.test_split: expected 'auto', 'test' or 'val', got 'train'"),
    ("nifti", "val_cases", -1, "data.val_cases: expected an integer >= 0 (0: no validation), got -1"),
    ("nifti", "val_cases", 4, "data.val_cases=4 leaves no training case (4 training cases); expected at most 3"),
    ("nifti", "slice_axis", 3, "data.slice_axis: expected 0, 1 or 2, got 3"),
    ("nifti", "intensity", "minmax", "data.intensity: expected auto | window | ct_percentile | zscore | none, "
     "got 'minmax'"),
    ("nifti", "foreground_oversample", float("nan"),
     "data.foreground_oversample: expected a probability in [0, 1], got nan"),
    ("nifti", "rotation_degrees", -5.0, "data.rotation_degrees: expected an angle in [0, 180], got -5.0"),
    ("nifti", "window", (275.0, -125.0), "data.window: expected [low, high] with low < high, got (275.0, -125.0)"),
    ("nifti", "zscore_stats", (0.0, 0.0), "data.zscore_stats: expected [mean, std] with std > 0, got (0.0, 0.0)"),
    ("nifti", "zscore_stats", (10.0, 2.0), "data.zscore_stats is set, but no channel is z-scored (channels "
     "['CT'] -> ['window']); expected data.intensity: zscore with it"),
]


@pytest.mark.parametrize(("name", "key", "value", "message"),
                         [(n, *case) for n in MODULES for case in SHARED] + OWN)
def test_bad_setting_is_one_config_error_naming_the_key(request, tmp_path, name, key, value, message):
    cls, fixture, small = MODULES[name]
    with pytest.raises(ConfigError) as err:
        cls(str(request.getfixturevalue(fixture)), **{"batch_size": 2, "num_workers": 0, **small, key: value})
    assert str(err.value) == message


def test_cache_dir_that_is_a_file_and_held_out_cases_beyond_the_data(request, tmp_path):
    a_file = tmp_path / "cache"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError) as err:
        NiftiDataModule(str(request.getfixturevalue("nifti_ct")), image_size=24, val_cases=1, cache_dir=str(a_file))
    assert str(err.value) == f"data.cache_dir: expected a folder (created if missing), not a file, got '{a_file}'"
    # Synapse counts its training cases only in setup (3 of the fixture's 5 cases are training cases)
    root = request.getfixturevalue("synapse_root")
    dm = SynapseDataModule(str(root), image_size=32, val_cases=3, num_workers=0, check_files=False)
    with pytest.raises(ConfigError) as err:
        dm.setup("fit")
    assert str(err.value) == (f"data.val_cases=3 leaves no training case (3 training cases in {root / 'train_npz'}); "
                              "expected at most 2")


def test_eval_batch_size_none_is_batch_size(isic_root):
    """Only None (the default) means "as batch_size"; 0 is refused above, not silently replaced."""
    assert ISICDataModule(str(isic_root), batch_size=3, image_size=32).eval_batch_size == 3
    assert ISICDataModule(str(isic_root), batch_size=3, eval_batch_size=1, image_size=32).eval_batch_size == 1
