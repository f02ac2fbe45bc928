"""Model selection of the paper configs against VM-UNet's own training loops executed: which epoch's
weights become ``best`` on the same scripted losses.

The original (VM-UNet ``43c495b``): ``train_synapse.py``'s ``main`` (best: lowest mean training
loss of an epoch) and ``train.py``'s ``main`` (ISIC, best: lowest validation loss), with the
engine functions they call run as they are (``engine_synapse.train_one_epoch``,
``engine.train_one_epoch``, ``engine.val_one_epoch``). Stand-ins: the model (one weight ``w``,
output ``w`` everywhere, so a step of SGD with learning rate 1 lowers ``w`` by 1 and a saved
``w`` names the step it was saved after), the data sets (constant items), the loss
(:class:`ScriptedLoss`: the scripted value, with gradient 1 in the model's mean output), the
optimiser (SGD), the schedule (constant), the logger, tensorboard's writer, the FLOP count, and
the final test (it records the weight it is given); ``.cuda()`` is a no-op and
``torch.nn.DataParallel`` the CPU one (a plain wrapper without a GPU).

Ours: :class:`~vmunet.training.module.SegmentationModule` (the paper config's ``model`` settings,
``vmunet_test`` narrowed further: the network does not matter here) with its loss replaced by the same :class:`ScriptedLoss`, trained
by a Lightning ``Trainer`` whose ``ModelCheckpoint`` is built as ``vmunet fit`` builds it: the CLI's
defaults (``CHECKPOINT_DEFAULTS``) under the paper config's ``checkpoint`` section.

The scripts end in a tie with the best epoch (the original keeps the earlier epoch, ``loss <
min_loss``), and for ISIC the lowest training loss is at another epoch than the lowest validation
loss. Without ``third_party/`` the original's selection frozen below is still checked against ours.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from original_code import load_definitions, vmunet_dir
from torch import nn

from vmunet.training.cli import CHECKPOINT_DEFAULTS
from vmunet.training.module import SegmentationModule

PAPER = Path(__file__).resolve().parents[2] / "experiments" / "paper"
# per-step losses of each epoch (2 batches of 2 training items; ISIC: 2 validation items, batch 1).
# Values are multiples of 1/8, so every mean is exact in float32 and float64 alike.
TRAIN = [[1.0, 0.5], [0.5, 0.5], [0.75, 0.25], [1.0, 1.0], [0.25, 0.5], [0.125, 0.625]]  # .75 .5 .5 1 .375 .375
VAL = [[0.5, 0.5], [0.25, 0.5], [0.75, 0.75], [0.25, 0.25], [0.5, 0.0], [0.125, 0.375]]  # .5 .375 .75 .25 .25 .25
EPOCHS = len(TRAIN)
# The original's best epoch (1-based, its min_epoch) on these scripts: train_synapse.py / train.py at
# VM-UNet 43c495b, executed by test_original_training_loops_select_as_frozen_and_as_ours.
FROZEN_BEST_EPOCH = {"synapse": 5, "isic": 4}


def test_the_scripts_tell_the_rules_apart():
    """Plain Python on the scripts: ``<=`` instead of ``<`` would pick the last epoch, and ISIC's
    lowest training loss is not at its lowest validation loss."""
    train, val = [float(np.mean(e)) for e in TRAIN], [float(np.mean(e)) for e in VAL]
    assert train.index(min(train)) + 1 == FROZEN_BEST_EPOCH["synapse"] and train[-1] == min(train)
    assert val.index(min(val)) + 1 == FROZEN_BEST_EPOCH["isic"] and val[-1] == min(val)
    assert train.index(min(train)) != val.index(min(val))


class ScriptedLoss(nn.Module):
    """The next scripted value (training while gradients are on, validation under ``no_grad``),
    plus ``out.mean() - out.mean().detach()``: exactly 0, with gradient 1 in the mean output."""

    def __init__(self, train: list[list[float]], val: list[list[float]] | None = None) -> None:
        super().__init__()
        self.train_values = iter([v for epoch in train for v in epoch])
        self.val_values = iter([v for epoch in (val or []) for v in epoch])

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = next(self.train_values if torch.is_grad_enabled() else self.val_values)
        mean = out.float().mean()
        return mean - mean.detach() + value


# ------------------------------------------------------------------------------ the original
class _Logger:
    def info(self, msg: object) -> None:
        pass


class _Model(nn.Module):
    """The stand-in network: one weight, output ``w`` at every pixel of the first channel."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def load_from(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * torch.ones_like(x[:, :1])


def _original_main(kind: str, work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str], list[float]]:
    """Run the original ``main`` of ``train_synapse.py`` (``kind`` synapse) or ``train.py`` (isic) on
    the scripts; returns its ``min_epoch`` (from ``latest.pth``), the files in ``checkpoints/`` and
    the weight the final test was given."""
    root = vmunet_dir()
    monkeypatch.setattr(nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "stand-in")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # train.py sets it: restored after the test
    monkeypatch.setattr(sys, "path", list(sys.path))  # both append work_dir
    tested: list[float] = []

    class Items(torch.utils.data.Dataset):
        def __init__(self, n: int, synapse: bool) -> None:
            self.n, self.synapse = n, synapse

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int):
            image, label = torch.ones(1, 4, 4), torch.zeros(1, 4, 4)
            return {"image": image, "label": label[0]} if self.synapse else (image, label)

    config = types.SimpleNamespace(
        work_dir=f"{work_dir}/", seed=42, distributed=False, only_test_and_save_figs=False, epochs=EPOCHS,
        val_interval=10**6, amp=False, print_interval=10**6, batch_size=2, num_workers=0, gpu_id="0",
        input_size_h=4, input_size_w=4, data_path="", list_dir="", volume_path="", network="vmunet",
        model_config={k: None for k in ("num_classes", "input_channels", "depths", "depths_decoder",
                                         "drop_path_rate", "load_ckpt_path")},
        criterion=ScriptedLoss(TRAIN, VAL), threshold=0.5)
    ns: dict = {"torch": torch, "nn": nn, "np": np, "os": __import__("os"), "sys": sys, "time": __import__("time"),
                "DataLoader": torch.utils.data.DataLoader, "VMUNet": _Model, "tqdm": lambda x: x,
                "get_logger": lambda name, log_dir: _Logger(), "log_config_info": lambda config, logger: None,
                "set_seed": lambda seed: None, "cal_params_flops": lambda model, size, logger: None,
                "get_optimizer": lambda config, model: torch.optim.SGD(model.parameters(), lr=1.0),
                "get_scheduler": lambda config, opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)}
    if kind == "synapse":
        config.datasets = lambda base_dir, list_dir, split, transform=None: Items(4 if split == "train" else 1, True)

        def val_one_epoch(dataset, loader, model, epoch, logger, config, test_save_path, val_or_test=False):
            assert val_or_test, "validation every val_interval epochs is off here"
            tested.append(model.module.w.item())
            return 0.5, 1.0

        ns.update(transforms=types.SimpleNamespace(Compose=lambda ts: ts[0]), RandomGenerator=lambda output_size: None,
                  GradScaler=lambda: None, val_one_epoch=val_one_epoch)
        load_definitions(root / "engine_synapse.py", ["train_one_epoch"], ns)
        load_definitions(root / "train_synapse.py", ["main"], ns)
    else:
        def test_one_epoch(loader, model, criterion, logger, config, test_data_name=None):
            tested.append(model.w.item())
            return 0.0

        ns.update(NPY_datasets=lambda path, config, train=True: Items(4 if train else 2, False),
                  SummaryWriter=lambda path: types.SimpleNamespace(add_scalar=lambda *a, **k: None),
                  test_one_epoch=test_one_epoch)
        load_definitions(root / "engine.py", ["train_one_epoch", "val_one_epoch"], ns)
        load_definitions(root / "train.py", ["main"], ns)
    ns["main"](config)
    latest = torch.load(work_dir / "checkpoints" / "latest.pth", map_location="cpu", weights_only=False)  # numpy min_loss
    return int(latest["min_epoch"]), sorted(p.name for p in (work_dir / "checkpoints").iterdir()), tested


# ---------------------------------------------------------------------------------------- ours
class _Data(pl.LightningDataModule):
    """4 training items, batch 2 (the Synapse paper config has no validation split)."""

    eval_mode = "image"

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans

    def _items(self, n: int) -> list[dict]:
        return [{"image": torch.ones(self.in_chans, 16, 16), "label": torch.zeros(1, 16, 16), "case": f"c{i}"}
                for i in range(n)]

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self._items(4), batch_size=2)


class _DataWithValidation(_Data):
    """... and 2 validation items, batch 1 (the ISIC paper config's ``eval_batch_size``)."""

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self._items(2), batch_size=1)


class _Weights(pl.Callback):
    """The module's weights at the end of each training epoch."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.by_epoch[trainer.current_epoch] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _our_best(kind: str, tmp_path: Path) -> int:
    """The epoch (1-based) whose weights our paper config keeps as ``best``; checks they are that
    epoch's weights."""
    config = yaml.safe_load((PAPER / ("synapse.yaml" if kind == "synapse" else "isic17.yaml")).read_text())
    ckpt_args = {key.split(".", 1)[1]: value for key, value in CHECKPOINT_DEFAULTS.items()} | config["checkpoint"]
    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", **{**ckpt_args, "save_last": False})
    classes, chans = (9, 1) if kind == "synapse" else (1, 3)
    module = SegmentationModule(**{**config["model"], "model_name": "vmunet_test", "weights": None,
                                   "num_classes": classes, "in_chans": chans,
                                   "model_kwargs": {"depths": [1, 1], "depths_decoder": [1, 1], "dims": 8,
                                                    "d_state": 2}})
    module.loss_fn = ScriptedLoss(TRAIN, VAL if kind == "isic" else None)
    weights = _Weights()
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, callbacks=[best, weights],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=(_DataWithValidation if kind == "isic" else _Data)(chans))
    (path,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    epoch = int(saved["epoch"])  # Lightning counts epochs from 0, the original from 1
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in weights.by_epoch[epoch].items())
    assert not all(torch.equal(saved["state_dict"][k], v) for k, v in weights.by_epoch[EPOCHS - 1].items())
    return epoch + 1


@pytest.fixture
def one_thread():
    """One intra-op thread: the selection does not depend on it, and on a busy machine two threads
    made each step of this tiny network 50 times slower (4 s instead of 0.08 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["synapse", "isic"])
def test_paper_selection_equals_the_frozen_original_selection(kind, tmp_path, one_thread):
    assert _our_best(kind, tmp_path) == FROZEN_BEST_EPOCH[kind]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")  # the original's loaders, on a CPU
@pytest.mark.parametrize("kind", ["synapse", "isic"])
def test_original_training_loops_select_as_frozen_and_as_ours(kind, tmp_path, monkeypatch, one_thread):
    min_epoch, files, tested = _original_main(kind, tmp_path / "original", monkeypatch)
    assert min_epoch == FROZEN_BEST_EPOCH[kind] == _our_best(kind, tmp_path / "ours")
    # best.pth was renamed after the final test to a name holding its epoch
    best = [f for f in files if f.startswith(f"best-epoch{min_epoch}-")]
    assert len(best) == 1 and set(files) == {best[0], "latest.pth"}
    # ... and holds that epoch's weights: w = -(steps done) = -2 per epoch, and the test ran on them
    saved = torch.load(tmp_path / "original" / "checkpoints" / best[0], map_location="cpu")
    assert saved["w"].item() == tested[0] == -2.0 * min_epoch and len(tested) == 1
