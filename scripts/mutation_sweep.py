"""Targeted mutation sweep: would the tests notice a wrong formula?

Each mutant is one textual edit of one source line (a flipped comparison, an off-by-one, a
dropped term, a swapped argument, ...) in code whose bug would silently change a reported
number or a decision: metrics, losses, scan geometry, slice-wise inference, the reference scan and
cross-scan, intensity preprocessing; since the second sweep also the settings compared when a run
resumes from a checkpoint, final-epoch validation and per-rank seeds, the checked reads and atomic
writes of ``fileio``, the checkpoint hash, the numba kernels, the Swin-UMamba† decoder, the ISIC /
Synapse paper augmentation and the ablation table. For each mutant the script

1. writes the mutated file into a private copy of the working tree (the tracked and untracked,
   not ignored, files; your checkout is never touched, so nothing can be left mutated),
2. runs the test files of the mutant's group there with ``pytest -x -q`` (the copy comes first on
   ``sys.path``, ahead of the editable install; no bytecode is written, so a stale ``.pyc`` of an
   earlier mutant can never be picked up),
3. restores the original file and records ``killed`` (a test failed, named in the report),
   ``survived`` (every test passed) or ``timeout``.

A survivor is either equivalent (no behaviour change; its ``note`` says why where that is known)
or a gap in the tests. The list below is two sweeps of 2026-11-26: the first 147 mutants, then 70
more in the groups from ``resume`` on. The mutants that survived and were closed by new tests name
those tests in their note. In the newer groups the tests added for the gaps come last in the
group's list, so ``killed_by`` tells whether a mutant fell to the tests as they were (an older
file) or only to the new ones (``callbacks`` is the exception: its one older test, a 3-epoch fit,
comes last there).

Usage (not part of ``make test``; run under ``nice``, it takes minutes)::

    nice -n 10 .venv/bin/python scripts/mutation_sweep.py                 # every group
    nice -n 10 .venv/bin/python scripts/mutation_sweep.py --group metrics --group losses
    .venv/bin/python scripts/mutation_sweep.py --list                     # the mutants only
    nice -n 10 .venv/bin/python scripts/mutation_sweep.py --json out.json # machine-readable

Exit status 0 when every non-equivalent mutant is killed, 1 otherwise (2 on a broken mutant
list: an anchor that no longer occurs exactly once, or a failing baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Test files run for each group (``-k`` expressions allowed as ``-k EXPR`` pairs).
GROUPS: dict[str, list[str]] = {
    "metrics": ["tests/evaluation/test_eval_metrics.py", "tests/training/test_image_eval.py"],
    "losses": ["tests/training/test_train_losses.py"],
    "geometry": ["tests/inference/test_io.py", "tests/data/test_volumes.py",
                 "tests/inference/test_predictor.py", "tests/inference/test_predict_reliability.py",
                 "tests/inference/test_predict_cli.py"],
    "slicewise": ["tests/inference/test_slicewise.py", "tests/inference/test_predictor.py",
                  "tests/inference/test_predict_reliability.py"],
    # only checks independent of the other scan backends: hand-worked answers, literal orders,
    # the original VM-UNet SS2D written out in the test (backend-vs-ref comparisons left out)
    "ops": ["tests/ops/test_ops_scan_known_answers.py", "tests/ops/test_ops_cross_scan.py",
            "tests/models/test_model_layers.py",
            "tests/models/test_model_weights.py::test_one_ss2d_block_matches_original_math",
            "-k", "not numba and not cuda and not triton"],
    "preprocessing": ["tests/data/test_normalization.py", "tests/data/test_transforms.py",
                      "tests/data/test_btcv_labels.py", "tests/data/test_synapse.py", "tests/data/test_prepare.py",
                      "tests/inference/test_predictor.py"],
    # the unit tests of the resume checks (the file's CLI runs take 2 min a mutant)
    "resume": ["tests/training/test_resume_settings.py", "tests/training/test_ckpt_settings_rules.py",
               "-k", "rules or reconcile_decides or changed_data_settings or schedule_length_of_a_resume"],
    "callbacks": ["tests/training/test_epoch_callbacks.py",
                  "tests/training/test_fit_cli_settings.py::test_the_final_epoch_is_validated_and_competes_for_the_best_checkpoint"],
    # selected tests of the readers, writers and the disk-full / interrupted-write paths
    "fileio": ["tests/data/test_synapse.py", "tests/inference/test_io.py", "tests/test_audit_leftovers.py",
               "tests/training/test_checkpoints.py", "tests/data/test_fileio.py", "-k", "fileio or bad_slice_content or nifti_round_trip or "
               "interrupted or input_hash or full_disk or nan_voxels or crash_mid_write"],
    "checkpoint": ["tests/inference/test_audit_predict.py::test_a_checkpoint_replaced_while_predict_reads_it_is_refused",
                   "tests/models/test_weights_files.py::test_rebuild_from_lightning_hyper_parameters_when_there_is_no_record",
                   "tests/models/test_model_weights.py::test_lightning_checkpoint_and_model_from_checkpoint",
                   "tests/models/test_checkpoint_record.py"],
    # the numba kernels against the default cross-scan / the reference scan (both other files)
    "numba_cross_scan": ["tests/ops/test_ops_cross_scan_fused.py", "-k", "numba"],
    "numba_scan": ["tests/ops/test_ops_scan_numba_exp.py", "-k", "decay_paths"],
    "swin_umamba_d": ["tests/parity/test_original_swin_umamba_d.py", "tests/models/test_swin_umamba.py",
                      "tests/models/test_stage_directions.py"],
    "isic_paper": ["tests/parity/test_original_isic_transforms.py", "tests/data/test_transforms.py"],
    # all but the two-variant `vmunet ablate` run (4 min); its survivors were run against it separately
    "ablation": ["tests/training/test_ablation.py", "-k", "not ablate_writes_the_table"],
}


@dataclass(frozen=True)
class Mutant:
    group: str
    path: str       # file relative to the repository root
    old: str        # must occur exactly once in the file
    new: str
    what: str       # the kind of mutation
    note: str = ""  # "equivalent: why" for equivalent mutants; "gap closed by TEST" where a test was added


def M(group: str, path: str, old: str, new: str, what: str, note: str = "") -> Mutant:
    return Mutant(group, path, old, new, what, note)


MET = "vmunet/evaluation/metrics.py"
LOSS = "vmunet/training/losses.py"
VOL = "vmunet/data/volumes.py"
IO = "vmunet/inference/io.py"
SW = "vmunet/inference/slicewise.py"
PRED = "vmunet/inference/predictor.py"
REF = "vmunet/ops/scan_ref.py"
COMMON = "vmunet/ops/scan_common.py"
CS = "vmunet/ops/cross_scan.py"
SS2D = "vmunet/layers/ss2d.py"
PP = "vmunet/data/preprocessing.py"
TF = "vmunet/data/transforms.py"
SF = "vmunet/data/synapse_format.py"
CKS = "vmunet/training/ckpt_settings.py"
CB = "vmunet/training/callbacks.py"
FIO = "vmunet/data/fileio.py"
CKP = "vmunet/models/checkpoint.py"
CSN = "vmunet/ops/cross_scan_numba.py"
SN = "vmunet/ops/scan_numba.py"
SU = "vmunet/models/swin_umamba.py"
AB = "vmunet/training/ablation.py"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ metrics: Dice
    M("metrics", MET, "return 2.0 * int(np.logical_and(pred, gt).sum()) / total",
      "return 1.0 * int(np.logical_and(pred, gt).sum()) / total", "constant"),
    M("metrics", MET, "total = int(pred.sum()) + int(gt.sum())",
      "total = int(pred.sum()) + int(gt.sum()) + 1", "add term"),
    M("metrics", MET, "        return math.nan\n    return 2.0", "        return 1.0\n    return 2.0",
      "empty rule"),
    # ------------------------------------------------------------------ metrics: HD95
    # surfaces (_surface: the erosion by the cross as shifted ANDs, the array border outside)
    M("metrics", MET, "interior[tuple(edge)] = False", "interior[tuple(edge)] &= True", "border inside"),
    M("metrics", MET, "interior[tuple(lo)] &= mask[tuple(hi)]", "interior[tuple(lo)] &= mask[tuple(lo)]",
      "one neighbour only"),
    M("metrics", MET, "min(t.stop + 1, n)", "min(t.stop, n)", "off-by-one",
      "equivalent: the box's last row is then on the cut, which _surface treats as outside, exactly as "
      "the background row it drops"),
    M("metrics", MET, "tight = _bounding_box(a | b, margin=0)", "tight = _bounding_box(a, margin=0)",
      "drop term", "gap closed by test_surface_distances_equal_bruteforce_for_nested_masks_at_the_array_border"),
    M("metrics", MET, "min(int(hit[-1]) + 1 + margin", "min(int(hit[-1]) + margin", "off-by-one",
      "equivalent: drops only the background margin after the last mask row (as margin=0 above)"),
    M("metrics", MET, "max(int(hit[0]) - margin, 0)", "max(int(hit[0]) - margin, 1)", "off-by-one"),
    # distances (feature transform of the other surface, scipy's formula at the surface voxels)
    M("metrics", MET, "d *= np.float64(sampling[axis])", "d *= np.float64(sampling[0])", "one axis's spacing"),
    M("metrics", MET, "ft = feature_transform(self.surfaces[1 - source], sampling)",
      "ft = feature_transform(self.surfaces[1 - source], None)", "drop spacing"),
    M("metrics", MET, "return np.sqrt(total)", "return total", "squared distance"),
    M("metrics", MET, "np.concatenate([a_to_b, b_to_a]), 95)", "np.concatenate([a_to_b, b_to_a]), 94)", "percentile"),
    M("metrics", MET, "np.concatenate([a_to_b, b_to_a]), 95)", "np.concatenate([a_to_b, b_to_a]), 96)", "percentile"),
    M("metrics", MET, "np.concatenate([a_to_b, b_to_a])", "np.concatenate([a_to_b, a_to_b])", "one direction only"),
    M("metrics", MET, "return float(max(np.percentile(a_to_b, 95)", "return float(min(np.percentile(a_to_b, 95)",
      "max -> min"),
    M("metrics", MET, "np.percentile(b_to_a, 95)))", "np.percentile(b_to_a, 94)))", "percentile"),
    M("metrics", MET, "a_to_b, b_to_a = self.directed(0, sampling), self.directed(1, sampling)",
      "a_to_b, b_to_a = self.directed(0, sampling), self.directed(0, sampling)", "swap args"),
    M("metrics", MET, 'if definition == "pooled":', 'if definition != "pooled":', "negate"),
    # ------------------------------------------------------------------ metrics: statuses, conventions
    M("metrics", MET, '"scored" if has_p and has_g else', '"scored" if has_p or has_g else', "and -> or"),
    M("metrics", MET, '"miss" if has_g else "false_positive"', '"miss" if has_p else "false_positive"',
      "swap"),
    M("metrics", MET, 'row["hd95"] = surfaces.hd95(None, hd95)',
      'row["hd95"] = surfaces.hd95(sampling, hd95)', "swap args",
      "gap closed by test_case_rows_give_hd95_in_voxels_and_in_mm_each_with_its_own_spacing"),
    M("metrics", MET, "else surfaces.hd95(sampling, hd95)", "else surfaces.hd95(None, hd95)",
      "drop spacing", "gap closed by test_case_rows_give_hd95_in_voxels_and_in_mm_each_with_its_own_spacing"),
    M("metrics", MET, "for idx, name in enumerate(class_names) if idx > 0]",
      "for idx, name in enumerate(class_names) if idx >= 0]", "< vs <="),
    M("metrics", MET, 'pair_metrics(pred == idx, gt == idx, spacing, hd95)',
      'pair_metrics(gt == idx, pred == idx, spacing, hd95)', "swap args"),
    M("metrics", MET, 'dice = 1.0 if status == "false_positive" else 0.0',
      'dice = 1.0 if status == "miss" else 0.0', "swap"),
    M("metrics", MET, 'dice = 1.0 if status == "false_positive" else 0.0',
      'dice = 1.0 if status != "miss" else 0.0', "absent rule"),
    M("metrics", MET, '"hd95": 0.0 if computed else None, "hd95_mm": mm}',
      '"hd95": None, "hd95_mm": mm}', "drop"),
    M("metrics", MET, 'mm = 0.0 if computed and row.get("has_spacing") else None',
      "mm = 0.0 if computed else None", "drop term"),
    M("metrics", MET, 'return {"dice": 0.0 if status == "miss" else None, "hd95": None',
      'return {"dice": 0.0 if status == "false_positive" else None, "hd95": None', "swap"),
    M("metrics", MET, 'return {"dice": 0.0 if status == "miss" else None, "hd95": None',
      'return {"dice": 0.0 if status == "miss" else None, "hd95": 0.0 if status == "miss" else None',
      "HD95 0 for misses"),
    M("metrics", MET, 'rows = dedup_rows(rows, ("case", "class"))', "rows = [dict(r) for r in rows]",
      "drop dedup"),
    M("metrics", MET, 'rows = dedup_rows(rows, ("case", "class"))', 'rows = dedup_rows(rows, ("case",))',
      "drop key"),
    M("metrics", MET, '"misses": sum(r["status"] == "miss" for r in mine)',
      '"misses": sum(r["status"] == "absent" for r in mine)', "swap"),
    M("metrics", MET, "{key: _mean([per_class[n][key] for n in foreground]) for key",
      "{key: _mean([per_class[n][key] for n in foreground[:-1]]) for key", "drop class"),
    M("metrics", MET, 'mean["hd95_mm"] = None if any(v is None for v in mm)',
      'mean["hd95_mm"] = None if all(v is None for v in mm)', "any -> all"),
    M("metrics", MET, "if v is not None and not (isinstance(v, float) and math.isnan(v))]",
      "if v is not None]", "keep NaN"),
    M("metrics", MET, "return float(np.mean(vals)) if vals else math.nan",
      "return float(np.median(vals)) if vals else math.nan", "mean -> median"),
    M("metrics", MET, '"num_cases": len({r["case"] for r in rows}),', '"num_cases": len(rows),',
      "count rows"),
    M("metrics", MET, "if any(s[\"hd95\"] is not None and s[\"hd95_mm\"] is None for s in scores):",
      "if all(s[\"hd95\"] is not None and s[\"hd95_mm\"] is None for s in scores):", "any -> all"),
    # ------------------------------------------------------------------ metrics: ISIC confusion
    M("metrics", MET, "pred = prob >= self.threshold", "pred = prob > self.threshold", ">= vs >"),
    M("metrics", MET, "truth = gt >= 0.5", "truth = gt > 0.5", ">= vs >",
      "gap closed by test_soft_isic_mask_at_exactly_half_is_foreground"),
    M("metrics", MET, "fn = int(np.logical_and(~p, g).sum())", "fn = int(np.logical_and(p, ~g).sum())",
      "swap"),
    M("metrics", MET, "tn = int(p.size - tp - fp - fn)", "tn = int(p.size - tp - fp)", "drop term"),
    M("metrics", MET, '"iou": _ratio(tp, tp + fp + fn)', '"iou": _ratio(tp, tp + fp)', "drop term"),
    M("metrics", MET, '"dice": _ratio(2 * tp, 2 * tp + fp + fn)', '"dice": _ratio(2 * tp, tp + fp + fn)',
      "constant"),
    M("metrics", MET, '"accuracy": _ratio(tp + tn, tp + fp + fn + tn)', '"accuracy": _ratio(tp, tp + fp + fn + tn)',
      "drop term"),
    M("metrics", MET, '"sensitivity": _ratio(tp, tp + fn)', '"sensitivity": _ratio(tn, tn + fp)', "swap"),
    M("metrics", MET, '"specificity": _ratio(tn, tn + fp)', '"specificity": _ratio(tn, tn + fn)', "swap"),
    M("metrics", MET, "return float(num) / float(den) if den else 0.0",
      "return float(num) / float(den) if den else 1.0", "empty rule",
      "gap closed by test_pooled_metrics_are_zero_where_the_original_divides_by_zero"),
    M("metrics", MET, "false_positives += has_p and not has_g", "false_positives += has_p and has_g", "negate"),
    M("metrics", MET, 'dice.append(1.0 if has_p else 0.0)', 'dice.append(0.0 if has_p else 1.0)', "swap",
      "gap closed by test_per_image_dice_and_iou_are_the_plain_per_image_ratios"),
    M("metrics", MET, 'iou.append(1.0 if has_p else 0.0)', 'iou.append(0.0)', "empty rule",
      "gap closed by test_per_image_dice_and_iou_are_the_plain_per_image_ratios"),
    M("metrics", MET, 'iou.append(r["tp"] / (r["tp"] + r["fp"] + r["fn"]))',
      'iou.append(r["tp"] / (r["tp"] + r["fp"]))', "drop term",
      "gap closed by test_per_image_dice_and_iou_are_the_plain_per_image_ratios"),
    M("metrics", MET, 'for row in dedup_rows(images, ("image",)):', "for row in images:", "drop dedup"),
    M("metrics", MET, 'out.tn += row["tn"]', 'out.tn += row["fn"]', "swap"),
    M("metrics", MET, "if len(values) != ndim or any(not s > 0 for s in values):",
      "if len(values) != ndim or any(not s >= 0 for s in values):", "> vs >=",
      "gap closed by test_zero_or_negative_spacing_is_refused"),
    # ------------------------------------------------------------------ losses
    M("losses", LOSS, "return 1.0 - (2.0 * intersection + self.smooth_nr)",
      "return 1.0 - (1.0 * intersection + self.smooth_nr)", "constant"),
    M("losses", LOSS, "(2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)",
      "(2.0 * intersection + self.smooth_dr) / (denominator + self.smooth_nr)", "swap args",
      "gap closed by test_unequal_smoothing_terms_equal_monai"),
    M("losses", LOSS, "(probs * probs).sum(dims) + (onehot * onehot).sum(dims)",
      "(probs * probs).sum(dims) + onehot.sum(dims)", "drop square",
      "equivalent: the one-hot target of the multi-class loss is 0/1, so g**2 == g; the binary "
      "loss with soft ISIC masks never takes squared_pred in the recipes"),
    M("losses", LOSS, "(probs * probs).sum(dims) + (onehot * onehot).sum(dims)",
      "probs.sum(dims) + (onehot * onehot).sum(dims)", "drop square"),
    M("losses", LOSS, "dims = [0, *range(2, probs.ndim)] if self.batch_dice",
      "dims = [*range(2, probs.ndim)] if self.batch_dice", "drop axis"),
    M("losses", LOSS, "if not self.include_background and self.num_classes > 1:",
      "if self.include_background and self.num_classes > 1:", "negate"),
    M("losses", LOSS, "return self.lambda_ce * ce + self.lambda_dice * dice.mean()",
      "return self.lambda_ce * ce + self.lambda_dice * dice.sum()", "mean -> sum"),
    M("losses", LOSS, "return self.lambda_ce * ce + self.lambda_dice * dice.mean()",
      "return self.lambda_dice * ce + self.lambda_ce * dice.mean()", "swap weights"),
    M("losses", LOSS, "probs = torch.softmax(logits, dim=1)", "probs = torch.softmax(logits, dim=-1)", "axis"),
    M("losses", LOSS, "pos_weight=weight)", "weight=weight)", "swap kwarg"),
    M("losses", LOSS, "ce = F.cross_entropy(logits, index, weight=weight)", "ce = F.cross_entropy(logits, index)",
      "drop weight"),
    M("losses", LOSS, "if weight is not None and self.num_classes > 1:",
      "if weight is not None and self.num_classes >= 1:", "> vs >="),
    M("losses", LOSS, "ce = F.binary_cross_entropy_with_logits(logits, onehot, pos_weight=weight)",
      "ce = F.binary_cross_entropy_with_logits(logits, onehot, pos_weight=weight, reduction='sum')",
      "reduction"),
    # ------------------------------------------------------------------ geometry (SimpleITK -> RAS, writing back)
    M("geometry", VOL, "_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])",
      "_LPS_TO_RAS = np.diag([1.0, -1.0, 1.0, 1.0])", "sign"),
    M("geometry", VOL, "lps[:3, :3] = rot @ np.diag(", "lps[:3, :3] = rot.T @ np.diag(", "transpose"),
    M("geometry", VOL, "lps[:3, :3] = rot @ np.diag(np.asarray(spacing, dtype=np.float64)[:3])",
      "lps[:3, :3] = np.diag(np.asarray(spacing, dtype=np.float64)[:3]) @ rot", "swap product"),
    M("geometry", VOL, "lps[:3, 3] = np.asarray(origin, dtype=np.float64)[:3]",
      "lps[:3, 3] = -np.asarray(origin, dtype=np.float64)[:3]", "sign"),
    M("geometry", VOL, "np.transpose(arr, tuple(range(nd - 1, -1, -1)))", "np.transpose(arr, tuple(range(nd)))",
      "axis order"),
    M("geometry", VOL, "return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))",
      "return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=1))", "axis"),
    M("geometry", VOL, "new_affine = affine @ ornt.inv_ornt_aff(transform, array.shape[:3])",
      "new_affine = affine @ ornt.inv_ornt_aff(transform, array.shape[:3][::-1])", "axis order"),
    M("geometry", VOL, "back = ornt.ornt_transform(RAS_ORNT, transform)",
      "back = ornt.ornt_transform(transform, RAS_ORNT)", "swap args"),
    M("geometry", IO, "ras = dhw.transpose(2, 1, 0)", "ras = dhw.transpose(1, 2, 0)", "axis order"),
    M("geometry", IO, "ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)", "ras_affine = affine",
      "drop term"),
    M("geometry", IO, "expected = tuple(int(shape[int(a)]) for a in np.argsort(ornt[:, 0]))",
      "expected = tuple(int(shape[int(a)]) for a in ornt[:, 0])", "inverse permutation"),
    M("geometry", IO, "return np.dtype(np.uint8) if num_labels <= 256 else", "return np.dtype(np.uint8) if num_labels < 256 else",
      "<= vs <", "gap closed by test_label_dtype_boundary_and_label_256_survives_the_write"),
    M("geometry", IO, "labels.astype(label_dtype(int(labels.max(initial=0)) + 1), copy=False)",
      "labels.astype(label_dtype(int(labels.max(initial=0))), copy=False)", "off-by-one",
      "gap closed by test_label_dtype_boundary_and_label_256_survives_the_write"),
    M("geometry", IO, "img.header.set_slope_inter(1.0, 0.0)", "pass", "drop",
      "equivalent: nibabel resets scl_slope/scl_inter of a loaded header (the scaling moves into "
      "the data), so the header template never carries scaling; the call stays as a guard"),
    M("geometry", IO, "    img.set_data_dtype(data.dtype)\n", "", "drop"),
    M("geometry", IO, "        if self.ornt is None:\n            return data\n", "", "drop branch"),
    M("geometry", IO, "back = nib.orientations.ornt_transform(volumes.RAS_ORNT, scan.ornt)",
      "back = nib.orientations.ornt_transform(scan.ornt, volumes.RAS_ORNT)", "swap args",
      "gap closed by test_probability_file_has_the_original_affine_and_layout"),
    M("geometry", IO, "return scan.affine @ nib.orientations.inv_ornt_aff(back, scan.array.shape)",
      "return scan.affine", "drop term"),
    M("geometry", PRED, '(1000.0 if unit == "volumes_ml" else 1.0)', '(1024.0 if unit == "volumes_ml" else 1.0)',
      "constant"),
    M("geometry", PRED, "if min(size) < MIN_INPLANE:", "if min(size) <= MIN_INPLANE:", "< vs <="),
    # ------------------------------------------------------------------ slice-wise inference
    M("slicewise", SW, "return (probs[:, 0] >= threshold).long()", "return (probs[:, 0] > threshold).long()",
      ">= vs >"),
    M("slicewise", SW, "return probs.max(dim=1).indices",
      "return probs.shape[1] - 1 - probs.flip(1).max(dim=1).indices", "last maximum on ties"),
    M("slicewise", SW, "TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))",
      "TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (3,))", "flip set",
      "gap closed by test_tta_averages_the_four_in_plane_flips"),
    M("slicewise", SW, "p = torch.flip(p, dims) if dims else p", "p = p", "drop unflip"),
    M("slicewise", SW, "probs = total / len(flips)", "probs = total / 2", "constant"),
    M("slicewise", SW, 'native = F.interpolate(probs, size=out_hw, mode="bilinear", align_corners=False)',
      'native = F.interpolate(probs, size=out_hw, mode="bilinear", align_corners=True)', "flag"),
    M("slicewise", SW, 'native = F.interpolate(probs, size=out_hw, mode="bilinear", align_corners=False)',
      'native = F.interpolate(probs, size=out_hw, mode="nearest")', "mode"),
    M("slicewise", SW, "x = F.interpolate(x, size=self.image_size, mode=self.image_interpolation, align_corners=False)",
      "x = F.interpolate(x, size=self.image_size, mode=self.image_interpolation, align_corners=True)", "flag"),
    M("slicewise", SW, "out = np.stack([zoom(s, factors, order=0) for s in src])",
      "out = np.stack([zoom(s, factors, order=1) for s in src])", "constant"),
    M("slicewise", SW, "factors = (out_hw[0] / h, out_hw[1] / w)", "factors = (out_hw[1] / w, out_hw[0] / h)",
      "swap axes"),
    M("slicewise", SW, 'if self.resample == "probabilities" or same:', 'if self.resample == "probabilities":',
      "drop term",
      "equivalent: with equal sizes the label zoom has factor 1, and scipy's order-0 zoom by 1 is "
      "the identity"),
    M("slicewise", SW, "native = torch.cat([1.0 - native, native], dim=1)",
      "native = torch.cat([native, 1.0 - native], dim=1)", "swap"),
    M("slicewise", SW, "chunk = slices[start:start + self.batch_size]",
      "chunk = slices[start + 1:start + 1 + self.batch_size]", "off-by-one"),
    M("slicewise", PRED, "lab_o = np.ascontiguousarray(slices_to_volume(labels, axis))",
      "lab_o = np.ascontiguousarray(slices_to_volume(labels, 2))", "axis"),
    M("slicewise", PRED, "norm = channels.astype(np.float32) if scan.normalized else",
      "norm = channels.astype(np.float32) if not scan.normalized else", "negate"),
    M("slicewise", PRED, "        if scan.normalized:  # stored already windowed",
      "        if not scan.normalized:  # stored already windowed", "negate"),
    # ------------------------------------------------------------------ reference scan, cross-scan, SS2D
    M("ops", REF, "dA = torch.exp(dt_t[:, :, None] * A_f)", "dA = torch.exp(-dt_t[:, :, None] * A_f)", "sign"),
    M("ops", REF, "dBu = (dt_t * u_t)[:, :, None] * B_t", "dBu = u_t[:, :, None] * B_t", "drop term"),
    M("ops", REF, "h = dA * h + dBu", "h = h + dBu", "drop term"),
    M("ops", REF, "ys.append((h * C_t).sum(-1))", "ys.append((h * C_t).mean(-1))", "sum -> mean",
      "killed by test_known_answer_two_states_sum_over_n (N = 2, hand-worked) and the original-SS2D check"),
    M("ops", COMMON, "return X.repeat_interleave(dim // G, dim=1) if G > 1 else X",
      "return X.repeat(1, dim // G, 1) if G > 1 else X", "interleave -> tile"),
    M("ops", COMMON, "y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]",
      "y = y - u.to(y.dtype) * D.to(y.dtype)[:, None]", "sign"),
    M("ops", COMMON, "y = y * F.silu(z.to(y.dtype))", "y = y * torch.sigmoid(z.to(y.dtype))", "function"),
    M("ops", COMMON, "delta = delta + delta_bias.to(compute)[:, None]",
      "delta = delta + delta_bias.to(compute)[None, :]", "axis"),
    M("ops", CS, "        return x.transpose(2, 3).reshape(B, C, H * W)\n    if direction == \"h_flip\"",
      "        return x.reshape(B, C, H * W)\n    if direction == \"h_flip\"", "drop transpose"),
    M("ops", CS, "return y.reshape(B, C, W, H).transpose(2, 3).reshape(B, C, L)\n    if direction == \"h_flip\"",
      "return y.reshape(B, C, H, W).transpose(2, 3).reshape(B, C, L)\n    if direction == \"h_flip\"",
      "swap axes"),
    M("ops", CS, "return y.flip(-1).reshape(B, C, W, H).transpose(2, 3).reshape(B, C, L)",
      "return y.reshape(B, C, W, H).transpose(2, 3).reshape(B, C, L).flip(-1)", "order of ops",
      "equivalent: reversing the column-major sequence and reversing the row-major one are the "
      "same 180-degree rotation, so the flip commutes with the un-transpose"),
    M("ops", CS, "for k in range(1, len(dirs)):", "for k in range(2, len(dirs)):", "off-by-one"),
    M("ops", CS, "key = (ii + jj) * H + ii", "key = (ii + jj) * H - ii", "sign"),
    M("ops", CS, "key = ((jj - ii) % W) * H + ii", "key = ((ii - jj) % W) * H + ii", "swap"),
    M("ops", SS2D, "y = self.out_norm(y) * F.silu(z)", "y = self.out_norm(y) * torch.sigmoid(z)", "function"),
    M("ops", SS2D, "dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, N, N], dim=2)",
      "dts, Cs, Bs = torch.split(x_dbl, [self.dt_rank, N, N], dim=2)", "swap"),
    M("ops", SS2D, "-torch.exp(self.A_logs.to(f)),", "-self.A_logs.to(f),", "drop exp"),
    M("ops", SS2D, "y = self.forward_core(x).transpose(1, 2).reshape(Bsz, H, W, self.d_inner)",
      "y = self.forward_core(x).reshape(Bsz, H, W, self.d_inner)", "drop transpose"),
    M("ops", SS2D, "A = torch.arange(1, N + 1, dtype=torch.float32)", "A = torch.arange(2, N + 2, dtype=torch.float32)",
      "off-by-one", "gap closed by test_ss2d_parameter_layout_and_shapes (S4D-real A, D = 1 added)"),
    # ------------------------------------------------------------------ preprocessing
    M("preprocessing", PP, "return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)",
      "return ((np.clip(x, lo, hi) - lo) / hi).astype(np.float32)", "drop term"),
    M("preprocessing", PP, "return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)",
      "return ((x - lo) / (hi - lo)).astype(np.float32)", "drop clip"),
    M("preprocessing", PP, "SYNAPSE_HU_WINDOW = (-125.0, 275.0)", "SYNAPSE_HU_WINDOW = (-125.0, 257.0)",
      "constant"),
    M("preprocessing", PP, "return ((x - mean) / std).astype(np.float32)",
      "return (x / std - mean).astype(np.float32)", "order of ops",
      "gap closed by test_zscore_and_minmax_modes_hand_computed"),
    M("preprocessing", PP, "return ((x - x.min()) / span * (hi - lo) + lo).astype(np.float32)",
      "return ((x - x.min()) / span * (hi - lo)).astype(np.float32)", "drop term",
      "gap closed by test_zscore_and_minmax_modes_hand_computed"),
    M("preprocessing", PP, "return np.full_like(x, lo)", "return np.full_like(x, hi)", "swap",
      "gap closed by test_zscore_and_minmax_modes_hand_computed"),
    M("preprocessing", PP, "mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))",
      "mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64, ddof=1))", "ddof"),
    M("preprocessing", PP, "lo, hi = np.percentile(fg_values, [0.5, 99.5])",
      "lo, hi = np.percentile(fg_values, [0.5, 99.0])", "percentile"),
    M("preprocessing", PP, "fg = np.asarray(label) > 0", "fg = np.asarray(label) >= 0", "> vs >="),
    M("preprocessing", PP, "return ((np.clip(x, lo, hi) - float(intensity[\"mean\"])) / std).astype(np.float32)",
      "return ((x - float(intensity[\"mean\"])) / std).astype(np.float32)", "drop clip"),
    M("preprocessing", PP, "return binary_fill_holes(np.any(np.asarray(channels) != 0, axis=0))",
      "return np.any(np.asarray(channels) != 0, axis=0)", "drop fill"),
    M("preprocessing", PP, "return [slice_axis, *[a for a in (0, 1, 2) if a != slice_axis][::-1]]",
      "return [slice_axis, *[a for a in (0, 1, 2) if a != slice_axis]]", "drop reversal"),
    M("preprocessing", SF, "BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 3, 2: 4,", "BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 4, 2: 3,",
      "swap labels"),
    M("preprocessing", SF, '"spacing_dhw": [float(sz), float(sy), float(sx)],',
      '"spacing_dhw": [float(sx), float(sy), float(sz)],', "axis order"),
    M("preprocessing", SF, "lab_dhw = volume_to_slices(remap_btcv(lab_ras), 2)",
      "lab_dhw = volume_to_slices(lab_ras, 2)", "drop mapping"),
    M("preprocessing", TF, "return np.flip(np.rot90(x, k, axes=(1, 2)), axis=axis + 1).copy()",
      "return np.flip(np.rot90(x, k, axes=(1, 2)), axis=axis).copy()", "axis"),
    M("preprocessing", TF, "return ndimage.rotate(x, angle, axes=(2, 1), order=0, reshape=False)",
      "return ndimage.rotate(x, angle, axes=(1, 2), order=0, reshape=False)", "axis order",
      "equivalent: scipy.ndimage.rotate sorts its two axes, so (2, 1) and (1, 2) rotate alike"),
    M("preprocessing", TF, 'return ("rotate", int(self.R.randint(-20, 20)))',
      'return ("rotate", int(self.R.randint(-20, 21)))', "off-by-one"),
    M("preprocessing", TF, "weights.append(0.25 if rot_flip else 0.5)", "weights.append(0.5 if rot_flip else 0.5)",
      "constant"),
    M("preprocessing", TF, 'mode=("bilinear", "bilinear"), dtype=np.float64)]',
      'mode=("bilinear", "nearest"), dtype=np.float64)]', "mode"),
    M("preprocessing", TF, "RandFlipd(keys=keys, prob=0.5, spatial_axis=1), RandFlipd(keys=keys, prob=0.5, spatial_axis=0)",
      "RandFlipd(keys=keys, prob=0.5, spatial_axis=1), RandFlipd(keys=keys, prob=0.5, spatial_axis=1)", "axis",
      "gap closed by test_isic_flips_cover_both_axes"),
    M("preprocessing", TF, "divisor=np.asarray(std, dtype=np.float32), channel_wise=True)",
      "divisor=np.asarray(std, dtype=np.float32), channel_wise=False)", "flag"),
    # ================================================================== second sweep, 2026-11-26 (evening)
    # Per group, against the tests as they were / after the new tests (killed, equivalent, gaps):
    #   resume            5 killed, 10 gaps -> 15 killed          callbacks     1* killed, 4 gaps, 1 equivalent -> 5 killed
    #   fileio            4* killed, 5 gaps, 2 equivalent -> 9    checkpoint    1 killed, 3 gaps -> 4 killed
    #   numba_cross_scan  4 killed                                numba_scan    8 killed, 1 equivalent
    #   swin_umamba_d     5 killed, 1 gap, 1 equivalent -> 6      isic_paper    6 killed, 1 gap -> 7 killed
    #   ablation          4 killed, 3 gaps -> 7 killed
    # (* one of them by reading only: run with the new tests first, the older test was not reached)
    # ------------------------------------------------------------------ resume: settings compared on --ckpt_path
    M("resume", CKS, 'EVALUATION_KEYS = ("slice_batch_size", "val_hd95", "hd95", "metric_conventions", "threshold", '
      '"resample")', 'EVALUATION_KEYS = ("slice_batch_size", "val_hd95", "hd95", "metric_conventions", "resample")',
      "drop key", "gap closed by test_each_evaluation_setting_given_is_used"),
    M("resume", CKS, 'RUNTIME_MODEL_KWARGS = ("scan_backend", "use_checkpoint")', 'RUNTIME_MODEL_KWARGS = ("scan_backend",)',
      "drop key", "gap closed by test_runtime_model_options_given_are_used_when_resuming"),
    M("resume", CKS, 'NOT_COMPARED = ("num_classes", "in_chans", "preprocessing")',
      'NOT_COMPARED = ("num_classes", "in_chans")', "drop key",
      "gap closed by test_linked_and_private_keys_are_not_compared"),
    M("resume", CKS, "if key in NOT_COMPARED or key.startswith(\"_\"):", "if key in NOT_COMPARED:", "drop term",
      "gap closed by test_linked_and_private_keys_are_not_compared"),
    M("resume", CKS, "    if isinstance(value, (list, tuple)):\n        return [_plain(v)",
      "    if isinstance(value, list):\n        return [_plain(v)", "drop tuple",
      "gap closed by test_a_tuple_given_equals_the_checkpoints_list"),
    M("resume", CKS, "if sub not in mine_kw or a == b:", "if a == b:", "drop term"),
    M("resume", CKS, "                merged[sub] = a\n", "                merged[sub] = b\n", "swap"),
    M("resume", CKS, 'elif subcommand == "fit":', 'elif subcommand != "test":', "validate as fit",
      "gap closed by test_validate_does_not_refuse_training_settings_it_does_not_use"),
    M("resume", CKS, "math.isclose(a, b, rel_tol=1e-6)", "math.isclose(a, b, rel_tol=1e-2)", "tolerance",
      "gap closed by test_preprocessing_records_that_differ_are_refused"),
    M("resume", CKS, "return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)",
      "return all(_close(a[k], b.get(k)) for k in a)", "drop term",
      "gap closed by test_preprocessing_records_that_differ_are_refused"),
    M("resume", CKS, "if key not in DECISION_KEYS and not _close(", "if not _close(", "drop term",
      "gap closed by test_preprocessing_records_equal_to_a_relative_1e_6_pass"),
    M("resume", CKS, 'if k in LOADING_ONLY or (k.startswith("_") and k != "_class_path")',
      'if k in LOADING_ONLY or k.startswith("_")', "drop term",
      "gap closed by test_another_data_module_class_is_named_in_the_resume_warning"),
    M("resume", CKS, "if new is None or (old is not None and new > old)", "if old is not None and new > old",
      "drop term"),
    M("resume", CKS, "if new is None or (old is not None and new > old)", "if new is None or (old is not None and new < old)",
      "flip"),
    M("resume", CKS, "new = max_epochs if max_epochs > 0 else None", "new = max_epochs", "drop rule"),
    # ------------------------------------------------------------------ callbacks: final-epoch validation, rank seeds
    M("callbacks", CB, "and trainer.current_epoch == max_epochs - 1 and", "and trainer.current_epoch == max_epochs and",
      "off-by-one",
      "killed by test_the_final_epoch_is_validated_and_the_interval_restored, run first; not run against the older 3-epoch fit alone (by reading it fails there too: epoch 2 is not validated)"),
    M("callbacks", CB, " and max_epochs % every != 0):", "):", "drop term",
      "equivalent: when max_epochs is a multiple of the interval Lightning validates the final epoch "
      "anyway, so setting the interval to 1 there changes nothing; it is restored at the end of training"),
    M("callbacks", CB, "        # a run resumed in the middle of its final epoch gets no on_train_epoch_start for it\n"
      "        self._final_epoch(trainer)", "        pass", "drop hook",
      "gap closed by test_a_run_resumed_inside_its_final_epoch_validates_it"),
    M("callbacks", CB, "trainer.check_val_every_n_epoch, self._every = self._every, None", "self._every = None",
      "not restored",
      "gap closed by test_the_final_epoch_is_validated_and_the_interval_restored"),
    M("callbacks", CB, "[seed % 2**32, epoch, rank, 0x5EED]", "[seed % 2**32, epoch, 0, 0x5EED]", "drop rank",
      "gap closed by test_epoch_seed_repeats_an_epoch_and_separates_epochs_and_ranks"),
    M("callbacks", CB, "[seed % 2**32, epoch, rank, 0x5EED]", "[seed % 2**32, 0, rank, 0x5EED]", "drop epoch",
      "gap closed by test_epoch_seed_repeats_an_epoch_and_separates_epochs_and_ranks"),
    # ------------------------------------------------------------------ fileio: checked reads, atomic writes
    M("fileio", FIO, "bad = np.unique(lab[(lab < 0) | (lab >= num_labels)])",
      "bad = np.unique(lab[(lab < 0) | (lab > num_labels)])", ">= vs >"),
    M("fileio", FIO, "bad = np.unique(lab[(lab < 0) | (lab >= num_labels)])",
      "bad = np.unique(lab[(lab < -1) | (lab >= num_labels)])", "off-by-one",
      "gap closed by test_label_values_just_outside_the_classes_are_refused"),
    M("fileio", FIO, "if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():",
      "if np.issubdtype(image.dtype, np.floating) and np.isnan(image).any():", "NaN only",
      "gap closed by test_an_image_with_a_nan_or_infinite_voxel_is_refused"),
    M("fileio", FIO, "        if not np.isfinite(lab).all():\n            raise DataError(f\"{path}: label contains",
      "        if np.isnan(lab).any():\n            raise DataError(f\"{path}: label contains", "NaN only",
      "gap closed by test_a_non_finite_label_is_refused"),
    M("fileio", FIO, "elif not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):",
      "elif not np.issubdtype(lab.dtype, np.integer):", "drop bool",
      "gap closed by test_boolean_masks_are_class_ids_0_and_1"),
    M("fileio", FIO, "expected = tuple(image.shape if image_shape is None else image_shape)",
      "expected = tuple(image.shape)", "drop argument",
      "equivalent: no caller passes image_shape (every reader checks the label against the image's own shape)"),
    M("fileio", FIO, "        os.chmod(tmp, _FILE_MODE)\n", "", "drop"),
    M("fileio", FIO, "        with contextlib.suppress(FileNotFoundError):\n            os.unlink(tmp)\n",
      "        pass\n", "leave temporary file",
      "killed by test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file, run first (by reading, test_interrupted_label_map_write_leaves_nothing fails too)"),
    M("fileio", FIO, "err.errno is not None and err.filename in (None, tmp):",
      "err.errno is not None and err.filename is None:", "drop term",
      "gap closed by test_a_full_disk_names_the_file_being_written[temporary]"),
    M("fileio", FIO, 'writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})',
      "writer.writerow({k: row.get(k) for k in fields})", "drop rule",
      "equivalent: csv.DictWriter writes None as an empty cell itself; the explicit rule documents it"),
    M("fileio", FIO, "            digest.update(block)\n", "            digest.update(block[: 1 << 19])\n",
      "drop bytes past the first half MiB of a block"),
    # ------------------------------------------------------------------ checkpoint: hash of the weights read, rebuild
    M("checkpoint", CKP, "    sha256 = file_sha256(path)\n    ckpt = read_checkpoint(path)\n",
      "    ckpt = read_checkpoint(path)\n    sha256 = file_sha256(path)\n", "hash after the read"),
    M("checkpoint", CKP, "kwargs = {**dict(record[\"model_kwargs\"]), **overrides}",
      "kwargs = {**overrides, **dict(record[\"model_kwargs\"])}", "precedence",
      "gap closed by test_overrides_replace_the_recorded_model_options"),
    M("checkpoint", CKP, '"num_classes": hparams["num_classes"], "in_chans": hparams["in_chans"]}',
      '"num_classes": hparams["num_classes"], "in_chans": 1}', "constant",
      "gap closed by test_an_rgb_model_is_rebuilt_from_lightning_hyper_parameters"),
    M("checkpoint", CKP, 'if record.get("preprocessing") is None:', 'if "preprocessing" not in record:', "rule",
      "gap closed by test_a_record_without_preprocessing_takes_the_hyper_parameters_one"),
    # ------------------------------------------------------------------ numba: cross-scan and scan kernels
    M("numba_cross_scan", CSN, "                v = xr[h * W + w]\n                t = w * H + h\n",
      "                v = xr[h * W + w]\n                t = h * W + w\n", "swap axes"),
    M("numba_cross_scan", CSN, "row[i] = ((y0[i] + y1[t]) + y2[L - 1 - i]) + y3[L - 1 - t]",
      "row[i] = ((y0[i] + y1[t]) + y2[L - 1 - t]) + y3[L - 1 - i]", "swap"),
    M("numba_cross_scan", CSN, "row[i] = ((y0[i] + y1[t]) + y2[L - 1 - i]) + y3[L - 1 - t]",
      "row[i] = y0[i] + (y1[t] + (y2[L - 1 - i] + y3[L - 1 - t]))", "order of additions"),
    M("numba_cross_scan", CSN, "n_tiles = (C + tile - 1) // tile", "n_tiles = C // tile", "off-by-one"),
    M("numba_scan", SN, "sp = max(x, np.float32(0.0)) + np.float32(2.0) * s * p",
      "sp = max(x, np.float32(0.0)) + np.float32(1.0) * s * p", "constant"),
    M("numba_scan", SN, "g = r if x >= np.float32(0.0) else e * r", "g = r", "drop branch"),
    M("numba_scan", SN, "            if dt_row[t] < 0:\n", "            if dt_row[t] < -1:\n", "off-by-one",
      "equivalent (it ran into the 600 s limit at load 9, the full group takes 460 s): a channel with dt in "
      "[-1, 0) then takes the exp without the upper clamp at 88, which gives the same float32 values for "
      "exponents up to 88 and exp(x) itself up to float32's overflow at 88.7 (the clamp gives exp(88)); "
      "past that the reference scan overflows to inf too"),
    M("numba_scan", SN, "hn1 = decay(dtv1 * a1[n]) * h1[n] + xv1 * brow[n]", "hn1 = decay(dtv1 * a0[n]) * h1[n] + xv1 * brow[n]",
      "wrong channel"),
    M("numba_scan", SN, "        gi = di // dg\n        zero = np.zeros(1, dtype=u.dtype)[0]\n        Bg = Bt[bi, gi]",
      "        gi = di % dg\n        zero = np.zeros(1, dtype=u.dtype)[0]\n        Bg = Bt[bi, gi]", "group index"),
    M("numba_scan", SN, "wn = gn * (hn - xv * brow[n])", "wn = gn * hn", "drop term"),
    M("numba_scan", SN, "carry[n] = abuf[k, n] * gn", "carry[n] = gn", "drop decay"),
    M("numba_scan", SN, "            if softplus:\n                ddt_t *= sg[t]\n", "", "drop chain rule"),
    M("numba_scan", SN, "n_ck = (L + every - 1) // every", "n_ck = L // every", "off-by-one"),
    # ------------------------------------------------------------------ Swin-UMamba† decoder
    M("swin_umamba_d", SU, "first = sum(depths[:s])", "first = sum(depths[:s + 1])", "off-by-one"),
    M("swin_umamba_d", SU, "torch.cat([x, skips[-(s + 2)].permute(0, 2, 3, 1)], dim=-1)",
      "torch.cat([skips[-(s + 2)].permute(0, 2, 3, 1), x], dim=-1)", "swap"),
    M("swin_umamba_d", SU, "drop_path_rates(drop_path_rate, sum(depths_decoder))[::-1]",
      "drop_path_rates(drop_path_rate, sum(depths_decoder))", "drop reversal"),
    M("swin_umamba_d", SU, "                                    per_stage[n:], use_checkpoint",
      "                                    per_stage[n:][::-1], use_checkpoint", "stage order"),
    M("swin_umamba_d", SU, "        self.vssm_encoder.apply(init_vmunet_weights)\n        self.apply(init_he_conv)\n",
      "        self.apply(init_he_conv)\n        self.vssm_encoder.apply(init_vmunet_weights)\n", "order",
      "equivalent: the two inits touch disjoint module types (Linear/LayerNorm vs Conv2d), so the swap "
      "changes only which numbers of the seeded stream each draws, not the distributions; the project "
      "makes no seed-for-seed claim about initial weights"),
    M("swin_umamba_d", SU, "size_multiple=patch_size * 2 ** (n - 1))", "size_multiple=patch_size * 2 ** n)",
      "off-by-one"),
    M("swin_umamba_d", SU, 'if key.startswith("patch_embed.") and self.in_chans != 3:',
      'if key.startswith("patch_embed.") and self.in_chans < 3:', "!= vs <",
      "gap closed by test_swin_umamba_d_vmamba_patch_embedding_loads_only_into_three_channels[4]"),
    # ------------------------------------------------------------------ ISIC paper chain, Synapse paper draws
    M("isic_paper", TF, 'norm = [ScaleIntensityd(keys="image", minv=0.0, maxv=255.0, dtype=np.float64)]',
      'norm = [ScaleIntensityd(keys="image", minv=0.0, maxv=1.0, dtype=np.float64)]', "constant"),
    M("isic_paper", TF, 'mode=("nearest", "nearest") if paper else ("bilinear", "nearest"),',
      'mode=("bilinear", "nearest"),', "mode"),
    M("isic_paper", TF, "padding_mode=\"zeros\", dtype=np.float64 if paper else np.float32))",
      "padding_mode=\"zeros\", dtype=np.float32))", "dtype"),
    M("isic_paper", TF, "aug.append(RandRotated(keys=keys, range_x=(0.0, 2 * math.pi), prob=0.5,",
      "aug.append(RandRotated(keys=keys, range_x=(0.0, math.pi), prob=0.5,", "range",
      "gap closed by test_isic_rotation_turns_the_mask_all_the_way_round"),
    M("isic_paper", TF, 'mode=("bilinear", "bilinear"), dtype=np.float64)]', 'mode=("bilinear", "bilinear"))]',
      "dtype"),
    M("isic_paper", TF, 'return ("rot_flip", int(self.R.randint(0, 4)), int(self.R.randint(0, 2)))',
      'return ("rot_flip", int(self.R.randint(1, 4)), int(self.R.randint(0, 2)))', "off-by-one"),
    M("isic_paper", TF, "            if self.branch_random.random() > 0.5:\n                return (\"rotate\"",
      "            if self.branch_random.random() > 0.25:\n                return (\"rotate\"", "constant"),
    # ------------------------------------------------------------------ ablation results table
    M("ablation", AB, 'return per_class, summary["mean"]["dice"], summary["mean"].get("hd95")',
      'return per_class, summary["mean"]["dice"], summary["mean"].get("hd95_mm")', "mm vs voxels",
      "gap closed by test_the_table_takes_the_mean_hd95_in_voxels_and_rounds_it_to_two_digits"),
    M("ablation", AB, "key = tuple(sorted((k, None if _missing(r[k]) else r[k]) for k in r",
      "key = tuple(sorted((k, r[k]) for k in r", "NaN grouping"),
    M("ablation", AB, "return [names for names in groups.values() if len(names) > 1]",
      "return [names for names in groups.values() if len(names) >= 1]", "> vs >="),
    M("ablation", AB, '"|" + "|".join("---" if i < 3 else "---:" for i in range(len(cols))) + "|"',
      '"|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"', "off-by-one"),
    M("ablation", AB, '_fmt(r["mean_dice"], 4), _fmt(r["mean_hd95"], 2)]', '_fmt(r["mean_dice"], 4), _fmt(r["mean_hd95"], 4)]',
      "digits", "gap closed by test_the_table_takes_the_mean_hd95_in_voxels_and_rounds_it_to_two_digits"),
    M("ablation", AB, 'conditions + ("" if len(rows) == len(variants) else',
      'conditions + ("" if len(rows) > 0 else', "partial never said",
      "gap closed by test_results_written_after_each_variant_say_partial_until_the_last"),
    M("ablation", AB, "if monitored.best_model_path:\n        return Path(monitored.best_model_path)",
      "if monitored.last_model_path:\n        return Path(monitored.last_model_path)", "last instead of best"),
]


@dataclass
class Result:
    group: str
    path: str
    line: int
    what: str
    old: str
    new: str
    status: str         # killed | survived | timeout
    seconds: float
    killed_by: str
    note: str


def copy_tree(dest: Path) -> None:
    """The tracked and untracked (not ignored) files of the checkout, without .git."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(copy: Path, args: list[str], timeout: float) -> tuple[str, float, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(copy))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    secs = time.perf_counter() - t0
    if proc.returncode == 0:
        return "survived", secs, ""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    return "killed", secs, failed[0] if failed else proc.stdout.strip().splitlines()[-1:][0] if proc.stdout.strip() else "?"


def locate(text: str, m: Mutant) -> int:
    count = text.count(m.old)
    if count != 1:
        raise SystemExit(f"{m.path}: mutant anchor occurs {count} times (expected once): {m.old!r}")
    return text[: text.index(m.old)].count("\n") + 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", action="append", choices=sorted(GROUPS), help="only these groups (repeatable)")
    ap.add_argument("--index", action="append", type=int,
                    help="only the mutant with this number in --list (1-based, repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--first", action="append", default=[], metavar="TEST",
                    help="run this test file (or node id) before the group's tests, e.g. the test written for a "
                         "survivor when re-running it (repeatable; -x stops at the first failure)")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="do not run each group's tests on the unmutated copy first (only for re-runs of survivors "
                         "right after a full run whose baselines passed)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default 600)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    mutants = [m for i, m in enumerate(MUTANTS, 1) if (not args.group or m.group in args.group)
               and (not args.index or i in args.index)]
    for m in mutants:  # every anchor must still match exactly once before anything runs
        locate((ROOT / m.path).read_text(), m)
    if args.list:
        for m in mutants:
            print(f"{MUTANTS.index(m) + 1:3d} {m.group:14s} {m.path}:{locate((ROOT / m.path).read_text(), m)}  {m.what}: {m.old!r} -> {m.new!r}")
        return 0

    t_start = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="vmunet-mutants-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(copy))
        where = subprocess.run([sys.executable, "-c", "import vmunet; print(vmunet.__file__)"], cwd=copy, env=env,
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(copy)):  # the editable install must not shadow the mutated copy
            print(f"the copy's vmunet is not the one imported ({where})", file=sys.stderr)
            return 2
        for group in dict.fromkeys(m.group for m in mutants if not args.skip_baseline):
            status, secs, failed = run_tests(copy, [*args.first, *GROUPS[group]], args.timeout)
            print(f"baseline {group}: {status} in {secs:.1f}s {failed}", flush=True)
            if status != "survived":
                print(f"baseline of group {group} does not pass; fix that first", file=sys.stderr)
                return 2
        for i, m in enumerate(mutants, 1):
            target = copy / m.path
            original = target.read_text()
            line = locate(original, m)
            try:
                target.write_text(original.replace(m.old, m.new, 1))
                status, secs, failed = run_tests(copy, [*args.first, *GROUPS[m.group]], args.timeout)
            finally:
                target.write_text(original)
            res = Result(m.group, m.path, line, m.what, m.old, m.new, status, round(secs, 1), failed, m.note)
            results.append(res)
            print(f"[{i:3d}/{len(mutants)}] {status:8s} {secs:6.1f}s {m.path}:{line} {m.what}"
                  f"{'  <- ' + failed if failed else ''}{'  # ' + m.note if m.note and status != 'killed' else ''}",
                  flush=True)
    total = time.perf_counter() - t_start
    killed = sum(r.status == "killed" for r in results)
    equivalent = [r for r in results if r.status != "killed" and r.note.startswith("equivalent")]
    gaps = [r for r in results if r.status != "killed" and not r.note.startswith("equivalent")]
    print(f"\n{len(results)} mutants: {killed} killed, {len(equivalent)} survived (equivalent), "
          f"{len(gaps)} survived (gaps); {total / 60:.1f} min")
    for group in dict.fromkeys(r.group for r in results):
        mine = [r for r in results if r.group == group]
        print(f"  {group}: {sum(r.status == 'killed' for r in mine)} killed, "
              f"{sum(r in equivalent for r in mine)} equivalent, {sum(r in gaps for r in mine)} gaps")
    for r in gaps:
        print(f"  GAP {r.path}:{r.line} {r.what}: {r.old!r} -> {r.new!r}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": round(total, 1), "results": [asdict(r) for r in results]},
                                        indent=1))
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
