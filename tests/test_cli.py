"""The `vmunet` command's own behaviour: fast help, short config errors, quiet runs."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmunet.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Walks the real parser, so a subcommand added later is covered too; prints each command path
# whose help printed, then whether torch (or what pulls it in) was imported.
HELP_WITHOUT_TORCH = """
import argparse, contextlib, io, sys
from vmunet.cli import LIGHTNING_COMMANDS, build_parser, main

def paths(parser, prefix=()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if prefix or name not in LIGHTNING_COMMANDS:
                    yield from paths(sub, prefix + (name,))

for path in paths(build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (path, exc.code)
    text = out.getvalue()
    assert text.startswith("usage: vmunet"), (path, text[:200])
    print("HELP", " ".join(path))
print("IMPORTED", sorted(m for m in ("torch", "lightning", "monai") if m in sys.modules))
"""


def test_help_of_every_non_lightning_command_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    helped = {line[5:] for line in lines if line.startswith("HELP ")}
    assert {"", "predict", "export", "prepare", "synth", "info", "weights", "weights inspect", "ablate"} <= helped, helped
    assert lines[-1] == "IMPORTED []"


@pytest.mark.parametrize("case", ["flag", "yaml"])
def test_a_config_typo_prints_the_error_first_not_the_usage(case, tmp_path, capsys):
    if case == "flag":
        args = ["fit", "--config", str(ROOT / "experiments" / "demo.yaml"), "--trainer.max_epoch", "3"]
        key = "trainer.max_epoch"
    else:
        cfg = tmp_path / "typo.yaml"
        cfg.write_text("trainer:\n  max_epochz: 3\n")
        args = ["fit", "--config", str(ROOT / "experiments" / "demo.yaml"), "--config", str(cfg)]
        key = "trainer.max_epochz"
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"vmunet fit: error: {key}: unknown key; did you mean trainer.max_epochs? "
                                         "(`vmunet fit --help` lists the accepted keys)"]
    assert not (tmp_path / "runs").exists()


def test_a_tiny_fit_prints_no_third_party_adverts_or_deprecations(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "training"),
                                                         os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "vmunet.cli", "fit", "--data", "train_toy.ToyVolumeData",
           "--model.model_name", "vmunet_test", "--trainer.max_epochs", "1",
           "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
           "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(tmp_path / "runs")]
    # the child writes UTF-8 (Rich tables); decode it so whatever the locale (CI may have none)
    proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=600,
                          cwd=tmp_path, env={**env, "PYTHONIOENCODING": "utf-8"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in output  # the run did happen
    assert (tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt").exists()
    # held while the configuration was built (a config error would be the only line), then shown in order
    lines = output.splitlines()
    assert lines.count("Seed set to 42") == 1 and lines.index("Seed set to 42") < lines.index(
        "GPU available: False, used: False"), output
    # the model summary once, without Lightning's "Total FLOPs: 0" (it counts none without an example input)
    assert output.count("Total params") == 1, output
    for noise in ("litlogger", "💡", "DeprecationWarning", "FutureWarning", "deprecated", "FLOPs: 0", "Total Flops",
                  "already configured with model summary"):
        assert noise not in output, f"{noise!r} in:\n{output}"


def test_a_folder_scan_prints_no_itk_warnings(tmp_path, capfd):
    from vmunet.inference.io import find_cases

    (tmp_path / "notes").mkdir()  # a sub-folder that is no DICOM series: ITK warns "No Series were found"
    (tmp_path / "notes" / "readme.txt").write_text("not an image\n")
    (tmp_path / "case1.nii.gz").write_bytes(b"")
    assert find_cases(tmp_path) == [tmp_path / "case1.nii.gz"]
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("argv", [["synth", "isic", "--official"], ["synth", "synapse", "--slice", "4"]])
def test_a_prefix_of_an_option_is_refused_not_taken_for_it(argv, tmp_path, capsys):
    # argparse's default prefix matching took --official for --official-splits (and wrote the other layout)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"vmunet: error: unrecognized arguments: {' '.join(argv[2:])}"
    assert not (tmp_path / "out").exists()


# `-v` on a cheap command, then a real third-party import that logs at DEBUG when allowed to
# (matplotlib: "matplotlib data path ...", "CONFIGDIR=...")
VERBOSE_RUN = """
import sys
from vmunet.cli import main
assert main([*sys.argv[2:], "synth", "isic", "--out", sys.argv[1], "--cases", "2", "--size", "16"]) == 0
import matplotlib.pyplot
"""


@pytest.mark.parametrize("flag", [["-v"], []])
def test_verbose_shows_vmunet_debug_lines_only(flag, tmp_path):
    proc = subprocess.run([sys.executable, "-c", VERBOSE_RUN, str(tmp_path / "isic"), *flag], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300, cwd=ROOT,
                          env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert proc.returncode == 0, proc.stderr
    debug = [line.split()[3] for line in proc.stderr.splitlines() if line.split()[2:3] == ["DEBUG"]]
    assert debug == (["vmunet.data.synth:"] if flag else []), proc.stderr


@contextlib.contextmanager
def fresh_logging():
    """The process's logging as a fresh `vmunet` process has it (no handlers: configure_logging's
    basicConfig installs its stderr handler; pytest's capture handlers are put back afterwards, as
    are the levels, for the other tests). Entered in the test body: pytest adds its handlers per phase."""
    root, ours = logging.getLogger(), logging.getLogger("vmunet")
    saved = root.handlers[:], root.level, ours.level
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])


@pytest.mark.parametrize("flag", [["-v"], ["--verbose"], []])
def test_verbose_before_a_lightning_command_shows_the_held_notices(flag, tmp_path, capfd):
    # argparse refused `vmunet -v fit --config ...` (the fit options are LightningCLI's); a missing data
    # folder fails after seeding, so "Seed set to 42" is held, then dropped to DEBUG: shown with -v only
    missing = tmp_path / "no_data"
    argv = [*flag, "fit", "--config", str(ROOT / "experiments" / "demo.yaml"), "--data.init_args.root", str(missing),
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    with fresh_logging():
        assert main(argv) == 2
    captured = capfd.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and lines[-1].startswith(f"vmunet fit: error: {missing}: Synapse data folder does "
                                                       "not exist"), captured.err
    debug = [line.split(maxsplit=4)[3:] for line in lines if line.split()[2:3] == ["DEBUG"]]
    assert debug == ([["lightning.fabric.utilities.seed:", "Seed set to 42"]] if flag else []), captured.err
    assert len(lines) == 1 + len(debug), captured.err  # nothing else: no library's debug output
    assert not (tmp_path / "runs").exists()


def test_verbose_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["-v", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: vmunet [-h] [-v] COMMAND ...")


@pytest.mark.parametrize("argv,line", [
    (["synth", "isic", "--out", "OUT", "-v"],
     "vmunet: error: unrecognized arguments: -v (-v/--verbose goes before the command: vmunet -v COMMAND ...)"),
    (["fit", "--config", "experiments/demo.yaml", "--verbose"],
     "vmunet fit: error: unrecognized arguments: --verbose (-v/--verbose goes before the command: vmunet -v fit ...)"),
])
def test_verbose_after_the_command_says_where_it_goes(argv, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # experiments/demo.yaml
    argv = [str(tmp_path / "synth") if a == "OUT" else a for a in argv]
    try:  # argparse exits; the LightningCLI path returns the status
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == line
    assert not (tmp_path / "synth").exists()
