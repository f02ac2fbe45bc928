"""``vmunet ablate``: two direction sets trained on tiny synthetic Synapse data give a results table
(CSV + Markdown) with the expected rows and columns, and a PNG bar chart of the expected size; bad
direction / model names are one-line errors (exit 2) before anything trains."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
ORGANS = ["aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach"]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """The demo recipe on 4 synthetic 32x32x4 cases (2 train, 2 test), one 1-step epoch, d_state 2
    (a model_kwargs entry of the config that every variant must keep next to its directions)."""
    from vmunet.data.synth import synth_synapse

    tmp = tmp_path_factory.mktemp("ablate")
    synth_synapse(tmp / "data", cases=4, size=32, slices=4, seed=0)
    cfg = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    cfg["trainer"].update(max_epochs=1, limit_train_batches=1, enable_progress_bar=False)
    cfg["model"].update(model_kwargs={"d_state": 2}, t_max=1)
    cfg["data"]["init_args"].update(root=str(tmp / "data"), image_size=32, batch_size=4)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ablate_writes_the_table_and_the_plot(tiny_config, tmp_path, capsys):
    from vmunet.cli import main
    from vmunet.models import create_model
    from vmunet.models.registry import count_parameters

    out = tmp_path / "out"
    rc = main(["ablate", "--config", str(tiny_config), "--out", str(out), "--seed", "7",
               "--directions", "vmamba=h,v,h_flip,v_flip", "--directions", "snake_h,hilbert_flip,local2_t"])
    assert rc == 0
    printed = capsys.readouterr().out

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dice_cols = [f"dice_{o}" for o in ORGANS]
    assert list(rows[0]) == ["variant", "model", "directions", "params", "fit_s", "test_s", *dice_cols,
                             "mean_dice", "mean_hd95", "convention", "hd95_definition"]
    assert [(r["variant"], r["directions"]) for r in rows] == [
        ("vmunet_test__vmamba", "h,v,h_flip,v_flip"),
        ("vmunet_test__snake_h+hilbert_flip+local2_t", "snake_h,hilbert_flip,local2_t")]
    report = json.loads((out / "results.json").read_text())
    for row, full, dirs in zip(rows, report["rows"], (["h", "v", "h_flip", "v_flip"],
                                                      ["snake_h", "hilbert_flip", "local2_t"]), strict=True):
        model = create_model("vmunet_test", num_classes=9, in_chans=1, directions=dirs, d_state=2)
        assert int(row["params"]) == count_parameters(model)
        assert row["convention"] == "strict" and row["hd95_definition"] == "pooled"
        # the numbers are those of the variant's own `vmunet test` report
        test_report = json.loads((Path(full["test_dir"]) / "test_metrics.json").read_text())
        assert float(row["mean_dice"]) == pytest.approx(test_report["mean"]["dice"], abs=1e-12)
        for organ in ORGANS:
            expected = test_report["per_class"][organ]["dice"]
            assert (row[f"dice_{organ}"] == "") if expected is None else \
                float(row[f"dice_{organ}"]) == pytest.approx(expected, abs=1e-12)
        assert Path(full["checkpoint"]).is_file() and Path(full["fit_dir"]).parent == out / row["variant"]
    assert rows[0]["params"] != rows[1]["params"]  # K = 4 vs 3 directions

    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("Test metrics: convention strict (") and "HD95 pooled (medpy hd95" in md[0]
    assert "seed 7" in md[0] and "partial" not in md[0]  # rewritten after the last variant too
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 4 and table[0].count("|") == 6 + len(ORGANS) + 2 + 1
    assert "| vmunet_test__vmamba | vmunet_test | `h,v,h_flip,v_flip` |" in table[2]
    assert "\n".join(md) in printed

    with Image.open(out / "dice.png") as img:
        assert img.format == "PNG" and img.size == (1000, 500)
        img.load()  # decodes: a complete, valid image


@pytest.mark.parametrize("args,message", [
    (["--directions", "h,spiral"], "vmunet ablate: error: --directions 'h,spiral': unknown scan direction(s) ['spiral']"),
    # the set as typed, not the label derived from it ('h.v')
    (["--directions", "h/v"], "vmunet ablate: error: --directions 'h/v': 2 per-stage lists, but 'vmunet_test' has "
                              "4 encoder + 4 decoder stages (8 lists)"),
    # the count is the model's own: Swin-UMamba's UNETR decoder has no VSS stages
    (["--models", "swin_umamba", "--directions", "h/v/h/v/h/v/h/v"],
     "vmunet ablate: error: --directions 'h/v/h/v/h/v/h/v': 8 per-stage lists, but 'swin_umamba' has "
     "4 encoder + 0 decoder stages (4 lists)"),
    (["--models", "vmunet_test", "nope"], "vmunet ablate: error: --models: unknown model(s) ['nope']; available:"),
    (["--directions", "a=h", "--directions", "a=v"], "vmunet ablate: error: ablation variants must differ"),
])
def test_bad_names_are_one_line_errors_before_training(tiny_config, tmp_path, capsys, args, message):
    from vmunet.cli import main

    rc = main(["ablate", "--config", str(tiny_config), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_binary_image_summaries_give_the_pooled_dice_as_one_class():
    """ISIC-style binary tests have no per-case rows: the papers' pooled Dice is the one column."""
    from vmunet.training.ablation import _summary_scores, markdown_table

    summary = {"pooled": {"dice": 0.8125, "iou": 0.6842}, "convention": "strict", "per_image": {"dice": 0.7}}
    assert _summary_scores(summary) == ({"foreground": 0.8125}, 0.8125, None)
    row = {"variant": "m__a", "model": "m", "directions": "h,v", "params": 1234567, "fit_s": 1.25, "test_s": 0.5,
           "dice_foreground": 0.8125, "mean_dice": 0.8125, "mean_hd95": None}
    assert markdown_table([row], ["foreground"], "head").splitlines() == [
        "head", "",
        "| variant | model | directions | params | fit (s) | test (s) | Dice foreground | mean Dice | mean HD95 (vox) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        "| m__a | m | `h,v` | 1,234,567 | 1.2 | 0.5 | 0.8125 | 0.8125 | - |",
    ]


def _variant_argv(variant, config, out, monkeypatch):
    """The exact LightningCLI argv that ``run_variant`` gives ``vmunet fit`` for ``variant``."""
    import vmunet.training.cli as cli_module
    from vmunet.training.ablation import run_variant

    class Captured(Exception):
        pass

    seen = []

    def capture(argv, print_results=True):
        seen.append(list(argv))
        raise Captured

    monkeypatch.setattr(cli_module, "run_lightning_cli", capture)
    with pytest.raises(Captured):
        run_variant(variant, config, out, 42, {"d_state": 2}, [])
    assert seen[0][0] == "fit"
    return seen[0][1:]


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")  # run_lightning_cli ignores it too
def test_each_variant_builds_a_model_with_its_own_scan_orders(tiny_config, tmp_path, monkeypatch):
    """The ablate path (plan_variants -> run_variant's argv -> LightningCLI) builds models whose SS2D
    blocks scan in the variant's orders, stage by stage, and whose logits differ from the same
    weights: a direction set that did not reach the model would make the ablation a silent no-op."""
    import torch
    from lightning.pytorch import LightningDataModule

    from vmunet.layers.ss2d import SS2D
    from vmunet.training.ablation import plan_variants
    from vmunet.training.cli import VMUNetCLI
    from vmunet.training.module import SegmentationModule

    per_stage = [["h", "v"], ["hilbert", "snake_h"], ["d", "ad"], ["local2", "h"],  # encoder, shallow to deep
                 ["v", "h_flip"], ["cyc_d", "cyc_ad"], ["snake_v", "h"], ["hilbert_t", "v"]]  # decoder, deepest first
    sets = ["vmamba=h,v,h_flip,v_flip", "hilbert=hilbert,hilbert_t,hilbert_flip,hilbert_t_flip",
            "mixed=" + "/".join(",".join(s) for s in per_stage)]
    expected = {"vmamba": [("h", "v", "h_flip", "v_flip")] * 8,
                "hilbert": [("hilbert", "hilbert_t", "hilbert_flip", "hilbert_t_flip")] * 8,
                "mixed": [tuple(s) for s in per_stage]}
    cfg = yaml.safe_load(tiny_config.read_text())
    modules = {}
    for variant in plan_variants(cfg, None, sets):
        argv = _variant_argv(variant, tiny_config, tmp_path, monkeypatch)
        cli = VMUNetCLI(SegmentationModule, LightningDataModule, subclass_mode_data=True, run=False,
                        args=[*argv, "--trainer.logger", "false"], auto_configure_optimizers=False)
        net = cli.model.model
        stages = [*net.layers, *net.layers_up]
        got = [{b.directions for b in stage.modules() if isinstance(b, SS2D)} for stage in stages]
        assert got == [{d} for d in expected[variant.label]], variant.label
        assert {b.d_state for b in net.modules() if isinstance(b, SS2D)} == {2}  # the config's kwarg is kept
        modules[variant.label] = cli.model
    a, b = modules["vmamba"].model.eval(), modules["hilbert"].model.eval()
    weights = a.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in b.state_dict().items())  # same seed, same shapes
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb, again = a(x), b(x), a(x)
    # same weights, same input: only the scan orders differ (identical orders give bitwise-equal logits)
    assert torch.equal(again, la)
    assert (la - lb).abs().max().item() > 1e-5


def test_variants_with_identical_dice_are_flagged(tmp_path, caplog):
    """Variants with the same per-class Dice (e.g. all predicting one class everywhere) are named in a
    warning in results.md and results.json; variants that differ in one class are not."""
    from vmunet.training.ablation import identical_dice_groups, write_results

    def row(name, stomach, aorta=0.0):
        return {"variant": name, "model": "m", "directions": "h", "params": 10, "fit_s": 1.0, "test_s": 1.0,
                "dice_aorta": aorta, "dice_stomach": stomach, "mean_dice": (aorta + stomach) / 2,
                "mean_hd95": None, "convention": "strict", "hd95_definition": "pooled"}

    rows = [row("m__a", 0.0358), row("m__b", 0.0358), row("m__c", 0.0358, aorta=0.5),
            row("m__d", float("nan")), row("m__e", float("nan"))]
    assert identical_dice_groups(rows) == [["m__a", "m__b"], ["m__d", "m__e"]]
    assert identical_dice_groups(rows[1:4]) == []
    write_results(tmp_path, rows, {}, "test")
    md = (tmp_path / "results.md").read_text()
    assert md.count("**Warning**: variants ") == 2
    assert "variants m__a, m__b gave identical per-class test Dice" in md
    assert "variants m__d, m__e gave identical" in md
    assert json.loads((tmp_path / "results.json").read_text())["warnings"][0].startswith("variants m__a, m__b ")
    write_results(tmp_path, rows[1:4], {}, "test")
    assert "Warning" not in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["warnings"] == []


def test_a_variant_without_a_best_checkpoint_tests_its_last_one(tmp_path, caplog):
    """No validation split (val/dice never logged): the monitored callback has no best file. ablate used
    to pass its empty best path on (``vmunet ablate: error: .: checkpoint file not found`` after the
    whole fit); it tests the last checkpoint, saying so, and names the run when there is none."""
    import logging
    from types import SimpleNamespace

    from vmunet.errors import ConfigError
    from vmunet.training.ablation import tested_checkpoint

    def cb(best="", last="", monitor=None):
        return SimpleNamespace(best_model_path=best, last_model_path=last, monitor=monitor)

    last = str(tmp_path / "checkpoints" / "last.ckpt")
    assert tested_checkpoint([cb("b.ckpt", monitor="val/dice"), cb(last, last)], tmp_path, "v") == Path("b.ckpt")
    caplog.set_level(logging.WARNING, logger="vmunet.training.ablation")
    assert tested_checkpoint([cb(monitor="val/dice"), cb(last, last)], tmp_path, "v") == Path(last)
    assert [r.getMessage() for r in caplog.records] == [
        f"ablation: v has no best checkpoint (val/dice was never logged): testing {last}"]
    with pytest.raises(ConfigError) as err:
        tested_checkpoint([cb(monitor="val/dice")], tmp_path, "v")
    assert str(err.value) == (f"{tmp_path}: the fit of v wrote no checkpoint to test (checkpoint.monitor val/dice "
                              "never logged and checkpoint.save_last false)")


def test_the_table_takes_the_mean_hd95_in_voxels_and_rounds_it_to_two_digits():
    """The column says "mean HD95 (vox)": the summary's ``hd95``, not its ``hd95_mm`` (a spacing of
    0.5 mm makes the two differ here), printed with two decimals."""
    from vmunet.training.ablation import _summary_scores, markdown_table

    summary = {"per_class": {"liver": {"dice": 0.5}, "spleen": {"dice": 0.25}},
               "mean": {"dice": 0.375, "hd95": 12.3456, "hd95_mm": 6.1728}}
    per_class, mean_dice, mean_hd95 = _summary_scores(summary)
    assert (per_class, mean_dice, mean_hd95) == ({"liver": 0.5, "spleen": 0.25}, 0.375, 12.3456)
    row = {"variant": "m__a", "model": "m", "directions": "h", "params": 12, "fit_s": 3.0, "test_s": 1.04,
           "dice_liver": 0.5, "dice_spleen": 0.25, "mean_dice": mean_dice, "mean_hd95": mean_hd95}
    assert markdown_table([row], ["liver", "spleen"], "head").splitlines()[-1] == (
        "| m__a | m | `h` | 12 | 3.0 | 1.0 | 0.5000 | 0.2500 | 0.3750 | 12.35 |")


def test_results_written_after_each_variant_say_partial_until_the_last(tmp_path, monkeypatch):
    """The table is rewritten after every variant, so a stopped ablation keeps its finished rows;
    until the last variant its header says how many of how many (run_variant stubbed: no training)."""
    import vmunet.training.ablation as ablation

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"model_name": "vmunet_test"}}))
    out, seen = tmp_path / "out", []

    def fake_run(variant, *args):
        seen.append((out / "results.md").read_text().splitlines()[0] if seen else None)
        return {"variant": variant.name, "model": variant.model, "directions": variant.directions_text,
                "params": 1, "fit_s": 1.0, "test_s": 1.0, "dice_liver": 0.5 + len(seen) / 8, "mean_dice": 0.5,
                "mean_hd95": None, "convention": "strict", "hd95_definition": "pooled"}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    result = ablation.run_ablation(config, out, direction_sets=["a=h", "b=v", "c=h,v"], seed=3)
    assert [r["variant"] for r in result.rows] == ["vmunet_test__a", "vmunet_test__b", "vmunet_test__c"]
    assert seen[0] is None
    assert seen[1].endswith("Conditions: config " + str(config) + ", seed 3; times are wall-clock seconds on this "
                            "machine; partial: 1 of 3 variants.")
    assert seen[2].endswith("; partial: 2 of 3 variants.")
    assert (out / "results.md").read_text().splitlines()[0].endswith("seconds on this machine.")


def test_a_refused_first_variant_leaves_no_out_folder(tiny_config, tmp_path, capsys):
    """A setting refused in the first variant's fit (a trainer value, after --out was created): the new --out
    folder and the variant's run folder were left behind, empty. Now nothing new is; an existing --out stays."""
    from vmunet.cli import main

    out = tmp_path / "new" / "out"
    argv = ["ablate", "--config", str(tiny_config), "--out", str(out), "--", "--trainer.devices", "abc"]
    assert main(argv) == 2
    assert "trainer.devices: expected a positive integer" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    out.mkdir(parents=True)
    assert main(argv) == 2 and out.is_dir() and list(out.iterdir()) == []
