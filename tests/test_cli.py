"""The `worldstereo` entry point: help, sub-command registry, exit codes for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worldstereo.cli import COMMAND_MODULES, build_parser, main


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in out  # module multi_view -> command multi-view
    assert {"render", "demo"} <= set(COMMAND_MODULES)


@pytest.mark.parametrize("command", ["render", "demo"])
def test_subcommand_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: worldstereo {command}" in out
    assert "--out" in out and "--frames" in out


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys, tmp_path):
    assert main(["render", "img.png", "--out", str(tmp_path)]) == 2  # --trajectory missing
    assert "--trajectory" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--frames", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_bad_preset_exit_2_with_message(tmp_path, capsys):
    img = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 20, 30)).save(img)
    out = tmp_path / "out"
    code = main(["render", str(img), "--trajectory", "sideways_wobble", "--out", str(out), "--depth-model", "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--trajectory" in err and "sideways_wobble" in err and "orbit" in err
    assert not out.exists()  # failed before any work or output


def test_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["render", str(tmp_path / "missing.png"), "--trajectory", "orbit", "--out", str(tmp_path)]) == 2
    assert "IMAGE" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--height", "100"]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--trajectory", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--preset-arg", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--preset-arg", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_console_script_module_runs():
    """`python -m worldstereo.cli --help` works in a fresh interpreter (entry point importable)."""
    res = subprocess.run([sys.executable, "-m", "worldstereo.cli", "render", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "--trajectory" in res.stdout


def test_parser_builds_once_per_call():
    p1, p2 = build_parser(), build_parser()
    assert p1 is not p2


def test_threads_option_is_restored(tmp_path):
    import torch

    before = torch.get_num_threads()
    assert main(["--threads", "1", "demo", "--out", str(tmp_path), "--height", "100"]) == 2
    assert torch.get_num_threads() == before
    assert main(["--threads", "0", "demo", "--out", str(tmp_path)]) == 2
