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
    assert names == sorted([".worldstereo-output.json", "camera.json", "contact_sheet.png", "depth.npy", "depths.npz",
                            "image.png", "metrics.json", "points.ply", "render.mp4", "render_mask.mp4",
                            "summary.json"])
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


def test_depths_npz_is_the_exact_depth_of_every_render_frame(demo_dir):
    """depths.npz holds each frame's rendered z-depth: the exact scene depth wherever it is not a hole."""
    from worldstereo.camera import CameraTrajectory

    with np.load(demo_dir / "depths.npz") as z:
        depth, holes = z["depth"], z["hole_mask"]
    assert depth.shape == (F, H, W) and depth.dtype == np.float32 and holes.dtype == bool
    mask = read_video(demo_dir / "render_mask.mp4")[:, 0].numpy() > 0.5
    assert (holes == mask).mean() > 0.999 and not holes[0].any()  # the mask of render_mask.mp4
    assert (depth[holes] == 0).all()
    traj = CameraTrajectory.from_reference_json(demo_dir / "camera.json")
    scene = make_room_scene(seed=0)
    for i in (0, F - 1):
        _, exact = scene.render(traj.w2c[i], traj.K[i], H, W)
        valid = depth[i] > 0
        assert valid.mean() > 0.5
        rel = np.abs(depth[i][valid] - exact.numpy()[valid]) / exact.numpy()[valid]
        assert np.median(rel) < 0.01, (i, np.median(rel))  # splats blend neighbouring points


def test_summary_has_the_coverage(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert summary["coverage"] == pytest.approx(metrics["coverage"], abs=1e-6)
    assert summary["num_frames"] == F and summary["fit_scale"] == 1.0
    mask = read_video(demo_dir / "render_mask.mp4")[:, 0] > 0.5
    assert summary["coverage"][-1] == pytest.approx(1.0 - float(mask[-1].float().mean()), abs=0.01)


def test_reconstruct_reads_the_demo_folder_offline(demo_dir, tmp_path, monkeypatch):
    """`worldstereo demo --out d && worldstereo reconstruct d --out r` with no network: the folder's
    render, cameras and depths.npz are enough, and the points land on the exact room surfaces."""
    import socket

    from worldstereo.camera import CameraTrajectory
    from worldstereo.geometry import PointCloud

    def no_network(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "recon"
    assert main(["-q", "--threads", "1", "reconstruct", str(demo_dir), "--out", str(out), "--formats",
                 "ply,viewer"]) == 0
    pc = PointCloud.load_ply(out / "points.ply")
    assert len(pc) > 1000
    traj = CameraTrajectory.from_reference_json(demo_dir / "camera.json")
    _, depth = make_room_scene(seed=0).render(traj.w2c[0], traj.K[0], H, W)
    cam = pc.xyz.double()  # world = camera 0
    front = cam[:, 2] > 0
    uv = (cam[front] / cam[front, 2:3]) @ traj.K[0].double().T
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    u, v = uv[inside, 0].long(), uv[inside, 1].long()
    rel = (cam[front][inside, 2] - depth.double()[v, u]).abs() / depth.double()[v, u]
    assert float(inside.float().mean()) > 0.5 and float(rel.median()) < 0.02
