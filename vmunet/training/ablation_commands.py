"""``vmunet ablate``: the scan-direction / model ablation (:mod:`vmunet.training.ablation`).

The parser is built without importing torch or Lightning (``vmunet ablate --help`` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(subparsers: Any) -> None:
    """Add the ``ablate`` subcommand to the ``vmunet`` CLI."""
    p = subparsers.add_parser(
        "ablate",
        help="train one config over scan-direction sets and/or models; results table + Dice plot",
        description="Fit the LightningCLI config once per variant (each registered model in --models x "
        "each direction set in --directions, same seed, own folder OUT/<model>__<label>/), test each "
        "best checkpoint with the project's metrics, and write OUT/results.csv, results.md, "
        "results.json and dice.png (per-class test Dice). Extra LightningCLI options for every run "
        "go after `--`.",
        epilog="example: vmunet ablate --config experiments/demo.yaml --out runs/ablation "
        "--directions vmamba=h,v,h_flip,v_flip --directions snake_h,snake_v,hilbert,local4 "
        "-- --trainer.max_epochs 5",
    )
    p.add_argument("--config", required=True, help="LightningCLI YAML config shared by every run")
    p.add_argument("--out", required=True, help="output folder (runs, tables, plot)")
    p.add_argument("--directions", action="append", default=None, metavar="[LABEL=]NAMES",
                   help="a direction set: comma-separated scan orders for every stage (h,v,h_flip,v_flip), "
                   "or '/'-separated lists, one per stage (encoder stages, then decoder stages deepest "
                   "first); repeat for each set. Orders: h v d ad snake_h snake_v hilbert hilbert_t "
                   "cyc_d cyc_ad (each also _flip), local<w>[_t][_flip]. Default: the model's own")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="registered models to compare (default: the config's model.model_name)")
    p.add_argument("--seed", type=int, default=42, help="seed_everything of every run (default 42)")
    p.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="after `--`: LightningCLI options for every run, e.g. -- --trainer.max_epochs 5")
    p.set_defaults(func=run_ablate)


def run_ablate(args: argparse.Namespace) -> int:
    from vmunet.training.ablation import run_ablation

    overrides = list(args.overrides or [])
    if overrides[:1] == ["--"]:
        overrides = overrides[1:]
    result = run_ablation(args.config, args.out, models=args.models, direction_sets=args.directions,
                          seed=args.seed, overrides=overrides)
    print(result.files["markdown"].read_text(encoding="utf-8"), end="")
    print("\n".join(f"{kind}: {path}" for kind, path in result.files.items()))
    return 0
