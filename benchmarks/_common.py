"""Report helpers shared by the benchmark scripts (bench_*.py, gpu_check.py, gpu_triton_check.py):
one way to write a markdown table and one way to end a run (print the report, write the rows);
and the paper model's scan shapes the GPU checks measure (:data:`PAPER_STAGES_224`).

The scripts import it as ``_common`` after putting this folder on ``sys.path`` (not as
``benchmarks._common``: on the GPU image another installed package named ``benchmarks`` could
shadow this folder, which has no ``__init__.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: (C, H = W of the token map) per encoder stage of the paper model at 224x224
PAPER_STAGES_224 = [(96, 56), (192, 28), (384, 14), (768, 7)]


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> list[str]:
    """The lines of a markdown table: the header, the separator, then one line per row, each cell
    written with ``str`` (format numbers before). With ``title``: a blank line, the title and a
    blank line first, so that tables can be appended one after the other."""
    head = ["", title, ""] if title is not None else []
    return [*head, "| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def print_report(header: str, tables: Sequence[str], rows: Any, json_path: str | None) -> None:
    """Print the run's header line and its tables to stdout, a blank line between each; with
    ``json_path``, also write ``rows`` there as JSON (atomically)."""
    print("\n\n".join([header, *tables]))
    if json_path:
        from vmunet.data.fileio import write_json  # here: importing this module loads no vmunet

        write_json(json_path, rows)
