"""Test reports: the per-class table (rich), per-case CSV, per-class CSV and a JSON summary.

Files land in the run's log directory, each written atomically:

* ``test_metrics.json`` -- everything: per-class and mean Dice/HD95 (voxels, mm) under each
  requested empty-mask convention (``by_convention``; the primary one also at the top level), the
  ISIC pooled and per-image metrics when present, and the raw per-case rows.
* ``test_cases.csv`` -- one row per (convention, case, class), with ``status``, ``convention`` and
  ``hd95_definition`` columns.
* ``test_per_class.csv`` -- per convention, one row per class plus a final ``mean`` row.

Every table, CSV row and JSON summary names its empty-mask convention and HD95 definition
(:data:`vmunet.evaluation.metrics.CONVENTIONS`, :data:`~vmunet.evaluation.metrics.HD95_DEFINITIONS`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

from vmunet.data.fileio import write_csv, write_json
from vmunet.evaluation.metrics import CASE_FIELDS, CONVENTIONS, convention_rows, describe_parts

log = logging.getLogger(__name__)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


PER_CLASS_FIELDS = ("convention", "class", "dice", "hd95", "hd95_mm", "misses", "false_positives",
                    "hd95_definition")


def _case_summaries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-convention case summaries, primary first (older summaries: the top level only)."""
    by = summary.get("by_convention") or {}
    out = [by[c] for c in summary.get("conventions", []) if "per_class" in by.get(c, {})]
    if not out and "per_class" in summary:
        out = [summary]
    return out


def per_class_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of :data:`PER_CLASS_FIELDS` for each convention: each foreground class, then the mean."""
    rows = []
    for cases in _case_summaries(summary):
        tag = {"convention": cases.get("convention"), "hd95_definition": cases.get("hd95_definition")}
        rows += [{**tag, "class": name, **vals} for name, vals in cases["per_class"].items()]
        rows.append({**tag, "class": "mean", **cases["mean"]})
    return rows



#: Widest table text: a wider terminal still gets 100 columns (files and pipes too, unless $COLUMNS).
MAX_WIDTH = 100


def format_table(summary: dict[str, Any], width: int | None = None) -> str:
    """Render the evaluation summary as plain text: per table, its heading lines (what was averaged,
    the empty-mask convention and HD95 definition, each in words), then the table (rich, no colours).

    ``width``: the columns to fit, default the terminal's (``$COLUMNS``), at most :data:`MAX_WIDTH`.
    The headings are wrapped at words with a hanging indent (not as a rich title, which wraps at the
    table's own narrower width, mid-phrase), so no line is wider than ``width`` and no text is cut.
    """
    from rich.console import Console
    from rich.table import Table

    width = min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns) if width is None else width
    parts: list[tuple[list[str], Table]] = []
    stage = summary.get("stage", "test")
    for cases in _case_summaries(summary):
        heading = [f"{stage}: {cases['num_cases']} cases, mean over cases, then classes",
                   *describe_parts(cases.get("convention"), cases.get("hd95_definition"))]
        table = Table()
        for col in ("class", "Dice", "HD95 (vox)", "HD95 (mm)", "misses", "false pos."):
            table.add_column(col, justify="left" if col == "class" else "right")
        for name, r in [*cases["per_class"].items(), ("mean", cases["mean"])]:
            table.add_row(name, _fmt(r["dice"]), _fmt(r["hd95"], 2), _fmt(r["hd95_mm"], 2),
                          _fmt(r.get("misses")), _fmt(r.get("false_positives")))
        parts.append((heading, table))
    if "pooled" in summary:
        by = summary.get("by_convention") or {}
        convs = [c for c in summary.get("conventions", []) if "per_image" in by.get(c, {})]
        heading = [f"{stage}: {summary['num_images']} images, threshold 0.5; pooled: one confusion matrix over all "
                   "pixels (the papers')",
                   "per-image: the mean over images, under",
                   *(f"convention {c} ({CONVENTIONS[c]})" for c in convs)]
        table = Table()
        table.add_column("metric")
        table.add_column("pooled", justify="right")
        for conv in convs:
            table.add_column(f"per-image ({conv})", justify="right")
        for key in ("dice", "iou", "accuracy", "sensitivity", "specificity"):
            table.add_row(key, _fmt(summary["pooled"][key]), *[_fmt(by[c]["per_image"].get(key)) for c in convs])
        parts.append((heading, table))
    buf = io.StringIO()
    console = Console(file=buf, width=width, no_color=True, force_terminal=False)
    for i, (heading, table) in enumerate(parts):
        if i:
            buf.write("\n")
        for line in heading:
            buf.write(textwrap.fill(line, width, subsequent_indent="  ", break_long_words=False,
                                    break_on_hyphens=False) + "\n")
        console.print(table)
    return buf.getvalue()


def write_test_reports(summary: dict[str, Any], log_dir: str | os.PathLike, prefix: str = "test") -> dict[str, Path]:
    """Write the JSON/CSV reports of an evaluation summary into ``log_dir`` and log where they went."""
    log_dir = Path(log_dir)
    written = {"json": write_json(log_dir / f"{prefix}_metrics.json", summary)}
    if summary.get("cases"):
        rows = [r for conv in summary.get("conventions") or ["strict"] for r in convention_rows(summary["cases"], conv)]
        written["cases_csv"] = write_csv(log_dir / f"{prefix}_cases.csv", rows, CASE_FIELDS)
        written["per_class_csv"] = write_csv(log_dir / f"{prefix}_per_class.csv", per_class_rows(summary),
                                             PER_CLASS_FIELDS)
    # the table itself is printed once, on stdout, by `vmunet test` (training.cli.run_lightning_cli)
    log.info("%s reports written to %s: %s", prefix, log_dir, ", ".join(p.name for p in written.values()))
    log.debug("%s\n%s", prefix, format_table(summary))
    return written
