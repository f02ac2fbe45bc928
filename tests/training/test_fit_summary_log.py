"""The model summary `vmunet fit` logs: Lightning's, without its FLOPs (0 for a module without an
example input, which would be a false number in our output)."""

from __future__ import annotations

import logging
import types

import lightning.pytorch as pl
import torch

from vmunet.training.progress import ParameterSummary


class TwoLayers(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)  # 3*2 + 2 = 8 parameters
        self.frozen = torch.nn.Linear(2, 1).requires_grad_(False)  # 2 + 1 = 3, not trainable


def test_the_summary_has_parameters_and_modes_but_no_flops(caplog):
    trainer = types.SimpleNamespace(strategy=None, is_global_zero=True)  # what on_fit_start reads
    with caplog.at_level(logging.INFO, logger="vmunet.training.progress"):
        ParameterSummary().on_fit_start(trainer, TwoLayers())
    (record,) = caplog.records
    # Lightning's plain table and totals (its layout; the two child modules are "in train mode"),
    # less the FLOPs column and the "Total Flops" row
    assert record.getMessage().splitlines() == [
        "model summary (FLOPs and memory: `vmunet info MODEL`)",
        "  | Name   | Type   | Params | Mode",
        "-" * 36,
        "0 | fc     | Linear | 8      | train",
        "1 | frozen | Linear | 3      | train",
        "-" * 36,
        "8         Trainable params",
        "3         Non-trainable params",
        "11        Total params",
        "0.000     Total estimated model params size (MB)",
        "2         Modules in train mode",
        "0         Modules in eval mode",
    ]
