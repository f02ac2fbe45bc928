"""The results table `vmunet test` / `validate` / `predict --reference` print: it fits 80 and 100
columns, its headings keep every word and wrap only at words, and the numbers stay in their rows."""

from __future__ import annotations

import numpy as np
import pytest

from vmunet.evaluation.metrics import (
    CONVENTIONS,
    HD95_DEFINITIONS,
    BinaryConfusion,
    summarize_cases,
)
from vmunet.training.reports import format_table

NAMES = ["background", "aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach"]
TOP = "┏"  # the first character of a table's top border


def _volume_summary() -> dict:
    """3 cases, every organ scored with Dice 0.5 + 0.05 * class index and HD95 = class index (voxels)."""
    rows = [{"case": f"case{c}", "class": name, "status": "scored", "dice": 0.5 + 0.05 * k, "hd95": float(k),
             "hd95_mm": 0.8 * k, "hd95_definition": "pooled"}
            for c in range(3) for k, name in enumerate(NAMES[1:], start=1)]
    by = {conv: summarize_cases(rows, NAMES, conv) for conv in ("strict", "paper")}
    return {"stage": "test", "conventions": ["strict", "paper"], "by_convention": by, **by["strict"]}


def _headings(text: str) -> list[str]:
    """The lines above each table, joined at whitespace (one string per table)."""
    out, lines = [], []
    for line in text.splitlines():
        if line.startswith(TOP):
            out.append(" ".join(" ".join(lines).split()))
            lines = []
        elif not line.startswith(("┃", "┡", "│", "└")) and line.strip():
            lines.append(line)
    return out


@pytest.mark.parametrize("width", [80, 100])
def test_volume_table_fits_the_width_and_keeps_every_word(width):
    text = format_table(_volume_summary(), width=width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width
    hd95 = f"HD95 pooled ({HD95_DEFINITIONS['pooled']})"  # 91 characters
    assert _headings(text) == [f"test: 3 cases, mean over cases, then classes convention {conv} "
                               f"({CONVENTIONS[conv]}) {hd95}" for conv in ("strict", "paper")]
    # a heading wraps at words only, continued with a two-space indent; what fits stays on one line
    assert "test: 3 cases, mean over cases, then classes" in lines
    if width == 100:
        assert hd95 in lines
    else:
        assert "  directions)" in lines and hd95.removesuffix(" directions)") in lines
    # every class row, then the mean, with its numbers (Dice, HD95 voxels, HD95 mm, misses, false positives)
    body = [line for line in lines if line.startswith("│")]
    expected = [[name, f"{0.5 + 0.05 * k:.4f}", f"{k:.2f}", f"{0.8 * k:.2f}", "0", "0"]
                for k, name in enumerate(NAMES[1:], start=1)]
    expected.append(["mean", f"{np.mean([0.5 + 0.05 * k for k in range(1, 9)]):.4f}", "4.50", "3.60", "0", "0"])
    assert [[c.strip() for c in line.strip("│").split("│")] for line in body] == expected * 2  # both conventions


@pytest.mark.parametrize("width", [80, 100])
def test_image_table_fits_the_width_and_keeps_every_word(width):
    conf = BinaryConfusion(threshold=0.5)
    prob = np.zeros((2, 4, 4))
    prob[:, :2] = 1.0  # the top half predicted
    gt = np.zeros((2, 4, 4), bool)
    gt[:, :, :2] = True  # the left half true: 4 TP, 4 FP, 4 FN, 4 TN per image
    conf.update(prob, gt, ["img0", "img1"])
    convs = ["strict", "paper"]
    summary = {"stage": "test", "conventions": convs, "pooled": conf.pooled(), "num_images": 2,
               "by_convention": {c: {"convention": c, "per_image": conf.per_image(c)} for c in convs}}
    text = format_table(summary, width=width)
    assert max(map(len, text.splitlines())) <= width
    assert _headings(text) == [
        "test: 2 images, threshold 0.5; pooled: one confusion matrix over all pixels (the papers') per-image: the "
        f"mean over images, under convention strict ({CONVENTIONS['strict']}) convention paper ({CONVENTIONS['paper']})"]
    rows = {cells[0]: cells[1:] for line in text.splitlines() if line.startswith("│")
            for cells in [[c.strip() for c in line.strip("│").split("│")]]}
    # Dice 2*4/(2*4+4+4) = 0.5, IoU 4/12, accuracy 8/16, sensitivity 4/8, specificity 4/8
    assert rows == {"dice": ["0.5000"] * 3, "iou": ["0.3333"] * 3, "accuracy": ["0.5000", "-", "-"],
                    "sensitivity": ["0.5000", "-", "-"], "specificity": ["0.5000", "-", "-"]}


@pytest.mark.parametrize(("columns", "width"), [("80", 80), ("100", 100), ("250", 100)])
def test_default_width_is_the_terminals_at_most_100(monkeypatch, columns, width):
    monkeypatch.setenv("COLUMNS", columns)
    text = format_table(_volume_summary())
    assert text == format_table(_volume_summary(), width=width)
