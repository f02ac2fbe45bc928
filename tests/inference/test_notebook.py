"""notebooks/inference.ipynb runs top to bottom on synthetic data (kernel python3 of this venv)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inference.ipynb"


def test_inference_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "geometry identical to the input" in text
    assert "liver" in text and "volume (mL)" in text and "Dice" in text
    assert any("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")
