"""User depth files, validation, MoGe backend (with a stand-in module) and scale alignment."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from worldstereo.depth import (
    MoGeDepthEstimator,
    UserDepth,
    align_depth_scale,
    estimate_depth,
    get_depth_estimator,
    load_depth,
    save_depth_png16,
    validate_depth,
)


def _depth(h=12, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 4.0 * torch.rand(h, w, generator=g)


def test_npy_and_npz_round_trip(tmp_path):
    d = _depth()
    np.save(tmp_path / "d.npy", d.numpy())
    assert torch.equal(load_depth(tmp_path / "d.npy"), d)
    assert torch.allclose(load_depth(tmp_path / "d.npy", scale=2.0), 2 * d)
    np.savez(tmp_path / "d.npz", depth=d.numpy(), other=np.zeros(3))
    assert torch.equal(load_depth(tmp_path / "d.npz"), d)
    np.save(tmp_path / "d1.npy", d.numpy()[None])  # (1,H,W) is squeezed
    assert load_depth(tmp_path / "d1.npy").shape == (12, 16)


def test_png16_round_trip(tmp_path):
    d = _depth()
    d[0, 0] = 0.0  # invalid pixel survives as 0
    save_depth_png16(tmp_path / "d.png", d)  # millimetres
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")
        raw = np.asarray(im)
    assert raw[3, 4] == round(float(d[3, 4]) * 1000)
    back = load_depth(tmp_path / "d.png")  # default scale 1/1000
    assert back[0, 0] == 0
    assert torch.allclose(back, d, atol=0.5e-3 + 1e-6)
    save_depth_png16(tmp_path / "e.png", d, scale=1 / 5000)  # TUM convention
    assert torch.allclose(load_depth(tmp_path / "e.png", scale=1 / 5000), d, atol=0.1e-3 + 1e-6)
    with pytest.raises(ValueError, match="16 bits"):
        save_depth_png16(tmp_path / "f.png", d * 100)


@pytest.mark.parametrize(
    "arr, pattern",
    [
        (np.zeros((4, 4)), "all depth values are zero"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.array([[1.0, -1.0], [1.0, 1.0]]), "negative"),
        (np.ones((2, 4, 4)), r"\(H,W\)"),
    ],
)
def test_validation_errors(arr, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_depth(arr)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_depth(tmp_path / "missing.npy")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported depth file"):
        load_depth(tmp_path / "d.txt")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid .npy array"):
        load_depth(tmp_path / "bad.npy")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel"):
        load_depth(tmp_path / "rgb.png")
    np.save(tmp_path / "d.npy", np.ones((4, 4)))
    with pytest.raises(ValueError, match="scale"):
        load_depth(tmp_path / "d.npy", scale=-1.0)


def test_user_depth_estimator(tmp_path):
    d = _depth()
    est = UserDepth(d)
    pred = est(torch.rand(3, 12, 16))
    assert pred.is_metric and torch.equal(pred.depth, d) and pred.valid_mask.all()
    with pytest.raises(ValueError, match=r"does not match the image size \(10, 16\)"):
        est(torch.rand(3, 10, 16))
    norm = UserDepth(d, normalize=True)(torch.rand(3, 12, 16))
    assert not norm.is_metric and abs(float(norm.depth.median()) - 1.0) < 1e-6
    np.save(tmp_path / "d.npy", d.numpy())
    assert isinstance(get_depth_estimator(tmp_path / "d.npy"), UserDepth)
    assert torch.equal(estimate_depth(torch.rand(3, 12, 16), str(tmp_path / "d.npy")).depth, d)
    assert torch.equal(estimate_depth(torch.rand(3, 12, 16), d).depth, d)
    with pytest.raises(TypeError, match="depth source"):
        get_depth_estimator(3.5)


def test_moge_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "moge", None)  # makes `import moge...` fail
    with pytest.raises(ImportError, match="not on PyPI"):
        MoGeDepthEstimator()
    with pytest.raises(ImportError, match="moge"):
        get_depth_estimator("moge")


def test_moge_backend_with_stand_in(monkeypatch):
    """The MoGe wrapper converts normalised intrinsics to pixels and masks invalid depth."""

    class FakeMoGe:
        loaded = None

        @classmethod
        def from_pretrained(cls, name):
            inst = cls()
            inst.loaded = name
            return inst

        def to(self, device):
            return self

        def eval(self):
            return self

        def infer(self, image, resolution_level=9, use_fp16=False):
            h, w = image.shape[-2:]
            depth = torch.full((h, w), 3.0)
            mask = torch.ones(h, w, dtype=torch.bool)
            mask[0, 0] = False
            intr = torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]])
            return {"depth": depth, "mask": mask, "intrinsics": intr, "points": None}

    for name in ("moge", "moge.model"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    v2 = types.ModuleType("moge.model.v2")
    v2.MoGeModel = FakeMoGe
    monkeypatch.setitem(sys.modules, "moge.model.v2", v2)
    est = get_depth_estimator("moge", device="cpu")
    assert isinstance(est, MoGeDepthEstimator) and est.version == 2 and est.is_metric
    pred = est(torch.rand(3, 20, 40))
    assert torch.allclose(pred.K, torch.tensor([[32.0, 0, 20], [0, 24.0, 10], [0, 0, 1]]))
    assert pred.depth[0, 0] == 0 and not pred.valid_mask[0, 0] and pred.depth[5, 5] == 3.0


def test_align_depth_scale():
    g = torch.Generator().manual_seed(0)
    ref = 1.0 + 5 * torch.rand(40, 50, generator=g)
    depth = ref / 2.5
    assert abs(align_depth_scale(depth, ref) - 2.5) < 1e-6
    assert abs(align_depth_scale(depth, ref, method="median") - 2.5) < 1e-6
    assert abs(align_depth_scale(depth, ref, method="least_squares") - 2.5) < 1e-6
    # 10 % gross outliers and invalid pixels: robust and median ignore them, plain least squares does not
    noisy = ref.clone()
    noisy[:4] *= 20.0
    noisy[-2:] = 0.0
    assert abs(align_depth_scale(depth, noisy) - 2.5) < 1e-6
    assert abs(align_depth_scale(depth, noisy, method="median") - 2.5) < 1e-6
    assert align_depth_scale(depth, noisy, method="least_squares") > 3.0
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[10:20, 10:20] = True
    assert abs(align_depth_scale(depth, noisy, mask, method="least_squares") - 2.5) < 1e-6
    with pytest.raises(ValueError, match="overlapping valid pixels"):
        align_depth_scale(depth, torch.zeros_like(ref))
    with pytest.raises(ValueError, match="shape"):
        align_depth_scale(depth, ref[:10])
    with pytest.raises(ValueError, match="method"):
        align_depth_scale(depth, ref, method="mean")
