"""``vmunet info MODEL`` (parameters, MACs/FLOPs with the selective scan, peak memory) and
``vmunet weights inspect FILE`` (a checkpoint's layout and what would load into a model)."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_USAGE = 2


def add_parsers(subparsers: Any) -> None:
    """Add the ``info`` and ``weights`` subcommands to the ``vmunet`` CLI."""
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

    w = subparsers.add_parser("weights", help="inspect checkpoint files",
                              description="Checkpoint files: `vmunet weights inspect FILE`.")
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION")
    i = wsub.add_parser(
        "inspect",
        help="a checkpoint's layout and what would load, skip or stay at init",
        description="Read FILE safely (no code from it runs), name its layout (" + _layout_list() + ") and "
        "list what would load into the model, what would be skipped and why, and what would keep its "
        "initialisation. The model: --model, else the file's own record, else the model its layout "
        "names, else vmunet; classes and input channels: the options, else the record's, else the file's head and first conv, else 1 and 3. Exit status: 0 it loads strictly, 1 it loads only non-strictly, 2 bad "
        "file or arguments.",
    )
    i.add_argument("file", help="checkpoint file (.ckpt, .pth, .pt)")
    i.add_argument("--model", default=None,
                   help="registered model to load into (default: the checkpoint's own record, else the model "
                        "its detected layout names, else vmunet)")
    i.add_argument("--num-classes", type=int, default=None,
                   help="model output channels (default: the record's, else the file's final head, else 1)")
    i.add_argument("--in-chans", type=int, default=None, help="model input channels (default: the record's, else the file's first conv, else 3)")
    i.add_argument("--entry", default="auto", choices=("auto", "model", "model_ema"),
                   help="which weights of a VMamba file (auto: model_ema when present)")
    i.add_argument("--all", action="store_true", help="list every key instead of the first dozen per group")
    i.set_defaults(func=run_weights_inspect)
    w.set_defaults(func=lambda args: (w.print_help(), EXIT_USAGE)[1])


def _layout_list() -> str:
    """The layouts ``weights inspect`` knows, for its help: from the one list (torch-free, unlike the
    detection in ``layouts``), so a new layout is named there by adding it."""
    from vmunet.models.layout_names import LAYOUTS

    return "; ".join(f"{name}: {what}" for name, what in LAYOUTS.items())


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
    from vmunet.ops.selective_scan import check_backend_name

    try:
        check_backend_name(args.backend, "--backend")  # named as the option, not as the model's scan_backend
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans,
                             scan_backend=args.backend)
    except (ValueError, TypeError) as err:  # the model refuses a setting (e.g. an unknown backend)
        raise ConfigError(f"model {args.model!r}: {err}") from None
    # checked here, not by the forward pass of the count (a ValueError traceback before)
    import torch

    from vmunet.errors import first_line
    from vmunet.inference.slicewise import check_model_input_size
    from vmunet.ops.selective_scan import resolve_backend

    # no pad_to_multiple hint: info has no such option, it takes only the multiples named
    check_model_input_size(model, (H, W), "--size", remedy="")
    if not args.no_memory:
        try:
            resolve_backend(args.backend, torch.device("cpu"))
        except (ValueError, RuntimeError) as err:
            raise ConfigError(f"--backend {args.backend}: {first_line(err)}") from None
    summary = summarize(model, (args.batch, args.in_chans, H, W), name=args.model,
                        measure_memory=not args.no_memory)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else format_summary(summary))
    return 0


def run_weights_inspect(args: argparse.Namespace) -> int:
    """``vmunet weights inspect``: print the layout and the load plan; 0 strict-loadable, 1 only
    non-strictly, 2 bad file or arguments (one line on stderr)."""
    import sys

    from vmunet.models.checkpoint import checkpoint_record
    from vmunet.models.layouts import detect, file_options
    from vmunet.models.registry import create_model, model_for_weights
    from vmunet.models.safe_load import WeightsError, read_checkpoint
    from vmunet.models.weights import plan_weights

    try:
        ckpt = read_checkpoint(args.file)
        try:
            record: dict[str, Any] = checkpoint_record(ckpt, args.file)
        except WeightsError:  # not one of our training checkpoints: no model named inside
            record = {"model_kwargs": {}}
        kwargs = dict(record["model_kwargs"])
        found = detect(ckpt, entry=args.entry, where=args.file)
        name, why = _inspected_model(args.model, record.get("model_name"), found.layout, model_for_weights(found))
        if args.model and args.model != record.get("model_name"):
            kwargs = {}  # the record's options belong to its own model
        origins = _inspected_options(args, kwargs, file_options(found))
        kwargs.update({option: value for option, (value, _) in origins.items()})
        model = create_model(name, **kwargs)
        report, _ = plan_weights(model, ckpt, entry=args.entry, where=args.file, found=found)
    except (ValueError, TypeError) as err:
        print(f"vmunet weights inspect: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    limit = 10**9 if args.all else 12
    n_model = len(model.state_dict())
    config = ckpt.get("config")
    lines = [
        f"file:    {args.file}",
        f"layout:  {report.layout} ({_layout_description(report.layout)}); weights from {report.entry!r}",
        f"model:   {name} (num_classes={kwargs['num_classes']}, in_chans={kwargs['in_chans']}), {n_model} tensors",
        f"         ({why})",
    ] + [f"         {option}={value} ({origin})" for option, (value, origin) in origins.items()]
    if isinstance(config, dict) and isinstance(config.get("MODEL"), dict):
        lines.append(f"config:  MODEL.TYPE={config['MODEL'].get('TYPE')} MODEL.NAME={config['MODEL'].get('NAME')}")
    lines += [f"note:    {n}" for n in report.notes]
    lines.append(f"load:    {len(report.loaded)} of {n_model} model tensors")
    lines += [f"adapt:   {k} ({how})" for k, how in report.adapted]
    lines += [f"         {line}" for line in report.details(limit)]
    if report.problems:
        lines.append(f"strict:  refused, {len(report.problems)} problem(s): " + "; ".join(report.problems[:5])
                     + (" ..." if len(report.problems) > 5 else ""))
        lines.append("         (non-strict loading -- model.weights_strict: false -- loads what fits)")
    else:
        lines.append("strict:  loads")
    print("\n".join(lines))
    return 1 if report.problems else 0


def _inspected_model(option: str | None, recorded: str | None, layout: str, named: str | None
                     ) -> tuple[str, str]:
    """The model ``weights inspect`` loads into, and why: ``--model``, else the file's own record,
    else the model the detected layout names (``registry.model_for_weights``), else ``vmunet``."""
    if option:
        return option, "from --model"
    if recorded:
        return recorded, "from the checkpoint's own record"
    if named:
        return named, f"assumed: no --model and no model record in the file; layout {layout} names it"
    return "vmunet", f"assumed: no --model, no model record in the file, and layout {layout} names no model"


#: what ``weights inspect`` builds when neither an option, the record nor the file gives a value
_OPTION_DEFAULTS = {"num_classes": 1, "in_chans": 3}


def _inspected_options(args: argparse.Namespace, recorded: dict[str, Any],
                       from_file: dict[str, tuple[int | None, str]]) -> dict[str, tuple[int, str]]:
    """``num_classes`` / ``in_chans`` and where each came from: the option, else the file's own
    record, else the file's tensors (``layouts.file_options``), else the default (saying why)."""
    out = {}
    for option, default in _OPTION_DEFAULTS.items():
        given = getattr(args, option)
        value, origin = from_file[option]
        if given:
            out[option] = (given, "from --" + option.replace("_", "-"))
        elif recorded.get(option):
            out[option] = (recorded[option], "from the checkpoint's own record")
        elif value is not None:
            out[option] = (value, origin)
        else:
            out[option] = (default, f"default: {origin}")
    return out


def _layout_description(layout: str) -> str:
    from vmunet.models.layouts import LAYOUTS

    return LAYOUTS[layout]
