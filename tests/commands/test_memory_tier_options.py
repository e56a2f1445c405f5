"""``--memory-tier`` / ``--vram`` of ``worldstereo generate`` and ``multi-view`` (tiny model, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldstereo.cli import main
from worldstereo.io.image import save_image


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from worldstereo.testing import save_tiny_model

    d = tmp_path_factory.mktemp("tier_inputs")
    model = save_tiny_model(d / "model", "worldstereo-memory")
    g = torch.Generator().manual_seed(0)
    save_image(d / "image.png", torch.rand(3, 64, 64, generator=g))
    np.save(d / "depth.npy", np.full((64, 64), 2.0, dtype=np.float32))
    return {"model": model, "image": d / "image.png", "depth": d / "depth.npy"}


def _args(inputs, out, *extra: str) -> list[str]:
    return ["-q", "--threads", "1", "generate", str(inputs["image"]), "--model", str(inputs["model"]),
            "--trajectory", "forward", "--frames", "4", "--height", "32", "--width", "32", "--steps", "1",
            "--depth", str(inputs["depth"]), "--no-progress", "--device", "cpu", "--out", str(out), *extra]


def test_bad_tier_options_fail_before_loading(inputs, tmp_path, capsys):
    assert main(_args(inputs, tmp_path / "a", "--memory-tier", "huge")) == 2
    assert "--memory-tier: expected one of" in capsys.readouterr().err
    assert main(_args(inputs, tmp_path / "b", "--memory-tier", "group_offload")) == 2
    assert "needs an accelerator" in capsys.readouterr().err
    assert main(_args(inputs, tmp_path / "c", "--vram", "24")) == 2
    assert "--vram" in capsys.readouterr().err
    assert main(_args(inputs, tmp_path / "d", "--vram", "24", "--memory-tier", "resident")) == 2
    assert "not allowed with argument --vram" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() and any((tmp_path / n).iterdir()) for n in "abc")


@pytest.mark.parametrize("command", ["generate", "multi-view"])
def test_fp8_tier_generates_and_is_recorded(inputs, tmp_path, command):
    args = _args(inputs, tmp_path / "out", "--memory-tier", "fp8")
    args[args.index("generate")] = command
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["memory_tier"] == "fp8"
    assert any(p.suffix == ".mp4" for p in (tmp_path / "out").iterdir())
