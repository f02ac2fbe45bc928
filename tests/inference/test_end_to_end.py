"""The training side's checkpoint through `vmunet predict --reference` scores exactly like `vmunet test`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fit_then_predict_matches_vmunet_test(tmp_path):
    from vmunet.cli import main
    from vmunet.data.synth import synth_synapse

    data, runs, pred = tmp_path / "data", tmp_path / "runs", tmp_path / "pred"
    synth_synapse(data, cases=4, size=32, slices=8, seed=0)
    common = ["--config", str(REPO / "experiments" / "demo.yaml"), "--data.init_args.root", str(data),
              "--data.init_args.image_size", "32", "--data.init_args.val_cases", "1",
              "--trainer.default_root_dir", str(runs)]
    main(["fit", *common, "--trainer.max_epochs", "1"])
    ckpt = runs / "version_0" / "checkpoints" / "last.ckpt"
    main(["test", *common, "--ckpt_path", str(ckpt)])
    h5 = data / "test_vol_h5"
    assert main(["predict", "-i", str(h5), "-o", str(pred), "-m", str(ckpt), "--reference", str(h5),
                 "--device", "cpu"]) == 0

    def rows(path):
        with open(path) as f:
            return {(r["case"], r["class"]): r for r in csv.DictReader(f)}

    # `vmunet test` reports into the evaluated checkpoint's run, not a new version_N
    assert not (runs / "version_1").exists()
    ours, theirs = rows(pred / "metrics.csv"), rows(runs / "version_0" / "test_cases.csv")
    assert ours.keys() == theirs.keys() and len(ours) == 2 * 8
    for key in ours:
        for col in ("dice", "hd95", "hd95_mm"):
            a, b = ours[key][col], theirs[key][col]
            if a == "" or b == "":  # undefined (strict convention: a missed class has no HD95)
                assert a == b, (key, col, a, b)
            else:
                assert float(a) == pytest.approx(float(b), abs=1e-6), (key, col)
    for case in {c for c, _ in ours}:  # label maps land in the raw scan's geometry (sidecar)
        geom = json.loads((h5 / f"{case}.geometry.json").read_text())
        img = nib.load(str(pred / f"{case}.nii.gz"))
        assert list(img.shape) == geom["shape"]
        np.testing.assert_allclose(img.affine, geom["affine"], atol=1e-5)
