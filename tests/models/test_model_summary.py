"""MAC counting (selective scan included) against a hand-written formula, memory measurement,
and the ``vmunet info`` command."""

from __future__ import annotations

import argparse
import json
import math
import sys

import pytest

from vmunet.models import count_parameters, create_model
from vmunet.models.commands import add_parsers
from vmunet.models.summary import count_macs, measure_peak_memory


def expected_macs(H, W, dims, depths, depths_decoder, in_chans, num_classes, N, K=4):
    """VM-UNet MACs written out layer by layer: (total, scan)."""
    def ss2d(h, w, d):
        L, di, r = h * w, 2 * d, math.ceil(d / 16)
        lin = L * d * 2 * di + L * di * d + K * L * di * (r + 2 * N) + K * L * r * di
        conv = L * di * 9
        scan = 4 * K * di * L * N + 2 * K * di * L
        return lin + conv, scan

    total = scan = 0
    h, w = H // 4, W // 4
    total += h * w * dims[0] * in_chans * 16
    for i, d in enumerate(dims):
        for _ in range(depths[i]):
            t, s = ss2d(h, w, d)
            total, scan = total + t, scan + s
        if i < len(dims) - 1:
            total += (h // 2) * (w // 2) * 4 * d * 2 * d
            h, w = h // 2, w // 2
    for i, d in enumerate(dims[::-1]):
        if i > 0:
            total += h * w * 2 * d * 4 * d
            h, w = 2 * h, 2 * w
        for _ in range(depths_decoder[i]):
            t, s = ss2d(h, w, d)
            total, scan = total + t, scan + s
    total += h * w * dims[0] * 4 * dims[0] + H * W * (dims[0] // 4) * num_classes
    return total + scan, scan


@pytest.mark.parametrize("name,cfg,N", [
    ("vmunet_test", dict(dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1]), 4),
    ("vmunet", dict(dims=[96, 192, 384, 768], depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1]), 16),
])
def test_macs_match_the_formula(name, cfg, N):
    model = create_model(name, num_classes=5, in_chans=1)
    report = count_macs(model, (1, 1, 64, 96))
    total, scan = expected_macs(64, 96, in_chans=1, num_classes=5, N=N, **cfg)
    assert report.macs_scan == scan
    assert report.macs_total == total
    assert report.flops_total == 2 * total


def test_macs_scale_with_batch():
    model = create_model("vmunet_test", num_classes=2)
    one, three = count_macs(model, (1, 3, 32, 32)), count_macs(model, (3, 3, 32, 32))
    assert three.macs_total == 3 * one.macs_total and three.macs_scan == 3 * one.macs_scan


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_is_measured_and_grows_with_the_input():
    model = create_model("vmunet_test", num_classes=2)
    small = measure_peak_memory(model, (1, 3, 32, 32))
    big = measure_peak_memory(model, (2, 3, 64, 64), train=True)
    assert small is not None and big is not None
    assert big > small and big > 2 * 3 * 64 * 64 * 4


def _run_cli(argv, capsys):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status = args.func(args)
    return status, capsys.readouterr().out


def test_info_command_prints_params_and_macs(capsys):
    status, out = _run_cli(["info", "vmunet_test", "--size", "64", "--num-classes", "3",
                            "--in-chans", "1", "--no-memory", "--json"], capsys)
    info = json.loads(out)
    model = create_model("vmunet_test", num_classes=3, in_chans=1)
    assert status == 0
    assert info["params"] == count_parameters(model)
    assert info["macs_total"] == count_macs(model, (1, 1, 64, 64)).macs_total
    assert info["input_shape"] == [1, 1, 64, 64] and info["peak_inference_bytes"] is None
    status, out = _run_cli(["info", "vmunet_test", "--size", "32", "64", "--no-memory"], capsys)
    assert status == 0 and "| parameters" in out and "1x1x32x64 -> num_classes=9" in out


def test_info_list_and_unknown_model(capsys):
    status, out = _run_cli(["info", "--list"], capsys)
    assert status == 0 and out.split()[0] == "mamba_unet" and "vmunet_test" in out
    from vmunet.cli import main

    assert main(["info", "nope"]) == 2  # one line, no traceback (tests/test_cli_errors.py has the rest)
    assert capsys.readouterr().err.startswith("vmunet info: error: unknown model 'nope'; available: mamba_unet, swin_umamba, swin_umamba_d, ultralight_vmunet, vmunet, vmunet_deep")
