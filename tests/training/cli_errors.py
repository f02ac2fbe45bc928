"""Shared by the training tests that check a refused `vmunet` command's one error line."""

from __future__ import annotations

from vmunet.cli import main


def one_error_line(argv: list[str], capfd) -> str:
    """Run ``vmunet argv``; it must exit 2 with no traceback and exactly one ``error:`` line, returned."""
    status = main(argv)
    err = capfd.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]
