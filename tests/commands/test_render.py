"""`worldstereo render`: user depth, trajectory files (reference camera.json), depth models, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldstereo.cli import main
from worldstereo.io.image import save_image
from worldstereo.io.video import read_video
from worldstereo.scenes import make_room_scene

H, W = 96, 128


@pytest.fixture(scope="module")
def scene_inputs(tmp_path_factory):
    """image.png + exact depth.npy of the procedural room at 2x the working size (192x256)."""
    d = tmp_path_factory.mktemp("inputs")
    K = torch.tensor([[140.0, 0, 128], [0, 140.0, 96], [0, 0, 1]])
    image, depth = make_room_scene(seed=2).render(torch.eye(4), K, 2 * H, 2 * W)
    save_image(d / "image.png", image)
    np.save(d / "depth.npy", depth.numpy())
    return d, image, depth


def _run(*args: str) -> int:
    return main(["-q", "--threads", "1", "render", *args, "--no-progress"])


def test_render_with_user_depth_and_preset(scene_inputs, tmp_path):
    from worldstereo.camera import CameraTrajectory, intrinsics_from_fov

    src, image, depth = scene_inputs
    out = tmp_path / "out"
    code = _run(str(src / "image.png"), "--depth", str(src / "depth.npy"), "--trajectory", "right",
                "--preset-arg", "distance=0.3", "--frames", "4", "--height", str(H), "--width", str(W),
                "--fov", "70", "--out", str(out))
    assert code == 0
    traj = CameraTrajectory.from_reference_json(out / "camera.json")
    assert len(traj) == 4 and (traj.height, traj.width) == (H, W)
    assert torch.allclose(traj.K[0], intrinsics_from_fov(H, W, 70.0).to(traj.K.dtype), atol=1e-4)
    # user depth (192x256, the image's size) resized with nearest to the working size
    written = np.load(out / "depth.npy")
    # preset distances are in median depths of the condition view (torch's lower median)
    median = float(torch.from_numpy(written)[torch.from_numpy(written) > 0].median())
    assert torch.allclose(traj.centers[-1], torch.tensor([0.3 * median, 0.0, 0.0]), atol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["median_depth"] == pytest.approx(median) and len(summary["coverage"]) == 4
    assert written.shape == (H, W)
    assert set(np.unique(written)).issubset(set(np.unique(depth.numpy())))
    video = read_video(out / "render.mp4")
    mask = read_video(out / "render_mask.mp4")
    assert video.shape == (4, 3, H, W) and mask.shape == (4, 3, H, W)
    # moving right uncovers pixels at the left border of objects, never at frame 0
    assert (mask[0, 0] > 0.5).sum() == 0 and (mask[-1, 0] > 0.5).float().mean() > 0.005


def test_reference_camera_json(examples_dir, tmp_path):
    """A reference camera.json (81 poses, K in pixels of image.png) is subsampled and rescaled as the reference."""
    from PIL import Image

    scene_dir = examples_dir / "images" / "photorealistic-indoor-dining_spaces-030"
    if not scene_dir.is_dir():
        pytest.skip("example scene missing")
    with Image.open(scene_dir / "image.png") as im:
        w0, h0 = im.size
    np.save(tmp_path / "depth.npy", np.full((h0, w0), 2.0, np.float32))
    out = tmp_path / "out"
    code = _run(str(scene_dir / "image.png"), "--depth", str(tmp_path / "depth.npy"), "--trajectory",
                str(scene_dir / "camera.json"), "--frames", "5", "--height", "64", "--width", "96",
                "--out", str(out))
    assert code == 0
    ref = json.loads((scene_dir / "camera.json").read_text())
    ext = np.asarray(ref["extrinsic"], dtype=np.float64)
    intr = np.asarray(ref["intrinsic"], dtype=np.float64)
    idx = np.linspace(0, len(ext) - 1, 5, dtype=int)
    got = json.loads((out / "camera.json").read_text())
    assert np.allclose(np.asarray(got["extrinsic"]), ext[idx], atol=1e-5)
    expected_K = intr[idx].copy()
    expected_K[:, 0] *= 96 / w0
    expected_K[:, 1] *= 64 / h0
    assert np.allclose(np.asarray(got["intrinsic"]), expected_K, rtol=1e-5, atol=1e-4)
    assert (got["height"], got["width"]) == (64, 96)
    assert read_video(out / "render.mp4").shape == (5, 3, 64, 96)


def test_render_with_tiny_depth_model(scene_inputs, tmp_path):
    pytest.importorskip("transformers")
    from tests.depth.test_transformers_backend import _build_tiny_depth_anything

    model_dir = tmp_path / "tiny_da"
    _build_tiny_depth_anything(model_dir)
    src, _, _ = scene_inputs
    out = tmp_path / "out"
    code = _run(str(src / "image.png"), "--depth-model", str(model_dir), "--device", "cpu", "--trajectory", "orbit",
                "--frames", "3", "--height", "64", "--width", "96", "--out", str(out))
    assert code == 0
    depth = np.load(out / "depth.npy")
    assert depth.shape == (64, 96)
    assert abs(float(np.median(depth[depth > 0])) - 1.0) < 1e-4  # relative depth: median 1


def test_render_input_errors(scene_inputs, tmp_path, capsys):
    src, _, _ = scene_inputs
    img = str(src / "image.png")
    out = str(tmp_path / "o")
    np.save(tmp_path / "small.npy", np.ones((10, 10), np.float32))
    assert _run(img, "--depth", str(tmp_path / "small.npy"), "--trajectory", "orbit", "--height", "64",
                "--width", "96", "--out", out) == 2
    assert "--depth" in capsys.readouterr().err
    assert _run(img, "--depth-scale", "2", "--depth-model", "x", "--trajectory", "orbit", "--out", out) == 2
    assert "--depth-scale" in capsys.readouterr().err
    assert _run(img, "--depth", str(src / "depth.npy"), "--trajectory", "orbit", "--height", "64", "--out", out) == 2
    assert "--height/--width" in capsys.readouterr().err
    (tmp_path / "weird.json").write_text(json.dumps({"poses": []}))
    assert _run(img, "--depth", str(src / "depth.npy"), "--trajectory", str(tmp_path / "weird.json"),
                "--out", out) == 2
    assert "not a known trajectory JSON" in capsys.readouterr().err
    assert _run(img, "--depth", str(tmp_path / "missing.npy"), "--trajectory", "orbit", "--out", out) == 2
    assert "does not exist" in capsys.readouterr().err


def test_render_warns_on_collapse_and_fit_trajectory_keeps_coverage(scene_inputs, tmp_path, capsys):
    """`forward` by 2 median depths leaves the room: a warning names the first uncovered frame;
    --fit-trajectory shortens the motion so that every frame stays covered (summary.json)."""
    src, _, _ = scene_inputs
    common = [str(src / "image.png"), "--depth", str(src / "depth.npy"), "--trajectory", "forward",
              "--frames", "6", "--height", str(2 * H), "--width", str(2 * W), "--point-radius", "0.011"]
    assert main(["--threads", "1", "render", *common, "--no-progress", "--out", str(tmp_path / "raw")]) == 0
    raw = json.loads((tmp_path / "raw" / "summary.json").read_text())
    first = next(i for i, c in enumerate(raw["coverage"]) if c < 0.3)
    assert f"frame {first} covers only" in capsys.readouterr().err
    assert main(["--threads", "1", "render", *common, "--no-progress", "--fit-trajectory",
                 "--out", str(tmp_path / "fit")]) == 0
    fit = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert 0 < fit["fit_scale"] < 1 and min(fit["coverage"]) >= 0.45
    assert "covers only" not in capsys.readouterr().err
    with np.load(tmp_path / "fit" / "depths.npz") as z:
        assert z["depth"].shape == (6, 2 * H, 2 * W)
