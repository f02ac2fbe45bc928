"""``vmunet ablate``: train one config over several scan-direction sets and/or models, then tabulate.

Each variant (a registered model x a direction set) is trained with the project's own entry point
(:func:`vmunet.training.cli.run_lightning_cli`, i.e. ``vmunet fit`` with the config plus overrides),
seeded alike, in its own folder ``<out>/<variant>/version_0``; ``vmunet test`` of its best
checkpoint writes the usual test reports into that same run folder. The runner
then writes, atomically, into ``<out>`` (rewritten after every variant, so a long ablation that stops
keeps the rows it finished; the Markdown header says "partial" until the last one):

* ``results.csv`` -- one row per variant: model, directions, parameters, fit / test wall time,
  per-class test Dice, mean Dice and HD95, the empty-mask convention and HD95 definition;
* ``results.md`` -- the same as a Markdown table under a line naming the convention, the HD95
  definition and the conditions (config, seed, overrides);
* ``results.json`` -- all of it plus the run folders and checkpoints;
* ``dice.png`` -- per-class test Dice (and the mean) as grouped bars, one bar per variant.

Variants whose per-class test Dice are all identical (typically models trained too briefly to
predict anything but one class everywhere: every direction set then scores that constant map's
Dice) get a warning in the log, under the Markdown table and in ``results.json`` (``warnings``):
such a table compares nothing.

Direction sets are written ``[LABEL=]NAMES``: ``NAMES`` is a comma-separated list of scan orders
(``h,v,h_flip,v_flip``) used by every stage, or ``/``-separated lists, one per stage (encoder
stages, then decoder stages deepest first; see :func:`vmunet.models.common.stage_directions`).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmunet.errors import ConfigError

log = logging.getLogger(__name__)

#: Size of ``dice.png`` in pixels (width, height): ``PLOT_INCHES`` at ``PLOT_DPI``.
PLOT_INCHES = (10.0, 5.0)
PLOT_DPI = 100
#: The fixed columns of ``results.csv``; the per-class ``dice_<class>`` columns go after ``test_s``.
LEADING_FIELDS = ("variant", "model", "directions", "params", "fit_s", "test_s")
TRAILING_FIELDS = ("mean_dice", "mean_hd95", "convention", "hd95_definition")
DEFAULT_LABEL = "default"


@dataclass(frozen=True)
class Variant:
    """One run of the ablation: a registered model and its scan directions (None: the model's own)."""

    model: str
    label: str
    directions: tuple[Any, ...] | None = None

    @property
    def directions_text(self) -> str:
        """The scan orders as written on the command line (``-`` for the model's default)."""
        if self.directions is None:
            return "-"
        if self.directions and isinstance(self.directions[0], (list, tuple)):
            return "/".join(",".join(d) for d in self.directions)
        return ",".join(self.directions)

    @property
    def name(self) -> str:
        """Folder name and table row: ``<model>__<label>`` with filesystem-safe characters."""
        return re.sub(r"[^A-Za-z0-9_.+=-]", "-", f"{self.model}__{self.label}")


@dataclass
class AblationResult:
    """What :func:`run_ablation` produced: the table rows, the files written and the warnings
    they carry (:func:`identical_dice_warnings`)."""

    rows: list[dict[str, Any]]
    class_names: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def parse_direction_set(text: str) -> tuple[str, list[str] | list[list[str]]]:
    """``[LABEL=]a,b,c`` or ``[LABEL=]a,b/c/...`` -> (label, names or one list per stage).

    Order names are checked here; the number of per-stage lists is checked against each model.
    """
    from vmunet.ops.cross_scan import check_directions

    label, sep, spec = text.partition("=")
    if not sep:
        label, spec = "", text
    if sep and not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
        raise ConfigError(f"--directions {text!r}: the label before '=' may use letters, digits and _.+- only")
    stages = [[n.strip() for n in part.split(",") if n.strip()] for part in spec.split("/")]
    try:
        for names in stages:
            check_directions(names)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--directions {text!r}: {err}") from None
    directions: list[str] | list[list[str]] = stages[0] if len(stages) == 1 else stages
    if not label:
        label = "+".join(stages[0]) if len(stages) == 1 else ".".join("+".join(s) for s in stages)
    return label, directions


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"--config {path}: expected a mapping at the top level")
    return cfg


def plan_variants(config: Mapping[str, Any], models: Sequence[str] | None,
                  direction_sets: Sequence[str] | None) -> list[Variant]:
    """Every (model, direction set) pair, checked before anything trains: registered model names,
    known order names, models that take ``directions``, per-stage list counts, distinct names."""
    from vmunet.models.registry import list_models, model_spec

    model_cfg = config.get("model") or {}
    models = list(models or [model_cfg.get("model_name", "vmunet")])
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise ConfigError(f"--models: unknown model(s) {unknown}; available: {', '.join(list_models())}")
    # (what was typed, label, directions): errors quote the user's text, not the derived label
    sets = [(t, *parse_direction_set(t)) for t in direction_sets or []]
    base_kwargs = dict(model_cfg.get("model_kwargs") or {})
    variants = []
    for model in models:
        spec = model_spec(model)
        if not sets:
            variants.append(Variant(model, DEFAULT_LABEL))
            continue
        if "directions" not in inspect.signature(spec.builder.__init__).parameters:
            raise ConfigError(f"--models: {model!r} has no scan directions to vary (drop --directions or the model)")
        depths = base_kwargs.get("depths", spec.defaults.get("depths"))
        for text, label, directions in sets:
            per_stage = bool(directions) and isinstance(directions[0], list)
            if per_stage and depths is not None:
                encoder, decoder, _ = spec.builder.vss_stage_counts(len(depths))  # the model's own count
                if len(directions) != encoder + decoder:
                    raise ConfigError(
                        f"--directions {text!r}: {len(directions)} per-stage lists, but {model!r} has "
                        f"{encoder} encoder + {decoder} decoder stages ({encoder + decoder} lists)")
            variants.append(Variant(model, label, tuple(directions)))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"ablation variants must differ, got {dupes} more than once (label the sets: NAME=...)")
    return variants


def _lightning_args(config: Path, variant: Variant, root: Path, seed: int, base_kwargs: Mapping[str, Any],
                    overrides: Sequence[str]) -> list[str]:
    kwargs = dict(base_kwargs)
    if variant.directions is not None:
        kwargs["directions"] = [list(d) if isinstance(d, (list, tuple)) else d for d in variant.directions]
    return ["--config", str(config), "--trainer.default_root_dir", str(root / variant.name),
            "--seed_everything", str(seed), "--model.model_name", variant.model,
            "--model.model_kwargs", json.dumps(kwargs), "--trainer.enable_progress_bar", "false",
            *overrides]


def _summary_scores(summary: Mapping[str, Any]) -> tuple[dict[str, float], float, float | None]:
    """(per-class Dice, mean Dice, mean HD95 in voxels) of a test summary; binary image-wise
    (ISIC) tests without per-case rows give the pooled Dice as one ``foreground`` class."""
    if "per_class" in summary:
        per_class = {name: vals["dice"] for name, vals in summary["per_class"].items()}
        return per_class, summary["mean"]["dice"], summary["mean"].get("hd95")
    if "pooled" in summary:
        return {"foreground": summary["pooled"]["dice"]}, summary["pooled"]["dice"], None
    raise ConfigError("the test run produced no metrics (is the test split empty?)")


def tested_checkpoint(callbacks: Sequence[Any], fit_dir: Path, name: str) -> Path:
    """The checkpoint to test: the best one of the first checkpoint callback (the monitored one), else
    (its value never logged, e.g. no validation split) the newest one another callback wrote
    (``last.ckpt``), said in the log; :class:`ConfigError` when the fit wrote none."""
    if not callbacks:
        raise ConfigError(f"{fit_dir}: the fit of {name} had no checkpoint callback (trainer.enable_checkpointing "
                          "false?): nothing to test")
    monitored, others = callbacks[0], callbacks[1:]
    if monitored.best_model_path:
        return Path(monitored.best_model_path)
    last = next((p for cb in [monitored, *others] for p in (cb.last_model_path, cb.best_model_path) if p), "")
    if not last:
        raise ConfigError(f"{fit_dir}: the fit of {name} wrote no checkpoint to test (checkpoint.monitor "
                          f"{monitored.monitor} never logged and checkpoint.save_last false)")
    log.warning("ablation: %s has no best checkpoint (%s was never logged): testing %s", name, monitored.monitor,
                last)
    return Path(last)


def run_variant(variant: Variant, config: Path, out: Path, seed: int, base_kwargs: Mapping[str, Any],
                overrides: Sequence[str]) -> dict[str, Any]:
    """Fit and test one variant through LightningCLI; returns its table row."""
    from vmunet.models.registry import count_parameters
    from vmunet.training.cli import run_lightning_cli

    args = _lightning_args(config, variant, out, seed, base_kwargs, overrides)
    log.info("ablation: fitting %s", variant.name)
    t0 = time.perf_counter()
    fit = run_lightning_cli(["fit", *args])
    fit_s = time.perf_counter() - t0
    params = count_parameters(fit.model.model)
    fit_dir = Path(fit.trainer.log_dir)
    best = tested_checkpoint(fit.trainer.checkpoint_callbacks, fit_dir, variant.name)
    del fit
    t0 = time.perf_counter()
    test = run_lightning_cli(["test", *args, "--ckpt_path", str(best), "--verbose", "false"])
    test_s = time.perf_counter() - t0
    summary = test.model.last_summary or {}
    per_class, mean_dice, mean_hd95 = _summary_scores(summary)
    return {
        "variant": variant.name, "model": variant.model, "directions": variant.directions_text,
        "params": params, "fit_s": round(fit_s, 1), "test_s": round(test_s, 1),
        **{f"dice_{name}": value for name, value in per_class.items()},
        "mean_dice": mean_dice, "mean_hd95": mean_hd95,
        "convention": summary.get("convention"), "hd95_definition": summary.get("hd95_definition"),
        "fit_dir": str(fit_dir), "test_dir": str(test.trainer.log_dir), "checkpoint": str(best),
    }


def identical_dice_groups(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Names of the variants, in groups of two or more, whose per-class test Dice are all equal
    (exactly: the same test decisions give the same floats); one group per distinct Dice vector."""
    groups: dict[tuple[tuple[str, Any], ...], list[str]] = {}
    for r in rows:
        key = tuple(sorted((k, None if _missing(r[k]) else r[k]) for k in r if k.startswith("dice_")))
        groups.setdefault(key, []).append(r["variant"])
    return [names for names in groups.values() if len(names) > 1]


def identical_dice_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per group of :func:`identical_dice_groups`, saying why the table cannot rank them."""
    return [f"variants {', '.join(names)} gave identical per-class test Dice: the table cannot tell them apart. "
            "Different scan orders give different logits, so this usually means models too untrained to "
            "predict anything but one class everywhere (see misses and false_positives in each run's "
            "test_per_class.csv); train longer (-- --trainer.max_epochs N) before comparing"
            for names in identical_dice_groups(rows)]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, digits: int) -> str:
    if _missing(value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], header: str) -> str:
    """The results as a Markdown table below ``header`` (a line naming the conditions)."""
    cols = ["variant", "model", "directions", "params", "fit (s)", "test (s)",
            *[f"Dice {c}" for c in class_names], "mean Dice", "mean HD95 (vox)"]
    lines = [header, "", "| " + " | ".join(cols) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(cols))) + "|"]
    for r in rows:
        cells = [r["variant"], r["model"], f"`{r['directions']}`", f"{r['params']:,}", _fmt(r["fit_s"], 1),
                 _fmt(r["test_s"], 1), *[_fmt(r.get(f"dice_{c}"), 4) for c in class_names],
                 _fmt(r["mean_dice"], 4), _fmt(r["mean_hd95"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_dice(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], path: Path, title: str) -> Path:
    """Grouped bars of per-class Dice (plus the mean), one bar per variant; a PNG of exactly
    ``PLOT_INCHES * PLOT_DPI`` pixels, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the backend of a headless run
    import matplotlib.pyplot as plt
    import numpy as np

    from vmunet.data.fileio import atomic_path

    groups = [*class_names, "mean"]
    x = np.arange(len(groups))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=PLOT_INCHES, dpi=PLOT_DPI)
    try:
        for k, r in enumerate(rows):
            values = [r.get(f"dice_{c}") for c in class_names] + [r["mean_dice"]]
            values = [np.nan if v is None else v for v in values]
            ax.bar(x - 0.4 + width * (k + 0.5), values, width, label=r["variant"])
        ax.set_xticks(x, groups, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("test Dice")
        ax.set_title(textwrap.fill(title, 120), fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=PLOT_DPI, format="png")
    finally:
        plt.close(fig)
    return path


def run_ablation(config: str | Path, out: str | Path, *, models: Sequence[str] | None = None,
                 direction_sets: Sequence[str] | None = None, seed: int = 42,
                 overrides: Sequence[str] = ()) -> AblationResult:
    """Train and test every variant, then write ``results.csv|md|json`` and ``dice.png`` to ``out``."""
    from vmunet.data.fileio import ensure_writable_folder, missing_folders, remove_empty_folders

    config, out = Path(config), Path(out)
    cfg = _read_config(config)
    if any(o.split("=", 1)[0] in ("--model.model_kwargs", "--model.model_name", "--seed_everything")
           for o in overrides):
        raise ConfigError("ablate sets --model.model_name, --model.model_kwargs and --seed_everything itself; "
                          "use --models, --directions, --seed and the config's model.model_kwargs")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"--seed: expected an integer in [0, 2**32), got {seed!r}")  # before any run starts
    variants = plan_variants(cfg, models, direction_sets)
    created = missing_folders(out)
    ensure_writable_folder(out, "--out")
    try:
        return _run_variants(variants, config, out, seed, cfg, overrides)
    except BaseException:
        # refused before a result was written (the first variant's config, a trainer setting): no new empty
        # --out folder left behind (its variants' run folders give themselves back)
        remove_empty_folders(created)
        raise


def _run_variants(variants: list[Variant], config: Path, out: Path, seed: int, cfg: Mapping[str, Any],
                  overrides: Sequence[str]) -> AblationResult:
    base_kwargs = dict((cfg.get("model") or {}).get("model_kwargs") or {})
    conditions = (f"config {config}, seed {seed}" + (f", overrides {' '.join(overrides)}" if overrides else "")
                  + "; times are wall-clock seconds on this machine")
    rows: list[dict[str, Any]] = []
    for variant in variants:
        rows.append(run_variant(variant, config, out, seed, base_kwargs, overrides))
        # rewritten after every variant: a long ablation keeps the finished rows if it stops
        result = write_results(out, rows, {"config": str(config), "seed": seed, "overrides": list(overrides)},
                               conditions + ("" if len(rows) == len(variants) else
                                             f"; partial: {len(rows)} of {len(variants)} variants"))
    for warning in result.warnings:
        log.warning("ablation: %s", warning)
    log.info("ablation results: %s", ", ".join(str(p) for p in result.files.values()))
    return result


def write_results(out: Path, rows: list[dict[str, Any]], meta: Mapping[str, Any], conditions: str) -> AblationResult:
    """Write ``results.csv|md|json`` and ``dice.png`` for ``rows`` into ``out`` (each atomically)."""
    from vmunet.data.fileio import write_csv, write_json, write_text
    from vmunet.evaluation.metrics import describe

    class_names: list[str] = []
    for r in rows:
        class_names += [k[5:] for k in r if k.startswith("dice_") and k[5:] not in class_names]
    conventions = {(r["convention"], r["hd95_definition"]) for r in rows}
    metric_line = "; ".join(describe(c, h) for c, h in sorted(conventions, key=str))
    fields = [*LEADING_FIELDS, *[f"dice_{c}" for c in class_names], *TRAILING_FIELDS]
    warnings = identical_dice_warnings(rows)
    table = markdown_table(rows, class_names, f"Test metrics: {metric_line}. Conditions: {conditions}.")
    files = {
        "csv": write_csv(out / "results.csv", rows, fields),
        "markdown": write_text(out / "results.md", table + "".join(f"\n**Warning**: {w}.\n" for w in warnings)),
        "json": write_json(out / "results.json", {**meta, "metrics": metric_line, "conditions": conditions,
                                                  "class_names": class_names, "rows": rows,
                                                  "warnings": warnings}),
        "plot": plot_dice(rows, class_names, out / "dice.png", "per-class test Dice, mean over cases; " + "; ".join(
            f"convention {c}, HD95 {h or 'not computed'}" for c, h in sorted(conventions, key=str))),
    }
    return AblationResult(rows, class_names, files, warnings)
