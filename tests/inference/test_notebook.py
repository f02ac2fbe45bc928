"""notebooks/inference.ipynb: committed with its figures, and it runs top to bottom (kernel python3
of this venv) both ways it finds its model: the demo's checkpoint found from the notebook's folder,
or a short fit of the tiny VM-UNet."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest
import torch
from inference_helpers import save_checkpoint, volume_record
from nbclient import NotebookClient

from vmunet.data.preprocessing import SYNAPSE_CLASSES, SYNAPSE_HU_WINDOW

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inference.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _outputs(nb) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _pngs(nb) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in _outputs(nb)
            if o.output_type == "display_data" and "image/png" in o.get("data", {})]


def _text(nb) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream")


def test_the_committed_notebook_carries_its_outputs_and_figure():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("outputs") for c in code[1:]), "every code cell after the settings shows its output"
    assert all(c.execution_count is not None for c in code)
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    (png,) = _pngs(nb)
    assert png.startswith(PNG_MAGIC) and 20_000 < len(png) < 400_000, len(png)
    text = _text(nb)
    assert "fitted vmunet_test" in text or "model: vmunet_test" in text  # a VM-UNet, not a stand-in CNN
    assert "geometry identical to the input" in text and "Dice" in text
    # no machine's folder names: the repository is shown relative to the kernel's folder
    (repo_line,) = [ln for ln in text.splitlines() if ln.startswith("repository: ")]
    assert re.fullmatch(r"repository: (found \(\.\.?(/\.\.)* from the current folder\)|not found .*)", repo_line), repo_line
    (ckpt_line,) = [ln for ln in text.splitlines() if ln.startswith("checkpoint: ")]
    assert not ckpt_line.startswith("checkpoint: /"), ckpt_line


def _execute(nb, cwd: Path) -> None:
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    assert not [o for o in _outputs(nb) if o.output_type == "error"]


def _checks(nb) -> str:
    text = _text(nb)
    assert "geometry identical to the input" in text
    assert "liver" in text and "volume (mL)" in text and "Dice" in text
    (png,) = _pngs(nb)
    assert png.startswith(PNG_MAGIC)
    return text


def test_notebook_finds_the_demo_checkpoint_from_its_folder(tmp_path):
    """A checkout-like tree: Jupyter starts the kernel in notebooks/; the notebook must find
    runs/demo/version_1/checkpoints/last.ckpt from there (the newest run) and use it."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.yaml").write_text("# stand-in\n")
    (tmp_path / "vmunet").mkdir()
    (tmp_path / "notebooks").mkdir()
    torch.manual_seed(0)
    from vmunet.models import create_model

    kwargs = {"num_classes": len(SYNAPSE_CLASSES), "in_chans": 1}
    rec = volume_record(image_size=(64, 64), class_names=list(SYNAPSE_CLASSES), num_classes=len(SYNAPSE_CLASSES),
                        intensity={"mode": "window", "window": list(SYNAPSE_HU_WINDOW)})
    for version in (0, 1):
        folder = tmp_path / "runs" / "demo" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        save_checkpoint(folder / "last.ckpt", create_model("vmunet_test", **kwargs), "vmunet_test", kwargs, rec)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _execute(nb, tmp_path / "notebooks")
    text = _checks(nb)
    assert "repository: found (.. from the current folder)\n" in text  # the kernel runs in notebooks/
    assert "checkpoint: runs/demo/version_1/checkpoints/last.ckpt\n" in text  # relative to the repository
    assert str(tmp_path) not in text.split("scan: ")[0]  # (scan and outputs are in a temporary folder)
    assert "model: vmunet_test" in text and "fitted" not in text


@pytest.mark.slow  # a second kernel run; the committed outputs above come from this path
def test_notebook_fits_the_tiny_vmunet_without_a_checkpoint(tmp_path):
    steps = 3
    nb = nbformat.read(NOTEBOOK, as_version=4)
    settings = nb.cells[1]
    assert "FIT_STEPS = 150" in settings.source
    settings.source = settings.source.replace("FIT_STEPS = 150", f"FIT_STEPS = {steps}")  # keep the test short
    _execute(nb, tmp_path)  # outside any checkout: no repository, no demo checkpoint
    text = _checks(nb)
    assert "repository: not found" in text
    assert "fitted vmunet_test" in text and f"{steps} steps in" in text
