"""The ``vmunet`` command.

``fit`` / ``validate`` / ``test`` go to LightningCLI (YAML configs in ``experiments/``); the other
subcommands are plain argparse commands, each defined next to the code it drives:

=========  =====================================  =====================================
command    module                                 what it does
=========  =====================================  =====================================
predict    ``vmunet.inference.commands``          segment scans, write NIfTI
export     ``vmunet.inference.export``            checkpoint -> TorchScript / ONNX + record
prepare    ``vmunet.data.commands``               raw download -> training layout
synth      ``vmunet.data.commands``               write synthetic data sets
info       ``vmunet.models.commands``             parameters / FLOPs / memory of a model
weights    ``vmunet.models.commands``             ``weights inspect FILE``: layout, load plan
data       ``vmunet.data.examples_commands``      fetch real example scans (opt-in download)
ablate     ``vmunet.training.ablation_commands``  train over direction sets / models, tabulate
=========  =====================================  =====================================

Each command module exposes ``add_parsers(subparsers)``; subcommands set ``func`` to a callable
taking the parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from vmunet.runtime import (
    VERBOSE_FLAGS,
    apply_process_defaults,
    configure_logging,
    misplaced_verbose_hint,
)

LIGHTNING_COMMANDS = ("fit", "validate", "test")
COMMAND_MODULES = (
    "vmunet.inference.commands",
    "vmunet.inference.export",
    "vmunet.data.commands",
    "vmunet.models.commands",
    "vmunet.data.examples_commands",
    "vmunet.training.ablation_commands",
)


class _Parser(argparse.ArgumentParser):
    """argparse without prefix matching of long options: ``vmunet synth isic --official`` must not
    silently mean ``--official-splits`` (``fit``'s keys are refused the same way). Subcommand
    parsers, nested ones too, are of this class (``add_subparsers`` uses the parent's type)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (argparse's own signature)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            message += misplaced_verbose_hint(message.partition(":")[2])
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vmunet",
        description="Vision-Mamba U-Nets for 2D medical image segmentation. "
        f"Training: vmunet [-v] {{{','.join(LIGHTNING_COMMANDS)}}} --config experiments/<name>.yaml "
        "(LightningCLI; `vmunet fit --help` for all options).",
    )
    parser.add_argument(*VERBOSE_FLAGS, action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"{name} through LightningCLI (see `vmunet {name} --help`)", add_help=False)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parsers(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    """The message on one line (multi-line messages, e.g. two affines, are joined)."""
    return " ".join(str(exc).split())


def _user_error(exc: BaseException) -> BaseException | None:
    """The VmunetError behind ``exc``: itself, or one a library wrapped (jsonargparse turns a data
    module's LayoutError into "Does not validate against any of the Union subtypes", MONAI into
    "applying transform ..."), found through the exception chain; None for anything else."""
    from vmunet.errors import VmunetError

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None or isinstance(seen, VmunetError):
            return seen
        if not isinstance(seen, (ValueError, TypeError, RuntimeError)):
            return None
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_full(exc: BaseException) -> OSError | None:
    """The "no space left" / "quota exceeded" OSError behind ``exc`` (itself or in its chain), else
    None. Not a bug and not bad input, but a condition the user fixes: one line, not a traceback
    (outputs are written to temporary files and renamed, so no half-written file is left)."""
    import errno

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    apply_process_defaults()  # before torch loads: OpenMP reads its variables when it starts
    try:
        return _dispatch(argv)
    except Exception as exc:
        # Bad input (a data file or folder, a checkpoint, a setting) is the user's, not a bug: say
        # what is wrong in one line, no traceback. Anything else is a bug and keeps its traceback.
        found = _user_error(exc)
        full = _disk_full(exc) if found is None else None
        if found is None and full is None:
            raise
        command = next((a for a in argv if not a.startswith("-")), "")
        if full is not None:
            where = f" writing {full.filename}" if full.filename else ""
            print(f"vmunet {command}: error: {full.strerror or 'no space left on device'}{where} "
                  f"([Errno {full.errno}]); free some space and run it again", file=sys.stderr)
        else:
            print(f"vmunet {command}: error: {_one_line(found)}", file=sys.stderr)
        return 2


def lightning_argv(argv: Sequence[str]) -> tuple[bool, list[str]] | None:
    """``(verbose, LightningCLI's arguments)`` when ``argv`` runs ``fit|validate|test``, else None.

    What follows a Lightning subcommand is LightningCLI's (``--config``, ``--trainer.*``), which
    argparse would refuse, so the global options before it (``vmunet -v fit ...``) are taken here;
    ``-v`` after the subcommand is, as for every other subcommand, not an option of it.
    """
    n = 0
    while n < len(argv) and argv[n] in VERBOSE_FLAGS:
        n += 1
    if n < len(argv) and argv[n] in LIGHTNING_COMMANDS:
        return n > 0, list(argv[n:])
    return None


def _dispatch(argv: list[str]) -> int:
    lightning = lightning_argv(argv)
    if lightning is not None:
        verbose, lightning_args = lightning
        from vmunet.training.cli import run_lightning_cli

        # after Lightning is imported: it gives its loggers their own bare console handlers only while
        # the root logger has none ("Seed set to 42", not "INFO: Seed set to 42" through "lightning"'s)
        configure_logging(verbose)
        run_lightning_cli(lightning_args)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
