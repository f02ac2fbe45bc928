"""Test reports: the per-class table (rich), per-case CSV, per-class CSV and a JSON summary.

Files land in the run's log directory, each written atomically:

* ``test_metrics.json`` -- everything: per-class and mean Dice/HD95 (voxels, mm), the ISIC pooled
  and per-image metrics when present, and the per-case rows.
* ``test_cases.csv`` -- one row per (case, class).
* ``test_per_class.csv`` -- one row per class plus a final ``mean`` row.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from vmunet.data.fileio import atomic_path
from vmunet.evaluation.metrics import CASE_FIELDS

log = logging.getLogger(__name__)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def per_class_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"class", "dice", "hd95", "hd95_mm"}`` for each foreground class and the mean."""
    if "per_class" not in summary:
        return []
    rows = [{"class": name, **vals} for name, vals in summary["per_class"].items()]
    rows.append({"class": "mean", **summary["mean"]})
    return rows


def format_table(summary: dict[str, Any]) -> str:
    """Render the evaluation summary as a plain-text table (rich, no colours)."""
    from rich.console import Console
    from rich.table import Table

    parts: list[Table] = []
    rows = per_class_rows(summary)
    if rows:
        table = Table(title=f"{summary.get('stage', 'test')}: {summary['num_cases']} cases, "
                      "mean over cases, then classes")
        for col in ("class", "Dice", "HD95 (vox)", "HD95 (mm)"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for r in rows:
            table.add_row(r["class"], _fmt(r["dice"]), _fmt(r["hd95"], 2), _fmt(r["hd95_mm"], 2))
        parts.append(table)
    if "pooled" in summary:
        table = Table(title=f"{summary.get('stage', 'test')}: {summary['num_images']} images, threshold 0.5")
        table.add_column("metric")
        table.add_column("pooled (paper)", justify="right")
        table.add_column("per-image mean", justify="right")
        for key in ("dice", "iou", "accuracy", "sensitivity", "specificity"):
            table.add_row(key, _fmt(summary["pooled"][key]), _fmt(summary["per_image"].get(key)))
        parts.append(table)
    buf = io.StringIO()
    console = Console(file=buf, width=100, no_color=True, force_terminal=False)
    for table in parts:
        console.print(table)
    return buf.getvalue()


def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def write_test_reports(summary: dict[str, Any], log_dir: str | os.PathLike, prefix: str = "test") -> dict[str, Path]:
    """Write the JSON/CSV reports of an evaluation summary into ``log_dir``; log and print the table."""
    log_dir = Path(log_dir)
    written = {"json": atomic_write_text(log_dir / f"{prefix}_metrics.json",
                                         json.dumps(summary, indent=2, default=float) + "\n")}
    if summary.get("cases"):
        written["cases_csv"] = atomic_write_text(log_dir / f"{prefix}_cases.csv", _csv(summary["cases"], CASE_FIELDS))
        written["per_class_csv"] = atomic_write_text(
            log_dir / f"{prefix}_per_class.csv", _csv(per_class_rows(summary), ("class", "dice", "hd95", "hd95_mm"))
        )
    table = format_table(summary)
    log.info("%s metrics written to %s\n%s", prefix, log_dir, table)
    return written
