"""``vmunet info MODEL``: parameters, MACs/FLOPs (with the selective scan) and peak memory."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parsers(subparsers: Any) -> None:
    """Add the ``info`` subcommand to the ``vmunet`` CLI."""
    p = subparsers.add_parser(
        "info",
        help="parameters / FLOPs / memory of a model",
        description="Print parameters, MACs and FLOPs (the selective scan counted explicitly) and "
        "the measured CPU peak memory of one forward (inference) and one training step.",
    )
    p.add_argument("model", help="registered model name (see `vmunet info --list`)", nargs="?")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    p.add_argument("--size", type=int, nargs="+", default=[224], metavar="N",
                   help="input size: one value (square) or H W (default 224)")
    p.add_argument("--num-classes", type=int, default=9)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backend", default="auto", help="selective-scan backend for the memory run")
    p.add_argument("--no-memory", action="store_true", help="skip the (real) memory measurement")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from vmunet.models.registry import create_model, list_models, model_description
    from vmunet.models.summary import format_summary, summarize

    if args.list or not args.model:
        for name in list_models():
            print(f"{name:14s} {model_description(name)}")
        return 0 if args.list else 2
    from vmunet.errors import ConfigError

    if args.model not in list_models():
        raise ConfigError(f"unknown model {args.model!r}; available: {', '.join(list_models())}")
    if len(args.size) not in (1, 2) or min(args.size) < 1:
        raise ConfigError(f"--size takes one or two positive integers, got {args.size}")
    for opt, value in (("--num-classes", args.num_classes), ("--in-chans", args.in_chans), ("--batch", args.batch)):
        if value < 1:
            raise ConfigError(f"{opt} must be >= 1, got {value}")
    H, W = (args.size * 2)[:2]
    try:
        model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans,
                             scan_backend=args.backend)
    except (ValueError, TypeError) as err:  # the model refuses a setting (e.g. an unknown backend)
        raise ConfigError(f"model {args.model!r}: {err}") from None
    summary = summarize(model, (args.batch, args.in_chans, H, W), name=args.model,
                        measure_memory=not args.no_memory)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else format_summary(summary))
    return 0
