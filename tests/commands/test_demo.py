"""`worldstereo demo` end to end: files decode, and the point-cloud render agrees with the exact scene."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldstereo.cli import main
from worldstereo.io.image import load_image
from worldstereo.io.video import read_video
from worldstereo.scenes import make_room_scene

H, W, F = 128, 192, 5


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(["-q", "--threads", "1", "demo", "--out", str(out), "--frames", str(F), "--height", str(H), "--width", str(W),
                 "--sheet-columns", "3", "--no-progress", "--preset-arg", "azimuth_deg=20",
                 "--point-radius", "0.02"])
    assert code == 0
    return out


def test_files_written(demo_dir):
    names = sorted(p.name for p in demo_dir.iterdir())
    assert names == sorted([".worldstereo-output.json", "camera.json", "contact_sheet.png", "depth.npy", "image.png",
                            "metrics.json", "points.ply", "render.mp4", "render_mask.mp4"])
    sheet = load_image(demo_dir / "contact_sheet.png")
    assert sheet.shape[1] > 3 * H and sheet.shape[2] > 3 * W


def test_videos_decode_and_follow_reference_layout(demo_dir):
    av = pytest.importorskip("av")
    with av.open(str(demo_dir / "render.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    video = read_video(demo_dir / "render.mp4")
    mask = read_video(demo_dir / "render_mask.mp4")
    assert video.shape == (F, 3, H, W) and mask.shape == (F, 3, H, W)
    image = load_image(demo_dir / "image.png")
    assert float((video[0] - image).abs().mean()) < 0.03  # frame 0 = condition image
    holes = mask[:, 0] > 0.5
    assert not holes[0].any()  # frame 0 has no holes
    assert holes[-1].float().mean() > 0.01  # the orbit disoccludes something
    assert holes[-1].float().mean() < 0.6
    # holes are grey in render.mp4 (reference background)
    assert abs(float(video[-1][:, holes[-1]].mean()) - 0.5) < 0.05


def test_camera_json_round_trip(demo_dir):
    from worldstereo.camera import CameraTrajectory

    traj = CameraTrajectory.from_reference_json(demo_dir / "camera.json")
    assert len(traj) == F and (traj.height, traj.width) == (H, W)
    assert torch.allclose(traj.w2c[0], torch.eye(4), atol=1e-6)
    doc = json.loads((demo_dir / "camera.json").read_text())
    assert np.asarray(doc["extrinsic"]).shape == (F, 4, 4) and np.asarray(doc["intrinsic"]).shape == (F, 3, 3)


def test_point_cloud_lies_on_exact_surfaces(demo_dir):
    """Every lifted point projects into view 0 at the exact scene depth of its pixel."""
    from worldstereo.camera import CameraTrajectory
    from worldstereo.geometry import PointCloud

    pc = PointCloud.load_ply(demo_dir / "points.ply")
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert len(pc) == metrics["num_points"] > 0.5 * H * W
    traj = CameraTrajectory.from_reference_json(demo_dir / "camera.json")
    K = traj.K[0].double()
    _, depth = make_room_scene(seed=0).render(traj.w2c[0], traj.K[0], H, W)
    cam = pc.xyz.double()  # world = camera 0 (identity pose)
    uv = (cam / cam[:, 2:3]) @ K.T
    u = uv[:, 0].floor().long().clamp(0, W - 1)
    v = uv[:, 1].floor().long().clamp(0, H - 1)
    rel = (cam[:, 2] - depth.double()[v, u]).abs() / depth.double()[v, u]
    assert float(rel.max()) < 1e-4
    assert np.allclose(np.load(demo_dir / "depth.npy"), depth.numpy(), rtol=1e-6)


def test_render_matches_exact_views_on_covered_pixels(demo_dir):
    """Independent check of the whole chain: re-render the scene at the written cameras."""
    from worldstereo.camera import CameraTrajectory

    traj = CameraTrajectory.from_reference_json(demo_dir / "camera.json")
    video = read_video(demo_dir / "render.mp4")
    mask = read_video(demo_dir / "render_mask.mp4")[:, 0] > 0.5
    scene = make_room_scene(seed=0)
    for i in (2, F - 1):
        exact, _ = scene.render(traj.w2c[i], traj.K[i], H, W, supersample=2)
        covered = ~mask[i]
        mse = float(((video[i] - exact) ** 2).mean(0)[covered].mean())
        psnr = 10 * np.log10(1 / mse)
        assert psnr > 18.0, (i, psnr)
        # a wrong pose (here: the condition pose) still "covers" pixels but with the wrong content
        wrong, _ = scene.render(traj.w2c[0], traj.K[i], H, W, supersample=2)
        assert float(((video[i] - wrong) ** 2).mean(0)[covered].mean()) > 2 * mse


def test_metrics(demo_dir):
    m = json.loads((demo_dir / "metrics.json").read_text())
    assert m["frames"] == F and len(m["coverage"]) == F and m["coverage"][0] == 1.0
    assert all(p is None or p > 18 for p in m["psnr_covered_vs_exact"].values())
