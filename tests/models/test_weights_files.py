"""Checkpoint files as released: VMamba's save_checkpoint_ema files (yacs config, optimizer, EMA)
read without yacs and without running code; refused pickles; every layout detected from synthetic
state dicts with the exact key names and shapes of VMamba's code (vmamba.py); non-strict
fine-tuning; and `vmunet weights inspect`."""

from __future__ import annotations

import logging
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from test_model_weights import PAPER, original_vmunet_shapes, random_tensors, vmamba_v0_shapes

from vmunet.cli import main
from vmunet.models import create_model
from vmunet.models.layouts import LAYOUT_SHAPES
from vmunet.models.safe_load import UnsafeCheckpointError, WeightsError, read_checkpoint
from vmunet.models.weights import load_weights

REPO = Path(__file__).resolve().parents[2]
TEST_DIMS = [16, 32, 64, 128]  # vmunet_test's widths, d_state 4


def to_later_vmamba_names(key: str) -> str:
    """v0 key -> the name later VMamba code gives it: change_name() in VSSM._load_from_state_dict
    of MzeroMiko/VMamba vmamba.py, applied forward."""
    for src, dst in [("patch_embed.proj", "patch_embed.0"), ("patch_embed.norm", "patch_embed.2"),
                     ("norm", "classifier.norm"), ("head", "classifier.head")]:
        if key.startswith(src + "."):
            return dst + key[len(src):]
    parts = key.split(".")
    if parts[0] == "layers" and parts[2] == "blocks":
        parts[4] = {"ln_1": "norm", "self_attention": "op"}[parts[4]]
    if parts[0] == "layers" and parts[2] == "downsample":
        parts[3] = {"norm": "1", "reduction": "2"}[parts[3]]
    return ".".join(parts)


def vmamba_v2_shapes(depths, dims, d_state=1, classes=1000, K=4):
    """Later VMamba (vmamba_small_s2l15 style: forward_type v05_noz, mlp_ratio 4, downsample v3,
    patchembed v2, ssm_conv_bias False): module names and shapes of vmamba.py's VSSM."""
    d0 = dims[0]
    s = {"patch_embed.0.weight": (d0 // 2, 3, 3, 3), "patch_embed.0.bias": (d0 // 2,),
         "patch_embed.2.weight": (d0 // 2,), "patch_embed.2.bias": (d0 // 2,),
         "patch_embed.5.weight": (d0, d0 // 2, 3, 3), "patch_embed.5.bias": (d0,),
         "patch_embed.7.weight": (d0,), "patch_embed.7.bias": (d0,)}
    for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
        di, r = 2 * d, math.ceil(d / 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            s.update({p + "norm.weight": (d,), p + "norm.bias": (d,),
                      p + "op.in_proj.weight": (di, d), p + "op.conv2d.weight": (di, 1, 3, 3),
                      p + "op.x_proj.weight": (K * (r + 2 * d_state), di),
                      p + "op.dt_projs.weight": (K * di, r),
                      p + "op.A_logs": (K * di, d_state), p + "op.Ds": (K * di,),
                      p + "op.dt_projs_weight": (K, di, r), p + "op.dt_projs_bias": (K, di),
                      p + "op.out_norm.weight": (di,), p + "op.out_norm.bias": (di,),
                      p + "op.out_proj.weight": (d, di),
                      p + "norm2.weight": (d,), p + "norm2.bias": (d,),
                      p + "mlp.fc1.weight": (4 * d, d), p + "mlp.fc1.bias": (4 * d,),
                      p + "mlp.fc2.weight": (d, 4 * d), p + "mlp.fc2.bias": (d,)})
        if i < len(dims) - 1:
            s.update({f"layers.{i}.downsample.1.weight": (dims[i + 1], d, 3, 3),
                      f"layers.{i}.downsample.1.bias": (dims[i + 1],),
                      f"layers.{i}.downsample.3.weight": (dims[i + 1],),
                      f"layers.{i}.downsample.3.bias": (dims[i + 1],)})
    s.update({"classifier.norm.weight": (dims[-1],), "classifier.norm.bias": (dims[-1],),
              "classifier.head.weight": (classes, dims[-1]), "classifier.head.bias": (classes,)})
    return s


@pytest.fixture
def fake_yacs(monkeypatch):
    """A stand-in ``yacs.config.CfgNode`` importable while SAVING (mimics yacs: a dict subclass
    keeping its flags in __dict__); the test removes it before loading."""
    config = types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__["__immutable__"] = False
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__renamed_keys__"] = {}
            self.__dict__["__new_allowed__"] = False

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    package = types.ModuleType("yacs")
    package.config = config
    monkeypatch.setitem(sys.modules, "yacs", package)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    return CfgNode


def save_like_vmamba(path, model_sd, ema_sd, CfgNode):
    """What VMamba's classification/utils/utils.py save_checkpoint_ema writes."""
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    config = CfgNode({"MODEL": CfgNode({"TYPE": "vssm", "NAME": "vssm_small",
                                        "VSSM": CfgNode({"DEPTHS": [2, 2, 27, 2], "D_STATE": 16})}),
                      "TRAIN": CfgNode({"EPOCHS": 300, "BASE_LR": 1e-3})})
    torch.save({"model": model_sd, "optimizer": opt.state_dict(),
                "lr_scheduler": {"t_initial": 300, "base_values": [1e-3], "noise_range_t": None},
                "max_accuracy": 83.5, "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                                 "growth_interval": 2000, "_growth_tracker": 17},
                "epoch": 237, "config": config, "model_ema": ema_sd, "max_accuray_ema": 83.6}, path)


def test_vmamba_save_checkpoint_ema_file_loads_without_yacs(tmp_path, fake_yacs, monkeypatch, caplog):
    shapes = vmamba_v0_shapes([1, 1, 3, 1], TEST_DIMS, d_state=4)
    raw, ema = random_tensors(shapes, seed=1), random_tensors(shapes, seed=2)
    path = tmp_path / "vssm_small_e238_ema.pth"
    save_like_vmamba(path, raw, ema, fake_yacs)
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")
    with pytest.raises(Exception, match="yacs.config.CfgNode"):  # the problem being solved
        torch.load(path, weights_only=True)

    ckpt = read_checkpoint(path)
    assert type(ckpt["config"]) is dict and "yacs" not in sys.modules
    assert ckpt["config"] == {"MODEL": {"TYPE": "vssm", "NAME": "vssm_small",
                                        "VSSM": {"DEPTHS": [2, 2, 27, 2], "D_STATE": 16}},
                              "TRAIN": {"EPOCHS": 300, "BASE_LR": 1e-3}}
    assert ckpt["epoch"] == 237 and ckpt["scaler"]["_growth_tracker"] == 17
    assert torch.is_tensor(ckpt["optimizer"]["state"][0]["exp_avg"])

    model = create_model("vmunet_test", num_classes=2, in_chans=3)
    with caplog.at_level(logging.INFO, logger="vmunet.models"):
        report = load_weights(model, path)
    assert "using its 'model_ema' weights" in caplog.text
    assert report.layout == "vmamba_v0" and report.entry == "model_ema"
    sd = model.state_dict()
    assert torch.equal(sd["layers.2.blocks.0.self_attention.A_logs"], ema["layers.2.blocks.0.self_attention.A_logs"])
    assert torch.equal(sd["layers_up.1.blocks.0.ln_1.weight"], ema["layers.2.blocks.0.ln_1.weight"])
    load_weights(model, path, entry="model")
    assert torch.equal(model.state_dict()["patch_embed.proj.weight"], raw["patch_embed.proj.weight"])
    with pytest.raises(WeightsError, match="has no 'model_ema' weights; it has model"):
        load_weights(model, {"model": raw}, entry="model_ema")


class _RunsCode:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickles_that_run_code_are_refused_naming_the_class(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    cases = [(os.system, f"touch {marker}", r"posix\.system"),
             (eval, f"open({str(marker)!r}, 'w')", r"builtins\.eval")]
    for func, arg, name in cases:
        path = tmp_path / f"evil_{func.__name__}.pth"
        torch.save({"model": {"w": torch.ones(2)}, "x": _RunsCode(func, arg)}, path,
                   _use_new_zipfile_serialization=zip_format)
        with pytest.raises(UnsafeCheckpointError, match=rf"evil_{func.__name__}\.pth refused: its pickle needs {name}"):
            read_checkpoint(path)
        assert not marker.exists()


def test_later_vmamba_names_of_v0_weights_are_renamed_and_load():
    shapes = vmamba_v0_shapes([1, 1, 2, 1], TEST_DIMS, d_state=4)
    v0 = random_tensors(shapes, seed=3)
    later = {to_later_vmamba_names(k): v for k, v in v0.items()}
    assert "layers.0.blocks.0.op.A_logs" in later and "layers.0.downsample.2.weight" in later
    a = create_model("vmunet_test", num_classes=2, in_chans=3)
    b = create_model("vmunet_test", num_classes=2, in_chans=3)
    ra = load_weights(a, {"model": v0})
    rb = load_weights(b, {"model": later})
    assert (ra.layout, rb.layout) == ("vmamba_v0", "vmamba_v0_new_names")
    assert rb.loaded == ra.loaded and len(ra.loaded) > 0
    for k, v in a.state_dict().items():
        if k in ra.loaded:
            assert torch.equal(b.state_dict()[k], v), k
    assert any(n.startswith(f"renamed {len(v0)} keys from later VMamba names") for n in rb.notes)


def test_vmamba_v2_layout_is_an_error_naming_it_and_loads_nothing_when_not_strict():
    tensors = random_tensors(vmamba_v2_shapes([1, 1, 2, 1], TEST_DIMS), seed=4)
    model = create_model("vmunet_test", num_classes=2, in_chans=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"detected layout vmamba_v2: later VMamba \(v2/v3\) model \("
                                           r"blocks with an MLP branch.*conv downsample.*stacked-conv patch "
                                           r"embedding.*grouped x_proj.*d_state=1 \(v0 uses 16\)"):
        load_weights(model, {"model": tensors})
    report = load_weights(model, {"model": tensors}, strict=False)
    assert report.loaded == [] and report.missing == list(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_weights_of_another_model_are_an_error_naming_the_layout():
    other = {"conv1.weight": torch.ones(8, 3, 7, 7), "bn1.running_mean": torch.zeros(8),
             "fc.weight": torch.ones(10, 8), "fc.bias": torch.zeros(10)}
    model = create_model("vmunet_test", num_classes=2)
    with pytest.raises(WeightsError, match=r"detected layout unknown: no known layout \(keys like bn1.running_mean"):
        load_weights(model, other)
    assert load_weights(model, other, strict=False).loaded == []


def test_fine_tuning_with_another_class_count_loads_all_but_the_head(tmp_path, caplog):
    src = create_model("vmunet_test", num_classes=2, in_chans=1)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in src.state_dict().items()}}, path)
    torch.manual_seed(5)
    fresh = create_model("vmunet_test", num_classes=4, in_chans=1).state_dict()
    torch.manual_seed(5)
    model = create_model("vmunet_test", num_classes=4, in_chans=1)
    with pytest.raises(WeightsError, match=r"final_conv.weight -> final_conv.weight: shape \(2, 4, 1, 1\)"):
        load_weights(model, path)
    with caplog.at_level(logging.INFO, logger="vmunet.models.weights"):
        report = load_weights(model, path, strict=False)
    assert report.missing == ["final_conv.weight", "final_conv.bias"]
    assert len(report.loaded) == len(fresh) - 2
    sd = model.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(sd[k], v if k not in report.missing else fresh[k]), k
    assert "kept their init: final_conv" in caplog.text
    assert "skipped (shape (2, 4, 1, 1) in checkpoint vs (4, 4, 1, 1) in model): final_conv" in caplog.text


def test_weights_strict_switch_through_the_training_module(tmp_path, caplog):
    from vmunet.training.module import SegmentationModule

    src = create_model("vmunet_test", num_classes=2, in_chans=1)
    path = tmp_path / "init.pth"
    torch.save(src.state_dict(), path)
    with pytest.raises(WeightsError, match="final_conv"):
        SegmentationModule("vmunet_test", num_classes=3, in_chans=1, weights=str(path))
    module = SegmentationModule("vmunet_test", num_classes=3, in_chans=1, weights=str(path), weights_strict=False)
    assert torch.equal(module.model.patch_embed.proj.weight, src.patch_embed.proj.weight)
    assert module.hparams.weights_strict is False


def test_weights_strict_is_a_cli_switch(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "experiments" / "synapse_vmunet.yaml"), "--model.weights_strict", "false",
              "--model.weights_entry", "model", "--print_config"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "weights_strict: false" in out and "weights_entry: model" in out


def test_inspect_command(tmp_path, capsys):
    v0 = random_tensors(vmamba_v0_shapes([1, 1, 2, 1], TEST_DIMS, d_state=4), seed=6)
    good = tmp_path / "v0.pth"
    torch.save({"model": v0, "model_ema": v0}, good)
    assert main(["weights", "inspect", str(good), "--model", "vmunet_test", "--entry", "model"]) == 0
    out = capsys.readouterr().out
    assert "layout:  vmamba_v0 (VMamba v0 ImageNet classifier); weights from 'model'" in out
    assert "strict:  loads" in out and "kept their init: " in out and "final_conv" in out
    v2 = tmp_path / "v2.pth"
    torch.save({"model": random_tensors(vmamba_v2_shapes([1, 1, 1, 1], TEST_DIMS))}, v2)
    assert main(["weights", "inspect", str(v2), "--model", "vmunet_test"]) == 1
    out = capsys.readouterr().out
    assert "layout:  vmamba_v2" in out and "load:    0 of" in out and "strict:  refused" in out
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    assert main(["weights", "inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vmunet weights inspect: error: cannot read weights file {bad}")


def test_rebuild_from_lightning_hyper_parameters_when_there_is_no_record(tmp_path):
    from vmunet.models.checkpoint import CheckpointError, model_from_checkpoint

    src = create_model("vmunet_test", num_classes=3, in_chans=1, d_state=2)
    state = {"model." + k: v for k, v in src.state_dict().items()}
    hparams = {"model_name": "vmunet_test", "num_classes": 3, "in_chans": 1, "model_kwargs": {"d_state": 2}}
    model, record = model_from_checkpoint({"state_dict": state, "hyper_parameters": hparams})
    assert record["model_kwargs"] == {"d_state": 2, "num_classes": 3, "in_chans": 1}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in src.state_dict().items())
    with pytest.raises(CheckpointError, match=r"old\.ckpt has no ckpt\['vmunet'\]\['model_name'\]"):
        model_from_checkpoint({"state_dict": state}, where="old.ckpt")
    with pytest.raises(CheckpointError, match=r"old\.ckpt: cannot rebuild model 'vmunet_test': .*A_logs: shape"):
        model_from_checkpoint({"state_dict": state, "hyper_parameters": {**hparams, "model_kwargs": {}}},
                              where="old.ckpt")


class _Reduces:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_numpy_scalars_load_and_numpy_arrays_and_object_scalars_are_refused(tmp_path):
    """nnU-Net checkpoints (Swin-UMamba's) log numpy scalars next to the weights: they load as the
    numpy values they were; arrays and object-dtype scalars (which could hold anything) do not."""
    import numpy as np

    scalar = type(np.float64(0)).__reduce__(np.float64(0))[0]  # numpy's multiarray.scalar
    path = tmp_path / "nnunet.pth"
    logged = {"_best_ema": np.float64(0.7125), "logging": {"train_losses": [np.float32(-0.25)],
                                                           "epochs": [np.int64(3)], "ok": [np.bool_(True)]}}
    torch.save({"network_weights": {"w": torch.ones(2)}, **logged}, path)
    ckpt = read_checkpoint(path)
    assert ckpt["_best_ema"] == 0.7125 and type(ckpt["_best_ema"]) is np.float64
    assert ckpt["logging"] == logged["logging"]
    assert [type(v[0]) for v in ckpt["logging"].values()] == [np.float32, np.int64, np.bool_]
    torch.save({"w": torch.ones(2), "x": np.arange(3.0)}, tmp_path / "array.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"array\.pth refused: its pickle needs .*_reconstruct"):
        read_checkpoint(tmp_path / "array.pth")
    torch.save({"w": torch.ones(2), "x": _Reduces(scalar, np.dtype(object), [1, 2])}, tmp_path / "object.pth")
    with pytest.raises(WeightsError, match=r"object\.pth: .*but got <class 'numpy\.dtypes\.ObjectDType'>"):
        read_checkpoint(tmp_path / "object.pth")


# one hand-written key sample per layout, with the registered model that layout names (what
# `weights inspect` builds when neither --model nor a record in the file names one)
_LAYOUT_SAMPLES = [
    (["layers_up.0.blocks.0.norm.weight", "final_conv.weight"], "vmunet", "vmunet"),
    (["vmunet.layers_up.0.blocks.0.norm.weight"], "vmunet_original", "vmunet"),
    (["sdi_1.convs.0.weight"], "vmunet_v2", "vmunet_v2"),
    (["vmunet.layers.0.blocks.0.ln_1.weight", "sdi_1.convs.0.weight"], "vmunet_v2_original", "vmunet_v2"),
    (["mamba_unet.layers.0.blocks.0.ln_1.weight"], "mamba_unet_original", "mamba_unet"),
    (["layers_up.1.blocks.0.ln_1.weight", "concat_back_dim.1.weight", "output.weight"], "mamba_unet", "mamba_unet"),
    (["vssm_encoder.patch_embed.proj.weight", "decoder1.layer.conv1.conv.weight"], "swin_umamba", "swin_umamba"),
    (["vssm_encoder.patch_embed.proj.weight", "decoder.stages.0.blocks.0.ln_1.weight"], "swin_umamba",
     "swin_umamba_d"),
    (["encoder4.0.mamba.A_log", "final.weight"], "ultralight_vmunet", "ultralight_vmunet"),
    (["layers.0.blocks.0.ln_1.weight", "layers.0.blocks.0.self_attention.A_logs"], "vmamba_v0", "vmunet"),
    (["layers.0.blocks.0.norm.weight", "layers.0.blocks.0.op.A_logs"], "vmamba_v0_new_names", "vmunet"),
    (["layers.0.blocks.0.norm.weight", "layers.0.blocks.0.mlp.fc1.weight"], "vmamba_v2", None),
    (["conv1.weight", "fc.weight"], "unknown", None),
]


@pytest.mark.parametrize("keys, layout, model", _LAYOUT_SAMPLES, ids=[f"{s[1]}-{s[2]}" for s in _LAYOUT_SAMPLES])
def test_every_layout_names_the_model_its_weights_are_for(keys, layout, model):
    from vmunet.models import list_models
    from vmunet.models.layouts import detect
    from vmunet.models.registry import model_for_weights

    found = detect({k: torch.zeros(2) for k in keys})
    assert (found.layout, model_for_weights(found)) == (layout, model)
    assert model is None or model in list_models()


def test_our_mamba_unet_layout_is_complete_missing_and_unexpected_keys_are_refused():
    model = create_model("mamba_unet", num_classes=2, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), d_state=4)
    state = dict(model.state_dict())
    del state["output.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"cannot load mamba_unet weights .*missing key output\.weight"):
        load_weights(model, state)
    with pytest.raises(WeightsError, match=r"unexpected key extra\.weight"):
        load_weights(model, state)


def test_the_registered_models_are_the_ones_inspected_above():
    from vmunet.models import list_models

    assert list_models() == ["mamba_unet", "swin_umamba", "swin_umamba_d", "ultralight_vmunet", "vmunet",
                             "vmunet_deep", "vmunet_test", "vmunet_v2"]


def test_the_layout_samples_cover_every_layout():
    from vmunet.models.layouts import LAYOUT_MODELS, LAYOUTS

    assert {s[1] for s in _LAYOUT_SAMPLES} == set(LAYOUTS) == set(LAYOUT_MODELS) == set(LAYOUT_SHAPES)


def test_weights_inspect_help_names_every_layout_it_detects(capsys):
    """The help listed 6 of the 12 layouts (no VM-UNet-V2, Mamba-UNet, Swin-UMamba, UltraLight): it is now
    built from the list the detection uses. Every layout a sample file is detected as is named in it."""
    from vmunet.cli import main

    with pytest.raises(SystemExit):
        main(["weights", "inspect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    named = {layout for layout in {s[1] for s in _LAYOUT_SAMPLES} if f" {layout}: " in text or f"({layout}: " in text}
    assert named == set(LAYOUT_SHAPES), set(LAYOUT_SHAPES) - named


_OWN_FILES = [("mamba_unet", "mamba_unet"), ("swin_umamba", "swin_umamba"), ("swin_umamba_d", "swin_umamba"),
              ("ultralight_vmunet", "ultralight_vmunet"), ("vmunet", "vmunet"), ("vmunet_deep", "vmunet"),
              ("vmunet_test", "vmunet"), ("vmunet_v2", "vmunet_v2")]
#: Lightning unwrapping is the same for every model: the paper-size ones wrapped run with the slow tests
_SMALL_OR_THE_BUG = ("mamba_unet", "ultralight_vmunet", "vmunet_test")


@pytest.mark.parametrize("name, layout, lightning", [
    pytest.param(name, layout, lightning, id=f"{name}-{'lightning' if lightning else 'bare'}",
                 marks=[pytest.mark.slow] if lightning and name not in _SMALL_OR_THE_BUG else [])
    for name, layout in _OWN_FILES for lightning in (False, True)])
def test_every_registered_models_own_file_is_inspected_as_that_model(name, layout, lightning, tmp_path, capsys):
    """Each registered model's own state dict (its defaults, 3 classes, 2 input channels; built on
    the meta device, saved as a zero expanded to each shape: one element stored), bare or in a Lightning
    checkpoint without our record, is inspected without options as that model, with those
    classes and channels, and loads strictly. Mamba-UNet's decoder has ``layers_up`` keys like
    VM-UNet's: it was taken for vmunet."""
    with torch.device("meta"):
        own = create_model(name, num_classes=3, in_chans=2).state_dict()
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in own.items()}
    if lightning:
        state = {"state_dict": {"model." + k: v for k, v in state.items()}, "epoch": 1}
    path = tmp_path / f"{name}.ckpt"
    torch.save(state, path)
    assert main(["weights", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"model:   {name} (num_classes=3, in_chans=2), {len(own)} tensors" in out
    assert f"layout:  {layout} " in out
    assert f"(assumed: no --model and no model record in the file; layout {layout} names it)" in out
    assert f"load:    {len(own)} of {len(own)} model tensors" in out and "strict:  loads" in out


def test_inspect_assumes_the_model_the_layout_names(tmp_path, capsys):
    """An UltraLight VM-UNet best.pth (the original's bare state dict: its key names and shapes,
    frozen from the original code; random values) inspected without --model is loaded into
    ultralight_vmunet, not vmunet; an explicit --model still wins; a layout naming no model
    falls back to vmunet, and the output says which and why."""
    import json

    frozen = json.loads((REPO / "tests" / "parity" / "frozen" / "ultralight_vmunet.json").read_text())
    shapes = {}
    for entry in frozen["paper"]["keys"]:  # "name [d0, d1, ...]"
        key, dims = entry.split(" ", 1)
        shapes[key] = [int(d) for d in dims.strip("[]").split(",") if d.strip()]
    best = tmp_path / "best.pth"
    torch.save(random_tensors(shapes, seed=3), best)
    assert main(["weights", "inspect", str(best)]) == 0
    out = capsys.readouterr().out
    assert "layout:  ultralight_vmunet" in out
    assert f"model:   ultralight_vmunet (num_classes=1, in_chans=3), {len(shapes)} tensors" in out
    assert "(assumed: no --model and no model record in the file; layout ultralight_vmunet names it)" in out
    assert f"load:    {len(shapes)} of {len(shapes)} model tensors" in out and "strict:  loads" in out
    assert main(["weights", "inspect", str(best), "--model", "vmunet_test"]) == 1
    out = capsys.readouterr().out
    assert "model:   vmunet_test (num_classes=1, in_chans=3)" in out and "(from --model)" in out
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.ones(8, 3, 7, 7), "fc.weight": torch.ones(10, 8)}, other)
    assert main(["weights", "inspect", str(other)]) == 1
    out = capsys.readouterr().out
    assert "model:   vmunet (num_classes=1, in_chans=3)" in out
    assert "(assumed: no --model, no model record in the file, and layout unknown names no model)" in out


def _frozen_shapes(name: str, size: str = "paper") -> dict[str, list[int]]:
    """Key names and shapes frozen from the original code (tests/parity/frozen), "name [d0, ...]"."""
    import json

    frozen = json.loads((REPO / "tests" / "parity" / "frozen" / f"{name}.json").read_text())
    return {key: [int(d) for d in dims.strip("[]").split(",") if d.strip()]
            for key, dims in (entry.split(" ", 1) for entry in frozen[size]["keys"])}


def _original_files() -> list[tuple[str, dict[str, list[int]], str, int, int, str]]:
    """(name, the originals' key names and shapes with non-default heads, layout, classes, input
    channels, the key that tells the classes). VM-UNet's, VM-UNet-V2's and Mamba-UNet's lists are
    written from the originals' structure in their tests (test_model_weights, test_vmunet_v2,
    test_mamba_unet); the others are frozen from the original code."""
    from test_mamba_unet import original_mamba_unet_shapes
    from test_vmunet_v2 import DEFAULT, original_v2_shapes

    vmunet = {"vmunet." + k: v for k, v in original_vmunet_shapes(**PAPER, num_classes=9).items()}
    ultralight = _frozen_shapes("ultralight_vmunet")  # the paper's 1 class, 3 channels -> 4 and 2
    ultralight["final.weight"][0] = ultralight["final.bias"][0] = 4
    ultralight["encoder1.0.weight"][1] = 2
    return [
        ("vmunet_synapse_best", vmunet, "vmunet_original", 9, 3, "final_conv.weight"),
        ("vmunet_v2", {**original_v2_shapes(**DEFAULT, num_classes=5)}, "vmunet_v2_original", 5, 3,
         "seg_outs.3.weight"),
        ("mamba_unet", {"mamba_unet." + k: v for k, v in
                        original_mamba_unet_shapes([2, 2, 2, 2], [96, 192, 384, 768], 6).items()},
         "mamba_unet_original", 6, 3, "output.weight"),
        ("swin_umamba", _frozen_shapes("swin_umamba"), "swin_umamba", 14, 1, "out_layers.0.conv.conv.weight"),
        ("swin_umamba_d", _frozen_shapes("swin_umamba_d"), "swin_umamba", 14, 1, "decoder.seg_layers.3.weight"),
        ("ultralight_vmunet", ultralight, "ultralight_vmunet", 4, 2, "final.weight"),
    ]


def test_inspect_reads_classes_and_channels_from_the_file(tmp_path, capsys):
    """Each original's file (its key names and shapes, zeros) with a head other than inspect's
    defaults (1 class, 3 channels) is inspected without options: classes from the final head,
    channels from the first conv, and the file loads strictly into that model."""
    for name, shapes, layout, classes, chans, head in _original_files():
        path = tmp_path / f"{name}.pth"
        torch.save({k: torch.zeros(s) for k, s in shapes.items()}, path)
        assert main(["weights", "inspect", str(path)]) == 0, name
        out = capsys.readouterr().out
        assert f"layout:  {layout} " in out, name
        assert f"(num_classes={classes}, in_chans={chans})" in out, name
        assert f"num_classes={classes} (from the file: {head} has {classes} output channels)" in out, name
        assert f"in_chans={chans} (from the file: " in out and "strict:  loads" in out, name
        if layout == "vmunet_original":  # the original repeats gray input to 3 channels: says so
            assert ("in_chans=3 (from the file: patch_embed.proj.weight has 3 input channels; the original "
                    "repeats gray input to 3 channels, and --in-chans 1 takes it with the kernel summed)") in out
    # explicit options win over the file
    best = tmp_path / "vmunet_synapse_best.pth"
    assert main(["weights", "inspect", str(best), "--in-chans", "1", "--num-classes", "2"]) == 1
    out = capsys.readouterr().out
    assert "(num_classes=2, in_chans=1)" in out and "in_chans=1 (from --in-chans)" in out
    assert "num_classes=2 (from --num-classes)" in out and "final_conv.weight -> final_conv.weight: shape" in out
    assert "adapt:   patch_embed.proj.weight (summed 3 input channels into 1)" in out


def test_inspect_without_a_head_in_the_file_takes_the_defaults_and_says_why(tmp_path, capsys):
    shapes = _frozen_shapes("ultralight_vmunet")
    del shapes["final.weight"], shapes["final.bias"]
    path = tmp_path / "headless.pth"
    torch.save({k: torch.zeros(s) for k, s in shapes.items()}, path)
    assert main(["weights", "inspect", str(path)]) == 1  # the head is missing: strict refuses
    out = capsys.readouterr().out
    assert "num_classes=1 (default: layout ultralight_vmunet's final.weight is not in the file)" in out
    assert "in_chans=3 (from the file: encoder1.0.weight has 3 input channels)" in out
    assert "missing key final.weight" in out
    # a VMamba classifier's head is ImageNet's: classes default, channels from its stem
    v0 = tmp_path / "v0.pth"
    torch.save(random_tensors(vmamba_v0_shapes([1, 1, 2, 1], TEST_DIMS, d_state=4), seed=6), v0)
    assert main(["weights", "inspect", str(v0), "--model", "vmunet_test"]) == 0
    out = capsys.readouterr().out
    assert ("num_classes=1 (default: layout vmamba_v0: an ImageNet classifier: its 1000-class head is not a "
            "segmentation head)") in out
    assert "in_chans=3 (from the file: patch_embed.proj.weight has 3 input channels;" in out


def test_inspect_takes_the_record_before_the_file(tmp_path, capsys):
    """Our training checkpoint's record wins over the tensors; what it leaves out (here in_chans,
    which older records may lack) is read from the file."""
    model = create_model("vmunet_test", num_classes=3, in_chans=1)
    path = tmp_path / "ours.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "vmunet": {"model_name": "vmunet_test", "model_kwargs": {"num_classes": 3}}}, path)
    assert main(["weights", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model:   vmunet_test (num_classes=3, in_chans=1)" in out
    assert "num_classes=3 (from the checkpoint's own record)" in out
    assert "in_chans=1 (from the file: patch_embed.proj.weight has 1 input channel)" in out
