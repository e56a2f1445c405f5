"""The app's session actions, without a browser: scene, camera path, preview, generation, 3D, downloads."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import torch

from worldstereo.app import AppModels, AppSession, GenerationCancelled, ModelSpec
from worldstereo.app.session import EXAMPLES, preset_parameters
from worldstereo.camera import CameraTrajectory, interpolate_keyframes
from worldstereo.geometry.lifting import lift_depth
from worldstereo.io.image import resize_image

from .conftest import GEN_SIZE


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    """One model holder for the module: the tiny checkpoint is loaded once, by the first generation."""
    return AppModels(ModelSpec(path=str(tiny_checkpoint)))


@pytest.fixture
def session(models, room_files, tmp_path):
    s = AppSession(models, default_frames=5, workdir=tmp_path / "session")
    s.load_scene(room_files["image"], room_files["depth"])
    s.set_size(*GEN_SIZE)
    yield s
    s.close()


def test_scene_is_the_condition_view_lifted_at_the_generation_size(session, room_files):
    scene = session.scene
    assert not scene.panorama and scene.depth_source == "depth file" and scene.estimator is None
    assert scene.median_depth == pytest.approx(float(room_files["depth_map"].median()))
    # the cloud: the depth resized (nearest) to the generation size, lifted with the condition camera
    h, w = GEN_SIZE
    depth = resize_image(room_files["depth_map"][None], h, w, mode="nearest")[0]
    expected = lift_depth(depth, session.condition_K(), torch.eye(4, dtype=torch.float64),
                          resize_image(room_files["picture"], h, w).clamp(0, 1), valid_mask=depth > 0)
    points = session.memory_geometry().points
    assert len(points) == len(expected) and torch.allclose(points.xyz, expected.xyz, atol=1e-5)
    # a depth file of another size is refused, naming it; so is a scale without a depth file
    bad = session.workdir / "bad.npy"
    np.save(bad, np.ones((10, 10), np.float32))
    with pytest.raises(ValueError, match="depth file"):
        session.load_scene(room_files["image"], bad)
    with pytest.raises(ValueError, match="depth scale"):
        session.load_scene(room_files["image"], None, depth_scale=2.0)


def test_example_scene_needs_no_download(models, tmp_path):
    s = AppSession(models, workdir=tmp_path / "s")
    scene = s.load_example(next(iter(EXAMPLES)))
    assert scene.depth_source.startswith("exact") and s.path.fov_deg == 70.0
    assert (s.height, s.width) == (48, 64) or s.scale_map is None  # the reference scale map without a checkpoint
    assert len(s.memory_geometry().points) > 1000
    with pytest.raises(ValueError, match="example"):
        s.load_example("nope")


def test_preset_path_is_in_median_depths_and_fit_shrinks_it(session):
    median = session.scene.median_depth
    session.set_path(preset="forward", params={"distance": 0.5}, num_frames=5)
    traj = session.trajectory()
    assert len(traj) == 5 and (traj.height, traj.width) == GEN_SIZE
    assert float(traj.centers[-1, 2]) == pytest.approx(0.5 * median, rel=1e-5)  # half the median depth ahead
    # flying 3 median depths forward leaves the room: coverage collapses; the fit shrinks the motion
    session.set_path(params={"distance": 3.0})
    before = session.render_preview().coverage
    assert min(before) < 0.1
    # (at this small size a 0.008 NDC point footprint is under a pixel: even the condition pose covers ~50%)
    scale, coverage, reached = session.fit(0.25)
    assert reached and 0 < scale < 1
    after = session.render_preview().coverage
    assert min(after) >= 0.2  # the fit measures at a reduced size: within a few percent
    assert float(session.trajectory().centers[-1, 2]) == pytest.approx(3.0 * median * scale, rel=1e-5)
    session.set_path(params={"distance": 1.0})  # editing the path drops the fit
    assert session.fit_scale is None
    with pytest.raises(ValueError, match="no parameter"):
        session.set_path(params={"azimuth_deg": 3.0})
    with pytest.raises(ValueError, match="frames"):
        session.set_path(num_frames=session.max_frames + 1)


def test_keyframes_give_a_smooth_path_through_them(session):
    median = session.scene.median_depth
    eye = torch.tensor([[0.3, 0.0, 0.2], [0.6, -0.1, 0.5]], dtype=torch.float64) * median
    target = torch.tensor([0.0, 0.0, median], dtype=torch.float64)
    poses = CameraTrajectory.look_at(eye, target.expand(2, 3)).w2c.double()
    for p in poses:
        session.add_keyframe(p)
    session.set_path(num_frames=9)  # keyframes at frames 0, 4, 8
    traj = session.trajectory()
    assert session.path.mode == "keyframes" and len(traj) == 9
    assert torch.allclose(traj.w2c[0].double(), torch.eye(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(traj.w2c[4].double(), poses[0], atol=1e-5)
    assert torch.allclose(traj.w2c[8].double(), poses[1], atol=1e-5)
    keys = CameraTrajectory(torch.stack([torch.eye(4, dtype=torch.float64), *poses]), session.condition_K(),
                            *GEN_SIZE)
    assert torch.allclose(traj.w2c.double(), interpolate_keyframes(keys, 9).w2c.double(), atol=1e-6)
    assert session.remove_last_keyframe() == 1
    with pytest.raises(ValueError):
        session.add_keyframe(torch.ones(4, 4))  # not a rigid transform
    session.clear_keyframes()
    assert session.path.mode == "preset" and not session.keyframes


def test_export_writes_every_format_and_imports_read_them_back(session, models, room_files, tmp_path):
    session.set_path(preset="orbit", params={"azimuth_deg": 25.0, "elevation_deg": 5.0}, num_frames=6)
    traj = session.trajectory()
    files = session.export_trajectory()
    assert [f.name for f in files] == ["trajectory.json", "camera.json", "transforms.json", "realestate10k.txt",
                                       "trajectory.npz"]
    other = AppSession(models, workdir=tmp_path / "other")
    other.load_scene(room_files["image"], room_files["depth"])
    other.set_size(*GEN_SIZE)
    for f in files:
        imported = other.import_trajectory(f)
        assert other.path.mode == "file" and len(imported) == 6, f.name
        got = other.trajectory()
        assert torch.allclose(got.w2c.double(), traj.w2c.double(), atol=1e-4), f.name
        assert torch.allclose(got.K.double(), traj.K.double(), rtol=1e-3, atol=1e-2), f.name
    other.set_path(num_frames=11)  # a file path is resampled to the frame count
    assert len(other.trajectory()) == 11
    other.close()


def test_preview_is_the_render_generation_is_conditioned_on(session):
    session.set_path(preset="orbit", params={"azimuth_deg": 10.0}, num_frames=5)
    preview = session.render_preview()
    assert preview.render_path.is_file() and preview.mask_path.is_file()
    assert preview.coverage[0] == 1.0 and len(preview.coverage) == 5
    result = session.generate(steps=1, seed=3)
    record = result.records[0]
    # exactly what generate_video fed the ControlNet: same cloud, renderer and settings
    assert torch.equal(record.render_mask.float(), preview.hole_mask)
    assert torch.equal(record.render_video.float(), preview.render)
    assert result.videos[0].shape == (5, 3, *GEN_SIZE)
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["num_videos"] == 1 and summary["seed"] == 3 and summary["steps"] == 1
    for name in ("video.mp4", "render.mp4", "render_mask.mp4", "camera.json", "depths.npz", "points.ply",
                 "image.png"):
        assert (result.folder / name).is_file(), name
    assert session.models.memory_tier == "resident"  # on the CPU: everything resident


def test_set_of_paths_generates_with_shared_memory_and_reconstructs(session):
    session.set_path(preset="pan_left", params={"angle_deg": 15.0}, num_frames=4)
    session.add_view()
    session.set_path(preset="pan_right", params={"angle_deg": 15.0})
    session.add_view()
    session.set_path(num_frames=5)
    with pytest.raises(ValueError, match="same frame count"):
        session.add_view()
    result = session.generate(steps=1)
    assert len(result.videos) == 2 and len(result.records) == 2 and result.memory.history == result.records
    assert {p.name for p in result.video_paths} == {"video_00.mp4", "video_01.mp4"}
    rec = session.reconstruct("point_cloud")
    assert len(rec.reconstruction.cameras) == 8  # both videos in one world frame
    assert rec.files["ply"].is_file() and (rec.folder / "colmap" / "cameras.txt").is_file()
    archive = session.download_zip()
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        frames = json.loads(zf.read("worldstereo-result/reconstruction/nerfstudio/transforms.json"))["frames"]
    assert len(frames) == 8
    for name in ("generation/video_00.mp4", "generation/video_01.mp4", "reconstruction/points.ply",
                 "reconstruction/viewer.html", "reconstruction/metrics.json", "trajectory/trajectory.json"):
        assert f"worldstereo-result/{name}" in names, name


def test_cancel_stops_after_the_current_step(session):
    session.set_path(preset="orbit", params={"azimuth_deg": 5.0}, num_frames=4)
    steps = []

    def progress(fraction, desc):
        steps.append(desc)
        if "step 1/" in desc:
            session.request_cancel()

    with pytest.raises(GenerationCancelled, match="step 1/"):
        session.generate(steps=3, progress=progress)
    assert session.generation is None
    assert not session.models.gpu_lock.locked()  # the next generation may run
    assert not any("step 2/" in d for d in steps)


def test_panorama_is_lifted_as_a_sphere_and_rotations_keep_it_covered(models, tmp_path):
    from worldstereo.io.image import save_image

    h, w = 768, 1536  # 0.23 degrees per point: about 4 points per pixel of a 128-pixel-wide 60-degree view
    rows = torch.linspace(0, 1, h)[:, None].expand(h, w)
    pano = torch.stack([rows, 1 - rows, torch.full((h, w), 0.5)])
    save_image(tmp_path / "pano.png", pano)
    np.save(tmp_path / "pano_depth.npy", np.full((h, w), 2.0, np.float32))  # a sphere of radius 2
    s = AppSession(models, workdir=tmp_path / "s")
    s.load_scene(tmp_path / "pano.png", tmp_path / "pano_depth.npy")
    s.set_size(96, 128)
    assert s.scene.panorama
    radius = s.memory_geometry().points.xyz.double().norm(dim=1)
    assert torch.allclose(radius, torch.full_like(radius, 2.0), atol=1e-4)
    s.set_path(preset="pan_left", params={"angle_deg": 90.0}, num_frames=4)
    coverage = s.render_preview().coverage
    # inside a sphere every direction is covered alike (up to the point footprint: 0.4 px here)
    assert min(coverage[1:]) > 0.3 and max(coverage[1:]) - min(coverage[1:]) < 0.05
    s.close()


def test_errors_name_what_is_wrong(models, tmp_path, room_files):
    s = AppSession(workdir=tmp_path / "s")  # no checkpoint
    with pytest.raises(ValueError, match="scene"):
        s.trajectory()
    s.load_scene(room_files["image"], room_files["depth"])
    with pytest.raises(ValueError, match="height"):
        s.set_size(50, 64)
    with pytest.raises(ValueError, match="generate a video first"):
        s.reconstruct()
    with pytest.raises(RuntimeError, match="--model"):
        s.generate()
    with pytest.raises(ValueError, match="field of view"):
        s.set_path(fov_deg=0.0)
    with pytest.raises(ValueError, match="import a file"):
        s.set_path(mode="file")
    with pytest.raises(ValueError, match="preset"):
        preset_parameters("nope")
    folder = s.workdir
    s.close()
    assert not folder.exists()


def test_offline_without_depth_file_says_how_to_go_on(tmp_path, room_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = AppSession(AppModels(ModelSpec(depth_model="depth-anything/not-in-any-cache")), workdir=tmp_path / "s")
    with pytest.raises(OSError, match="depth map"):
        s.load_scene(room_files["image"])
    assert s.scene is None
    s.close()
