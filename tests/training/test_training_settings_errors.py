"""Bad training settings: each is refused with one message naming the key and what was expected --
never a traceback from torch/NumPy/Lightning, never a silent run (a zero loss, a negative class
weight, a 0-epoch fit). Constructor checks in-process; what only ``vmunet fit`` sees (linked keys,
the seed, the trainer, the run length, the model's input-size multiple) through ``vmunet.cli.main``."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmunet.errors import ConfigError
from vmunet.models import create_model
from vmunet.training.module import SegmentationModule
from vmunet.training.schedulers import LRSchedule

MODULE = [  # (key, bad value, the whole expected message)
    ("class_weights", [1.0, -1.0, 1.0], "model.class_weights: expected finite weights >= 0, not all 0, "
     "got [1.0, -1.0, 1.0]"),
    ("class_weights", [0.0, 0.0, 0.0], "model.class_weights: expected finite weights >= 0, not all 0, got [0.0, 0.0, 0.0]"),
    ("class_weights", [1.0, float("nan"), 1.0], "model.class_weights: expected finite weights >= 0, not all 0, "
     "got [1.0, nan, 1.0]"),
    ("betas", (1.5, 0.999), "model.betas: expected two numbers in [0, 1), got [1.5, 0.999]"),
    ("betas", (0.9, -0.1), "model.betas: expected two numbers in [0, 1), got [0.9, -0.1]"),
    ("weight_decay", -0.01, "model.weight_decay: expected >= 0, got -0.01"),
    ("weight_decay", float("-inf"), "model.weight_decay: expected a finite number, got -inf"),
    ("lr", float("nan"), "model.lr: expected a finite number, got nan"),
    ("lr", 0.0, "model.lr: expected > 0, got 0.0"),
    ("lambda_ce", -1.0, "model.lambda_ce: expected >= 0, got -1.0"),
    ("lambda_dice", float("inf"), "model.lambda_dice: expected a finite number, got inf"),
    ("eta_min", float("nan"), "model.eta_min: expected a finite number, got nan"),
    ("model_kwargs", {"num_classes": 5}, "model.model_kwargs: ['num_classes'] come from the data module "
     "(model.num_classes, model.in_chans); remove them from model_kwargs"),
    ("model_kwargs", {"depths": [1, 1]}, "model.model_kwargs: VMUNet: dims must have 2 entries (one per stage), "
     "got [16, 32, 64, 128]"),
]


@pytest.mark.parametrize(("key", "value", "message"), MODULE)
def test_bad_module_setting_names_the_key(key, value, message):
    with pytest.raises(ValueError) as err:
        SegmentationModule("vmunet_test", num_classes=3, in_chans=1, **{key: value})
    assert str(err.value) == message


def test_zero_loss_and_growing_poly_schedule_are_refused():
    with pytest.raises(ValueError) as err:
        SegmentationModule("vmunet_test", num_classes=3, in_chans=1, lambda_ce=0.0, lambda_dice=0.0)
    assert str(err.value) == "model.lambda_ce + model.lambda_dice: expected > 0 (a loss to train on), got 0.0 + 0.0"
    for power in (0.0, -1.0):
        with pytest.raises(ValueError) as err:
            LRSchedule("poly", base_lr=1e-3, total=10, power=power)
        assert str(err.value) == f"poly_power must be > 0, got {power}"
    LRSchedule("cosine", base_lr=1e-3, power=-1.0)  # unused by cosine: no error


def test_input_size_check_follows_the_models_multiple():
    from vmunet.inference.slicewise import check_model_input_size

    model = create_model("vmunet_test", num_classes=2, in_chans=1)
    check_model_input_size(model, (64, 32), "data.image_size")  # multiples of 32: fine
    with pytest.raises(ConfigError) as err:
        check_model_input_size(model, (48, 40), "data.image_size")
    assert str(err.value) == ("data.image_size=[48, 40]: VMUNet needs height and width multiples of 32; expected "
                              "e.g. [64, 32] (or model_kwargs pad_to_multiple: true)")
    padded = create_model("vmunet_test", num_classes=2, in_chans=1, pad_to_multiple=True)
    check_model_input_size(padded, (48, 40), "data.image_size")


FIT = ["fit", "--data", "train_toy.ToyVolumeData", "--model.model_name", "vmunet_test",
       "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
       "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1"]
CLI = [  # (extra arguments, the whole expected error line after "vmunet fit: error: ")
    (["--model.num_classes", "5"], "model.num_classes is set from the data module (data.num_classes: what the data "
     "set declares); remove model.num_classes from the config and command line"),
    (["--seed_everything", "-1"], "seed_everything: expected an integer in [0, 2**32), true (a random seed) or false "
     "(no seeding), got -1"),
    (["--trainer.max_epochs", "0"], "trainer.max_epochs: expected >= 1 (or -1: no limit), got 0; fit would train nothing"),
    (["--trainer.max_epochs", "-2"], "trainer.max_epochs: expected >= 1 (or -1: no limit), got -2"),
    (["--data.size", "48"], "data.image_size=[48, 48]: VMUNet needs height and width multiples of 32; expected e.g. "
     "[64, 64] (or model_kwargs pad_to_multiple: true)"),
    (["--model.scheduler", "poly", "--model.warmup_epochs", "3", "--trainer.max_epochs", "2"],
     "model: the poly schedule needs the total number of epochs (> warmup_epochs=3), got 2; set trainer.max_epochs"),
    (["--model.model_name", "vmunet_tset"], "model.model_name: expected one of mamba_unet, swin_umamba, swin_umamba_d, "
     "ultralight_vmunet, vmunet, vmunet_deep, vmunet_test, vmunet_v2, got vmunet_tset"),
    # Trainer settings whose Union type (with str) lets any text through parsing: refused by
    # Lightning's Trainer in words that name no key (the other keys: test_trainer_refusals_name_the_key)
    (["--trainer.devices", "abc"], "trainer.devices: expected a positive integer (processes) or auto on the cpu "
     "accelerator, got abc"),
    (["--trainer.accelerator", "3"], "trainer.accelerator: expected one of auto, cpu, cuda, mps, tpu (or an "
     "Accelerator), got 3"),
    # accepted by Lightning, then failing mid-run (float64 / half weights meet the models' float32
    # parts), training nothing, or silently not clipping
    (["--trainer.precision", "64-true"], "trainer.precision: expected 32-true, 16-mixed or bf16-mixed (or null), got "
     "64-true; the models need float32 weights (mixed precision casts the computation instead)"),
    (["--trainer.precision", "bf16-true"], "trainer.precision: expected 32-true, 16-mixed or bf16-mixed (or null), "
     "got bf16-true; the models need float32 weights (mixed precision casts the computation instead)"),
    (["--trainer.limit_train_batches", "0"], "trainer.limit_train_batches: expected > 0 (batches, or a fraction of "
     "the epoch), got 0; fit would train nothing"),
    (["--trainer.max_time", "00:00:00:00"], "trainer.max_time: expected a duration > 0 (DD:HH:MM:SS, e.g. "
     "00:12:00:00), got 00:00:00:00; fit would train nothing"),
    (["--trainer.max_time", "{hours: 0}"], "trainer.max_time: expected a duration > 0 (DD:HH:MM:SS, e.g. "
     "00:12:00:00), got {'hours': 0}; fit would train nothing"),
    (["--trainer.gradient_clip_val", "-1.0"], "trainer.gradient_clip_val: expected a finite number > 0 (or 0 / null: "
     "no clipping), got -1.0"),
    # refused by the parser: the Union's subtypes read as one list
    (["--trainer.precision", "xyz"], "trainer.precision: expected one of 64, 32, 16, transformer-engine, "
     "transformer-engine-float16, 16-true, 16-mixed, bf16-true, bf16-mixed, 32-true, 64-true, bf16 or null, got xyz"),
]
TRAINER = [  # (Trainer arguments, the whole expected line)
    ({"devices": 0}, "trainer.devices: expected a positive integer (processes) or auto on the cpu accelerator, got 0"),
    ({"devices": [0, 1]}, "trainer.devices: expected a positive integer (processes) or auto on the cpu accelerator, "
     "got [0, 1]"),
    ({"strategy": "dpp"}, "trainer.strategy: expected a strategy name such as auto, ddp, ddp_spawn, fsdp "
     "(or a Strategy), got dpp"),
    ({"max_time": "12h"}, "trainer.max_time: expected a duration DD:HH:MM:SS (e.g. 00:12:00:00) or a mapping such "
     "as {hours: 12}, got 12h"),
    ({"val_check_interval": "abc"}, "trainer.val_check_interval: expected an integer (batches), a fraction of the "
     "epoch in [0, 1] or a time DD:HH:MM:SS, got abc"),
    ({"profiler": "fast"}, "trainer.profiler: expected one of simple, advanced, pytorch, xla (or a Profiler) or null, "
     "got fast"),
    ({"num_nodes": 0}, "trainer.num_nodes: expected a positive integer, got 0"),
    ({"limit_val_batches": 1.5}, "trainer.limit_val_batches: expected an integer (batches) or a fraction in [0, 1], "
     "got 1.5"),
    ({"gradient_clip_algorithm": "l2"}, "trainer.gradient_clip_algorithm: expected one of value, norm, got l2"),
    ({"max_steps": -5}, "trainer.max_steps: expected an integer >= 0 or -1 (no limit), got -5"),
    ({"reload_dataloaders_every_n_epochs": -1}, "trainer.reload_dataloaders_every_n_epochs: expected an integer "
     ">= 0, got -1"),
]


@pytest.mark.parametrize(("kwargs", "message"), TRAINER)
def test_trainer_refusals_name_the_key(kwargs, message):
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch import Trainer

    from vmunet.training.parse_errors import trainer_error_line

    settings = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, **kwargs}
    with pytest.raises((MisconfigurationException, ValueError, TypeError)) as err:
        Trainer(**settings)
    assert trainer_error_line(str(err.value), settings) == message
    assert trainer_error_line("CUDA out of memory", settings) is None  # names no setting: not a config error


def test_gpu_accelerator_without_a_gpu_names_what_this_machine_has():
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch import Trainer

    from vmunet.training.parse_errors import trainer_error_line

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU: accelerator gpu is valid here")
    with pytest.raises(MisconfigurationException) as err:
        Trainer(accelerator="gpu", logger=False, enable_checkpointing=False)
    assert trainer_error_line(str(err.value), {"accelerator": "gpu"}) == (
        "trainer.accelerator: expected an accelerator this machine has (here: auto, cpu), got gpu")


@pytest.mark.parametrize(("subtypes", "words"), [
    # jsonargparse's "Subtypes: [...]" of Trainer keys, as the parser reports them
    ("<class 'bool'>, typing.Literal['warn'], <class 'NoneType'>", "one of true, false, warn or null"),
    ("<class 'int'>, <class 'NoneType'>", "an integer or null"),
    ("<class 'int'>, <class 'float'>, <class 'NoneType'>", "a number or null"),
    ("<class 'lightning.pytorch.loggers.logger.Logger'>, collections.abc.Iterable[lightning.pytorch.loggers.logger"
     ".Logger], <class 'bool'>, <class 'NoneType'>", "a Logger or a list of Loggers or true or false or null"),
    ("typing.Literal['a'], <class 'int'>", "an integer or a"),
])
def test_union_subtypes_in_words(subtypes, words):
    from vmunet.training.parse_errors import _expectation, _split_top

    assert _expectation(_split_top(subtypes), "x") == words


@pytest.mark.parametrize(("extra", "message"), CLI)
def test_fit_setting_errors_are_one_line_exit_2(tmp_path, capfd, extra, message):
    from vmunet.cli import main

    try:
        status = main([*FIT, "--trainer.default_root_dir", str(tmp_path), *extra])
    except SystemExit as exc:  # a parse error (jsonargparse) exits from inside, as the console script does
        status = exc.code
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and "Traceback" not in err, err
    # the only line: no "Seed set to 42" / "GPU available" / "removed its empty folder" before it
    assert lines == [f"vmunet fit: error: {message}"], err
    assert "GPU available" not in err  # refused before the Trainer (and its info lines) is built
    assert not list(tmp_path.glob("version_*"))  # nothing started, no empty run folder left


DEMO = ["fit", "--config", str(Path(__file__).resolve().parents[2] / "experiments" / "demo.yaml")]
TOY = FIT[:3]  # the toy data module: its constructor runs before the model's checks
PARSE = [  # (argv, a YAML config file's text or None, the whole stderr line after "vmunet fit: error: ")
    ([*DEMO, "--data.image_size", "[32]"], None, "data.image_size: expected an integer or a list of 2 integers, got [32]"),
    ([*DEMO, "--model.lr", "nan"], None, "model.lr: expected a finite number, got nan"),
    ([*DEMO, "--data.batch_size", "abc"], None, "data.batch_size: expected an integer, got abc"),
    ([*DEMO, "--data.batch_sise", "8"], None, "data.batch_sise: unknown key; did you mean data.batch_size? "
     "(`vmunet fit --help` lists the accepted keys)"),
    # the section's own keys are compared by their last part: not "did you mean model.weights?"
    ([*DEMO, "--model.learning_rate", "0.1"], None, "model.learning_rate: unknown key; did you mean model.lr? "
     "(`vmunet fit --help` lists the accepted keys)"),
    ([*DEMO, "--model.colour", "red"], None, "model.colour: unknown key (`vmunet fit --help` lists the accepted keys)"),
    ([*DEMO, "--trainer.max_epoch", "3"], None, "trainer.max_epoch: unknown key; did you mean trainer.max_epochs? "
     "(`vmunet fit --help` lists the accepted keys)"),
    ([*DEMO, "--config", "{missing}"], None, "config: expected an existing YAML file, got {missing} (no such file)"),
    ([*DEMO, "--config", "{cfg}"], "model:\n  lr: fast\n", "model.lr: expected a number, got fast"),
    ([*DEMO, "--config", "{cfg}"], "model:\n  lrr: 0.1\n", "model.lrr: unknown key; did you mean model.lr? "
     "(`vmunet fit --help` lists the accepted keys)"),
    ([*DEMO, "--config", "{cfg}"], "model:\n  lr: [1\n  x: 2\n", "config: expected a valid YAML file, got {cfg}: "
     "expected ',' or ']', but got ':' at line 3, column 4"),
    # a YAML float may be .nan / .inf: the module refuses what must be finite, before anything trains
    ([*TOY, "--model.lr", ".nan"], None, "model.lr: expected a finite number, got nan"),
    ([*TOY, "--config", "{cfg}"], "model:\n  lambda_dice: .inf\n", "model.lambda_dice: expected a finite number, got inf"),
    (["fit"], None, "data: required, not given (e.g. --config experiments/demo.yaml; `vmunet fit --help` lists the "
     "accepted keys)"),
]


@pytest.mark.parametrize(("argv", "config", "message"), PARSE)
def test_parse_errors_are_one_line_naming_the_key(tmp_path, capfd, argv, config, message):
    from vmunet.cli import main

    names = {"cfg": str(tmp_path / "c.yaml"), "missing": str(tmp_path / "missing.yaml")}
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
    status = main([a.format(**names) for a in argv] + ["--trainer.default_root_dir", str(tmp_path / "runs")])
    err = capfd.readouterr().err
    # no "Seed set to 42" before the error: seeding precedes building the model (the module's
    # constructor refuses a non-finite lr), but its line is held until the model is built
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and lines == [f"vmunet fit: error: {message.format(**names)}"], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("name", "words"), [
    ("<class 'int'>", "an integer"), ("<class 'bool'>", "true or false"), ("<class 'NoneType'>", "null"),
    ("typing.Literal['cosine', 'poly', 'constant']", "one of cosine, poly, constant"),
    ("tuple[int, int]", "a list of 2 integers"), ("tuple[int, float]", "a list of 2 values"),
    ("tuple with 2 elements", "a list of 2 values"), ("list[float]", "a list of numbers"),
    ("typing.Optional[int]", "an integer or null"), ("<class 'pathlib.Path'>", "a path"),
])
def test_jsonargparse_type_names_in_words(name, words):
    from vmunet.training.parse_errors import type_words

    assert type_words(name) == words
