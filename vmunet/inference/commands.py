"""``vmunet predict``: segment a scan or a folder of scans with a trained checkpoint.

A thin wrapper over :class:`vmunet.inference.Predictor`: one label map per case
(``<case><suffix>.nii.gz``, ``.png`` for 2D images) in the input geometry, a JSON sidecar per case,
resumable (existing outputs are skipped unless ``--overwrite``), and a failing case never stops
the others -- the exit status says whether any failed.
"""

from __future__ import annotations

import argparse
import csv
import io as _stdio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CASE_FAILED, EXIT_USAGE = 0, 1, 2


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict",
        help="segment scans with a trained checkpoint, write label maps in scanner space",
        description="Segment one scan or a folder of scans (NIfTI, NRRD, MHA/MHD, DICOM series folders, "
        "Synapse test_vol_h5, or png/jpg for 2D models). Preprocessing comes from the checkpoint.",
    )
    p.add_argument("-i", "--input", required=True, type=Path, help="scan file or folder of scans")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("-m", "--model", required=True, type=Path, help="checkpoint (.ckpt) written by vmunet fit")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4 in-plane flips averaged)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write float16 class probabilities (<case><suffix>_probabilities.npz)")
    p.add_argument("--overwrite", action="store_true", help="recompute cases whose output already exists")
    p.add_argument("--suffix", default="", help="appended to the case name in output files (e.g. _seg)")
    p.add_argument("--reference", type=Path, default=None,
                   help="folder of ground-truth label maps named like the cases; writes metrics.csv")
    p.set_defaults(func=run_predict)


def _sidecar(pred: Any, predictor: Any, case: Path, out: Path, seconds: float) -> dict[str, Any]:
    return {
        "input": str(case),
        "output": out.name,
        "model": {k: predictor.info.get(k) for k in ("model_name", "model_kwargs", "vmunet_version")},
        "checkpoint": predictor.info.get("checkpoint"),
        "checkpoint_sha256": predictor.info.get("checkpoint_sha256"),
        "class_names": predictor.class_names,
        "preprocessing": predictor.preprocessing,
        "tta": predictor.tta,
        "device": str(predictor.device),
        "shape": list(pred.labels.shape),
        "spacing_ras_mm": list(pred.scan.spacing),
        "num_slices": pred.num_slices,
        "seconds": round(seconds, 3),
        "volumes_ml": pred.volumes_ml() if pred.scan.is_volume else None,
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from vmunet.inference import io

    text = json.dumps(payload, indent=2)
    io.atomic_write(path, lambda tmp: tmp.write_text(text), ".json")


def find_reference(ref_dir: Path, case: str) -> Path | None:
    """The ground-truth file for ``case`` in ``ref_dir`` (any scan extension), or None."""
    from vmunet.inference import io

    for ext in io.SCAN_EXTS:
        cand = ref_dir / f"{case}{ext}"
        if cand.exists():
            return cand
    return None


def _reference_labels(path: Path, predictor: Any) -> np.ndarray:
    from vmunet.inference import io

    ref = io.read_scan(path, orientation=predictor.preprocessing["orientation"], label=True)
    arr = np.asarray(ref.array)
    if not ref.is_volume and len(predictor.class_names) == 2 and arr.max(initial=0) > 1:
        arr = arr > 127  # binary masks stored as 0/255 (ISIC ground truth)
    if arr.ndim == 3 and not ref.is_volume:
        raise ValueError(f"reference {path}: expected a single-channel mask, got shape {arr.shape}")
    return np.rint(arr).astype(np.int64)


def _metrics_rows(case: str, pred_oriented: np.ndarray, spacing: tuple[float, ...], ref_path: Path,
                  predictor: Any) -> list[dict[str, Any]]:
    from vmunet.evaluation.metrics import case_metrics

    gt = _reference_labels(ref_path, predictor)
    if gt.shape != pred_oriented.shape:
        raise ValueError(f"reference {ref_path} has shape {gt.shape} after reorientation, prediction {pred_oriented.shape}")
    rows = case_metrics(pred_oriented, gt, predictor.class_names, spacing=spacing)
    return [{"case": case, **row} for row in rows]


def _write_metrics(path: Path, rows: list[dict[str, Any]], class_names: list[str]) -> str:
    """Write the per-case CSV (``vmunet test`` columns) and return a summary table."""
    from vmunet.evaluation.metrics import CASE_FIELDS, summarize_cases
    from vmunet.inference import io

    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CASE_FIELDS))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CASE_FIELDS})
    text = buf.getvalue()
    io.atomic_write(path, lambda tmp: tmp.write_text(text), ".csv")
    summary = summarize_cases(rows, class_names)
    lines = [f"{'class':<16} {'dice':>7} {'hd95':>8} {'hd95_mm':>8}"]
    for name, vals in [*summary["per_class"].items(), ("mean", summary["mean"])]:
        mm = "-" if vals["hd95_mm"] is None else f"{vals['hd95_mm']:.2f}"
        lines.append(f"{name:<16} {vals['dice']:>7.4f} {vals['hd95']:>8.2f} {mm:>8}")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    """Run ``vmunet predict``; returns the exit status (0 ok, 1 some case failed, 2 bad arguments)."""
    from tqdm.auto import tqdm

    from vmunet.inference import io
    from vmunet.inference.predictor import CheckpointError, Predictor

    try:
        cases = io.find_cases(args.input)
    except FileNotFoundError as err:
        log.error("%s", err)
        return EXIT_USAGE
    if args.reference is not None and not args.reference.is_dir():
        log.error("--reference %s is not a folder", args.reference)
        return EXIT_USAGE
    try:
        predictor = Predictor.from_checkpoint(args.model, device=args.device, batch_size=args.batch_size, tta=args.tta)
    except (CheckpointError, ValueError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    args.output.mkdir(parents=True, exist_ok=True)
    log.info("predicting %d case(s) from %s with %s on %s", len(cases), args.input, args.model, predictor.device)

    names = [io.case_name(c) for c in cases]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        log.error("several inputs share a case name, their outputs would collide: %s",
                  "; ".join(f"{n}: " + ", ".join(str(c) for c in cases if io.case_name(c) == n) for n in clashes))
        return EXIT_USAGE

    failed: list[str] = []
    skipped = done = slices = 0
    metric_rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for case, name in tqdm(list(zip(cases, names, strict=True)), desc="cases", unit="case", file=sys.stderr):
        out = args.output / f"{name}{args.suffix}{io.output_extension(case)}"
        sidecar = args.output / f"{name}{args.suffix}.json"
        ref = find_reference(args.reference, name) if args.reference is not None else None
        if args.reference is not None and ref is None:
            log.warning("%s: no reference for case %r in %s; no metrics for it", case, name, args.reference)
        try:
            if out.resolve() == case.resolve():
                raise ValueError(f"output {out} would overwrite the input; use another --output folder or a --suffix")
            # the sidecar is written last: a label map without it is from an interrupted run
            if out.exists() and sidecar.exists() and not args.overwrite:
                skipped += 1
                log.info("%s: %s exists, skipped (use --overwrite to recompute)", case, out)
                if ref is not None:
                    existing = io.read_scan(out, orientation=predictor.preprocessing["orientation"], label=True)
                    metric_rows += _metrics_rows(name, np.asarray(existing.array), existing.spacing, ref, predictor)
                continue
            probs = args.output / f"{name}{args.suffix}_probabilities.npz" if args.save_probabilities else None
            t0 = time.perf_counter()
            pred = predictor.predict_file(case, out, probabilities_path=probs, progress=True)
            seconds = time.perf_counter() - t0
            _write_json(sidecar, _sidecar(pred, predictor, case, out, seconds))
            done += 1
            slices += pred.num_slices
            if ref is not None:
                metric_rows += _metrics_rows(name, pred.labels_oriented, pred.scan.spacing, ref, predictor)
        except Exception as err:  # one bad case must not stop the others; reported by name below
            failed.append(str(case))
            log.error("%s: failed: %s", case, err)
            log.debug("traceback", exc_info=True)
    total = time.perf_counter() - t_start
    rate = slices / total if total > 0 else 0.0
    summary = (f"predicted {done} case(s), {slices} slices in {total:.1f} s ({rate:.2f} slices/s); "
               f"skipped {skipped} existing; failed {len(failed)}")
    print(summary)
    if metric_rows:
        print(_write_metrics(args.output / "metrics.csv", metric_rows, predictor.class_names))
    if failed:
        log.error("%d case(s) failed: %s", len(failed), ", ".join(failed))
        return EXIT_CASE_FAILED
    return EXIT_OK
