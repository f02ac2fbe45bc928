"""``vmunet prepare {synapse,isic}`` and ``vmunet synth {synapse,isic,nifti}``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _run(fn: Callable[..., dict[str, Any]], **kwargs: Any) -> int:
    """Call a prepare/synth function and print its summary. Bad data or arguments raise a
    VmunetError, which the ``vmunet`` dispatcher prints as one line (exit status 2)."""
    summary = fn(**kwargs)
    print(json.dumps(summary, indent=2))
    return 0


def _synth(fn: Callable[..., dict[str, Any]], **kwargs: Any) -> int:
    """Like :func:`_run`, with ``--out`` checked first (a regular file in the way, not writable)."""
    from vmunet.data.fileio import ensure_writable_folder

    ensure_writable_folder(kwargs["out"], "--out")
    return _run(fn, **kwargs)


def _prepare_synapse(args: argparse.Namespace) -> int:
    from vmunet.data.prepare import prepare_synapse

    return _run(prepare_synapse, raw=args.raw, out=args.out, split=args.split, test_cases=args.test_cases,
                test_fraction=args.test_fraction, seed=args.seed, overwrite=args.overwrite)


def _prepare_isic(args: argparse.Namespace) -> int:
    from vmunet.data.prepare import prepare_isic

    return _run(prepare_isic, raw=args.raw, out=args.out, split=args.split, seed=args.seed, size=args.size,
                year=args.year, overwrite=args.overwrite)


def _synth_synapse(args: argparse.Namespace) -> int:
    from vmunet.data.synth import synth_synapse

    return _synth(synth_synapse, out=args.out, cases=args.cases, size=args.size, slices=args.slices,
                seed=args.seed, raw=args.raw)


def _synth_isic(args: argparse.Namespace) -> int:
    from vmunet.data.synth import synth_isic

    return _synth(synth_isic, out=args.out, cases=args.cases, size=args.size, seed=args.seed,
                layout=args.layout, year=args.year, official_splits=args.official_splits)


def _synth_nifti(args: argparse.Namespace) -> int:
    from vmunet.data.synth import synth_nifti

    return _synth(synth_nifti, out=args.out, cases=args.cases, size=args.size, slices=args.slices,
                seed=args.seed, layout=args.layout, modality=args.modality, test_cases=args.test_cases)


OVERWRITE_HELP = ("replace a data set an earlier prepare wrote in --out (only the files its manifest "
                  "vmunet-prepare.json lists are removed); without it --out must be new or empty")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and ``synth`` with their dataset subcommands."""
    prep = subparsers.add_parser("prepare", help="convert a raw download into the training layout")
    psub = prep.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    p = psub.add_parser("synapse", help="raw BTCV (img/, label/) -> Synapse npz/h5 format")
    p.add_argument("--raw", required=True, help="raw BTCV folder (img/imgNNNN.nii.gz, label/labelNNNN.nii.gz)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=("standard", "random"), default="standard",
                   help="standard TransUNet 18/12 case split (default) or a seeded random split")
    p.add_argument("--test-cases", type=int, nargs="+", default=None, metavar="N",
                   help="explicit test case numbers (overrides --split)")
    p.add_argument("--test-fraction", type=float, default=0.4, help="test fraction for --split random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=_prepare_synapse)

    p = psub.add_parser("isic", help="official ISIC 2017/2018 archive -> VM-UNet layout + stats.json")
    p.add_argument("--raw", required=True, help="folder with the ISIC archive folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", type=float, default=None,
                   help="training fraction of a seeded split of the training set (default: official "
                        "val/test when present, else 0.7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="output image size (default 256)")
    p.add_argument("--year", choices=("2017", "2018"), default=None, help="which challenge, if both are present")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=_prepare_isic)

    syn = subparsers.add_parser("synth", help="write a synthetic data set (no download needed)")
    ssub = syn.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    p = ssub.add_parser("synapse", help="synthetic Synapse data (or a raw BTCV folder with --raw)")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", type=int, default=8, help="cases, split like the standard 18/12 (default 8)")
    p.add_argument("--size", type=int, default=64, help="in-plane size (default 64)")
    p.add_argument("--slices", type=int, default=16, help="slices per case (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="write a raw BTCV-style NIfTI folder instead")
    p.set_defaults(func=_synth_synapse)

    p = ssub.add_parser("isic", help="synthetic ISIC data (VM-UNet or official layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("vmunet", "official"), default="vmunet")
    p.add_argument("--year", choices=("2017", "2018"), default="2018")
    p.add_argument("--official-splits", action="store_true",
                   help="official layout: also write Validation and Test folders")
    p.set_defaults(func=_synth_isic)

    p = ssub.add_parser("nifti", help="synthetic NIfTI task (nnU-Net raw or Decathlon datalist)")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", type=int, default=6, help="training cases")
    p.add_argument("--test-cases", type=int, default=2, help="labelled test cases")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--slices", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("nnunet", "decathlon"), default="nnunet")
    p.add_argument("--modality", choices=("CT", "MR"), default="CT")
    p.set_defaults(func=_synth_nifti)
