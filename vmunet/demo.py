"""The end-to-end demo (``make demo``): synthetic Synapse data -> fit -> test -> NIfTI prediction.

``python -m vmunet.demo --out runs/demo``

1. writes a small synthetic Synapse-format data set (``<out>/data``, reused when present);
2. fits ``experiments/demo.yaml`` (the tiny ``vmunet_test`` model, CPU) -- checkpoints, TensorBoard
   and CSV logs, validation previews in ``<out>/version_N``;
3. tests the best checkpoint volume-wise on the synthetic test cases (per-organ Dice / HD95,
   CSV + JSON reports written into the same run folder);
4. segments one synthetic raw NIfTI scan with :class:`vmunet.inference.Predictor` and writes the
   label map next to it.

Progress goes to the log (stderr), one line per epoch (loss, val Dice); the results table and
summary are printed once, to stdout. Exit status 1 when the
mean test Dice stays below ``--min-dice`` (the demo must clearly beat chance).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# `python -m vmunet.demo` runs this file as __main__; its records still belong under "vmunet"
log = logging.getLogger("vmunet.demo" if __name__ == "__main__" else __name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"
QUIET = ["--trainer.enable_progress_bar", "false"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vmunet.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="output folder (data, runs, prediction)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="LightningCLI config to fit")
    p.add_argument("--cases", type=int, default=12, help="synthetic cases (18:12 train:test like Synapse)")
    p.add_argument("--size", type=int, default=64, help="in-plane size of the synthetic scans")
    p.add_argument("--slices", type=int, default=16, help="slices per synthetic scan")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    p.add_argument("--image-size", type=int, default=None, help="override the model input size (data.image_size)")
    p.add_argument("--min-dice", type=float, default=0.5, help="fail below this mean test Dice")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def ensure_data(root: Path, cases: int, size: int, slices: int, seed: int) -> Path:
    """Write the synthetic Synapse set unless a complete one is already there."""
    from vmunet.data.synth import synth_synapse

    if (root / "lists").is_dir() and (root / "test_vol_h5").is_dir():
        log.info("reusing synthetic data in %s", root)
        return root
    log.info("writing synthetic Synapse data to %s (%d cases, %dx%d, %d slices)", root, cases, size, size, slices)
    synth_synapse(root, cases=cases, size=size, slices=slices, seed=seed)
    return root


def predict_one(ckpt: Path, out: Path, size: int, slices: int, seed: int) -> dict[str, Any] | None:
    """Segment one synthetic raw (BTCV-style) NIfTI scan; None when inference is not available."""
    try:
        from vmunet.inference import Predictor
    except ImportError as err:  # inference is optional for the demo
        log.warning("skipping the NIfTI prediction: %s", err)
        return None
    from vmunet.data.synth import synth_synapse

    raw = out / "raw"
    if not (raw / "img").is_dir():
        synth_synapse(raw, cases=2, size=size, slices=slices, seed=seed + 1, raw=True)
    scan = sorted((raw / "img").glob("*.nii.gz"))[0]
    target = out / "prediction" / scan.name.replace("img", "pred", 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    pred = predictor.predict_file(scan, target)
    # Prediction.size_unit, the public rule, says whether volumes apply (this synthetic scan is a volume)
    volumes = pred.volumes_ml() if pred.size_unit == "volumes_ml" else {}
    return {"input": str(scan), "output": str(target), "volumes_ml": volumes}


def main(argv: Sequence[str] | None = None) -> int:
    from vmunet.runtime import apply_process_defaults, configure_logging

    apply_process_defaults()  # before torch loads (see there)
    args = parse_args(argv)
    configure_logging(args.verbose)
    config = Path(args.config)
    if not config.is_file():
        log.error("config %s not found (run from the repository root or pass --config)", config)
        return 2
    from vmunet.training.cli import run_lightning_cli
    from vmunet.training.reports import format_table

    out = Path(args.out)
    t0 = time.perf_counter()
    data = ensure_data(out / "data", args.cases, args.size, args.slices, args.seed)
    common = ["--config", str(config), "--data.init_args.root", str(data), "--trainer.default_root_dir", str(out),
              *QUIET]
    if args.max_epochs is not None:
        common += ["--trainer.max_epochs", str(args.max_epochs)]
    if args.image_size is not None:
        common += ["--data.init_args.image_size", str(args.image_size)]

    t_fit = time.perf_counter()
    fit = run_lightning_cli(["fit", *common])
    fit_s = time.perf_counter() - t_fit
    ckpt_cb = fit.trainer.checkpoint_callback
    best = Path(ckpt_cb.best_model_path or ckpt_cb.last_model_path)
    log.info("fit done in %.0f s; best checkpoint %s", fit_s, best)

    # the reports go into the fit's run folder; the table is printed once, below
    test = run_lightning_cli(["test", *common, "--ckpt_path", str(best)], print_results=False)
    summary = test.model.last_summary
    test_dir = Path(test.trainer.log_dir)

    prediction = predict_one(best, out, args.size, args.slices, args.seed)
    total_s = time.perf_counter() - t0

    mean_dice = summary["mean"]["dice"]
    lines = [
        format_table(summary).rstrip(),
        f"mean Dice {mean_dice:.4f} over {summary['num_cases']} synthetic test cases "
        f"(HD95 {summary['mean']['hd95']:.2f} voxels"
        + (f", {summary['mean']['hd95_mm']:.2f} mm" if summary["mean"].get("hd95_mm") is not None else "") + ")",
        f"best checkpoint : {best}",
        f"training run    : {Path(fit.trainer.log_dir)}  (TensorBoard: tensorboard --logdir {out})",
        f"test reports    : {test_dir / 'test_metrics.json'}, {test_dir / 'test_per_class.csv'}",
    ]
    if prediction:
        lines.append(f"NIfTI prediction: {prediction['output']}  (input {prediction['input']})")
    lines.append(f"time: fit {fit_s:.0f} s, total {total_s:.0f} s")
    print("\n".join(lines))
    if not mean_dice > args.min_dice:
        log.error("mean test Dice %.4f is not above %.2f", mean_dice, args.min_dice)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
