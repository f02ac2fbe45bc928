"""The per-key rules of ``vmunet.training.ckpt_settings`` one at a time, on plain dicts (no training):
which settings of a ``--ckpt_path`` run are the user's, which are refused, which are compared and how
closely. The keys are written out here as docs/training.md lists them, not read from the module."""

from __future__ import annotations

import logging

import pytest

from vmunet.errors import ConfigError
from vmunet.training.ckpt_settings import (
    check_same_preprocessing,
    reconcile,
    warn_changed_data_settings,
)

SAVED = {"model_name": "vmunet_test", "lr": 0.003, "num_classes": 3, "in_chans": 1,
         "model_kwargs": {"drop_path_rate": 0.1, "dims": [8, 16]}, "slice_batch_size": 32, "val_hd95": True,
         "hd95": "pooled", "metric_conventions": None, "threshold": 0.5, "resample": "probabilities",
         "preprocessing": {"image_size": [32, 32]}}


@pytest.mark.parametrize("key,value", [
    ("slice_batch_size", 4), ("val_hd95", False), ("hd95", "per_case"), ("metric_conventions", ["paper"]),
    ("threshold", 0.3), ("resample", "labels"),
])
@pytest.mark.parametrize("sub", ["fit", "validate", "test"])
def test_each_evaluation_setting_given_is_used(key, value, sub):
    assert reconcile({key: value}, SAVED, subcommand=sub, ckpt_path="c.ckpt") == {**SAVED, key: value}


@pytest.mark.parametrize("option,value", [("scan_backend", "torch"), ("use_checkpoint", True)])
def test_runtime_model_options_given_are_used_when_resuming(option, value):
    out = reconcile({"model_kwargs": {option: value}}, SAVED, subcommand="fit", ckpt_path="c.ckpt")
    assert out == {**SAVED, "model_kwargs": {"drop_path_rate": 0.1, "dims": [8, 16], option: value}}


def test_linked_and_private_keys_are_not_compared():
    # num_classes / in_chans / preprocessing come from the data module; '__path__' is jsonargparse's
    given = {"num_classes": 9, "in_chans": 3, "preprocessing": {"image_size": [64, 64]}, "__path__": "run.yaml"}
    assert reconcile(given, SAVED, subcommand="fit", ckpt_path="c.ckpt") == SAVED


def test_a_tuple_given_equals_the_checkpoints_list():
    # jsonargparse gives tuples or lists for the same YAML sequence: not another model
    given = {"model_kwargs": {"dims": (8, 16)}, "metric_conventions": None}
    assert reconcile(given, SAVED, subcommand="fit", ckpt_path="c.ckpt") == SAVED


def test_validate_does_not_refuse_training_settings_it_does_not_use(caplog):
    caplog.set_level(logging.INFO, logger="vmunet.training.ckpt_settings")
    assert reconcile({"lr": 0.03}, SAVED, subcommand="validate", ckpt_path="c.ckpt") == SAVED
    assert [r.getMessage() for r in caplog.records] == [
        "validate: training settings not used (the checkpoint's model is evaluated): model.lr=0.03 (checkpoint: 0.003)"]


PREP = {"image_size": [32, 32], "intensity": {"mean": 0.25, "std": 2.0}, "class_names": ["bg", "fg"],
        "threshold": 0.5, "resample": "probabilities"}


def test_preprocessing_records_equal_to_a_relative_1e_6_pass():
    close = {**PREP, "intensity": {"mean": 0.250000125, "std": 2.0}}  # 5e-7 relative
    check_same_preprocessing("c.ckpt", PREP, close, "test")
    # the decision settings the module adds to the record are the run's own (model.threshold, model.resample)
    check_same_preprocessing("c.ckpt", PREP, {**PREP, "threshold": 0.3, "resample": "labels"}, "test")


@pytest.mark.parametrize("current,shown", [
    ({**PREP, "intensity": {"mean": 0.2505, "std": 2.0}},  # 2e-3 relative
     "intensity={'mean': 0.2505, 'std': 2.0} (checkpoint: {'mean': 0.25, 'std': 2.0})"),
    ({**PREP, "intensity": {"mean": 0.25}},  # a statistic the checkpoint's record has, missing now
     "intensity={'mean': 0.25} (checkpoint: {'mean': 0.25, 'std': 2.0})"),
])
def test_preprocessing_records_that_differ_are_refused(current, shown):
    with pytest.raises(ConfigError) as err:
        check_same_preprocessing("c.ckpt", PREP, current, "test")
    assert str(err.value) == (
        f"c.ckpt: the data module prepares its data differently from the data the checkpoint was trained on: "
        f"preprocessing {shown}; the model would be scored on inputs prepared otherwise than in its training; "
        "use the data settings of the training run")


def test_another_data_module_class_is_named_in_the_resume_warning(caplog):
    saved = {"_class_path": "vmunet.data.synapse.SynapseDataModule", "root": "data/s"}
    current = {"_class_path": "vmunet.data.nifti.NiftiDataModule", "root": "data/s"}
    caplog.set_level(logging.WARNING, logger="vmunet.training.ckpt_settings")
    assert warn_changed_data_settings(saved, current) == [
        "data.class_path='vmunet.data.nifti.NiftiDataModule' (checkpoint: 'vmunet.data.synapse.SynapseDataModule')"]
