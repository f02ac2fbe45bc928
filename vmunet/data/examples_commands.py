"""``vmunet data fetch-examples``: real example scans from the package registries (opt-in)."""

from __future__ import annotations

import argparse
import json
import sys


def _fetch_examples(args: argparse.Namespace) -> int:
    from vmunet.data.examples import SOURCES, default_cache, fetch_examples

    cache = args.cache or str(default_cache())
    try:
        result = fetch_examples(cache, args.source)
    except (ValueError, OSError) as err:
        print(f"vmunet data fetch-examples: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"cache": cache, "sources": result}, indent=2))
    failed = [k for k, v in result.items() if v["status"] != "ready"]
    for key in failed:
        print(f"vmunet data fetch-examples: error: {result[key]['error']}", file=sys.stderr)
    if failed:
        ready = [k for k in result if k not in failed]
        print(f"vmunet data fetch-examples: {len(ready)} of {len(result)} sources ready "
              f"({', '.join(ready) or 'none'}); missing: {', '.join(failed)} "
              f"(of {', '.join(SOURCES)})", file=sys.stderr)
        return 2
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with its ``fetch-examples`` subcommand."""
    from vmunet.data.examples import SOURCES  # stdlib + numpy only: ``--help`` stays torch-free

    data = subparsers.add_parser("data", help="real example data (downloads only when asked)")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    p = dsub.add_parser(
        "fetch-examples",
        help="download real scans from PyPI/Debian packages, verify sha256, convert to NIfTI pairs",
        description="Download pyradiomics 3.1.0 (sdist), pydicom-data 1.0.0 (PyPI) and the Debian "
        "packages invesalius-examples and insighttoolkit5-examples (apt-get download), check their "
        "pinned sha256, and convert them into nnU-Net raw folders (image/label NIfTI with the "
        "scanner geometry) plus the files as shipped. A rerun downloads nothing. Exit status 2 "
        "when a source could not be fetched (the others are still converted).",
    )
    p.add_argument("--cache", default=None,
                   help="cache folder (default: $VMUNET_DATA, else ~/.cache/vmunet/examples)")
    p.add_argument("--source", action="append", default=None,
                   choices=list(SOURCES),
                   help="fetch only this source (repeatable; default: all)")
    p.set_defaults(func=_fetch_examples)
