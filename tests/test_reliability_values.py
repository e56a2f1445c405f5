"""Non-finite, huge and silently-changed values: refused or handled as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldstereo.camera import CameraTrajectory
from worldstereo.geometry import PointCloud
from worldstereo.geometry.render import render_point_cloud, render_point_cloud_equirect

K = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("radius", [0.0, 0.05])
def test_renderer_survives_projections_that_overflow(radius):
    """Finite points near the float32 limit project to inf - inf = NaN pixel positions; they must leave
    holes (documented), not crash the int64 index arithmetic, and not disturb the other points."""
    near = [0.0, 0.0, 2.0]
    for huge in ([3e38, -3e38, 3e38], [-3e38, 3e38, 3e38], [1e36, 0.0, 1e30], [1e20, 1e20, 1.0]):
        cloud = PointCloud(torch.tensor([huge, near]), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
        ref = render_point_cloud(PointCloud(torch.tensor([near]), torch.tensor([[0, 1.0, 0]])), torch.eye(4), K,
                                 48, 64, point_radius=radius)
        out = render_point_cloud(cloud, torch.eye(4), K, 48, 64, point_radius=radius)
        assert torch.isfinite(out.image).all() and torch.isfinite(out.depth).all()
        torch.testing.assert_close(out.image, ref.image)
        torch.testing.assert_close(out.hole_mask, ref.hole_mask)
        pano = render_point_cloud_equirect(cloud, torch.eye(4), 32, 64, point_radius=radius)
        assert torch.isfinite(pano.image).all()


def test_reconstruct_validates_options_before_work(monkeypatch):
    import worldstereo.reconstruction.api as api
    from worldstereo.reconstruction import reconstruct

    monkeypatch.setattr(api, "fuse_depth_maps", lambda *a, **k: pytest.fail("fusion started"))
    traj = CameraTrajectory.preset("forward", num_frames=2, height=8, width=8)
    frames, depth = torch.rand(2, 3, 8, 8), torch.ones(2, 8, 8)
    for kw, match in ((dict(outlier_std_ratio=-1.0), "outlier_std_ratio"),
                      (dict(outlier_std_ratio=math.nan), "outlier_std_ratio"),
                      (dict(outlier_std_ratio=0), "outlier_std_ratio"),
                      (dict(voxel_size=math.inf), "voxel_size"), (dict(voxel_size=True), "voxel_size"),
                      (dict(mesh_voxel_size=-1), "mesh_voxel_size"), (dict(field_iterations=-3), "field_iterations"),
                      (dict(field_iterations=2.5), "field_iterations"), (dict(align_depth="yes"), "align_depth"),
                      (dict(field_kwargs=[1]), "field_kwargs"),
                      (dict(reference_points=torch.tensor([[math.nan, 0.0, 0.0]])), "reference_points")):
        with pytest.raises((ValueError, TypeError), match=match):
            reconstruct(frames, traj, "point_cloud", depth, progress=False, **kw)


def test_reconstruct_3d_refuses_a_fixed_depth_map_without_a_depth_model():
    """The functional bug: a fixed depth map describes the condition view only; reconstruct_3d used
    it for every generated frame. Now it says so before generating anything."""
    from worldstereo.pipeline import reconstruct_3d
    from worldstereo.testing import tiny_model

    model = tiny_model("worldstereo-camera")
    assert getattr(model, "depth_estimator", None) is None
    calls = []
    handle = model.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    traj = CameraTrajectory.preset("forward", num_frames=4, height=32, width=32, distance=0.2)
    try:
        for fixed in (torch.full((32, 32), 2.0), np.full((32, 32), 2.0, np.float32)):
            with pytest.raises(ValueError, match="fixed depth map only describes the condition image"):
                reconstruct_3d(model, torch.rand(3, 32, 32), traj, num_frames=4, height=32, width=32,
                               num_inference_steps=1, seed=0, depth_estimator=fixed)
    finally:
        handle.remove()
    assert calls == []


def test_reconstruct_3d_uses_the_models_estimator_for_generated_frames(caplog, monkeypatch):
    import worldstereo.pipeline as pipeline
    from worldstereo.depth import DepthPrediction
    from worldstereo.pipeline import reconstruct_3d
    from worldstereo.testing import tiny_model

    model = tiny_model("worldstereo-camera")
    seen = []

    def model_estimator(image):
        seen.append(tuple(image.shape))
        h, w = image.shape[-2:]
        return DepthPrediction(depth=torch.full((h, w), 3.0), valid_mask=torch.ones(h, w, dtype=torch.bool),
                               is_metric=False)

    model.depth_estimator = model_estimator
    used = []
    original = pipeline.reconstruct
    monkeypatch.setattr(pipeline, "reconstruct",
                        lambda frames, traj, method, depth, **kw: used.append(depth) or original(frames, traj, method,
                                                                                                 depth, **kw))
    traj = CameraTrajectory.preset("forward", num_frames=4, height=32, width=32, distance=0.2)
    video, rec = reconstruct_3d(model, torch.rand(3, 32, 32), traj, num_frames=4, height=32, width=32,
                                num_inference_steps=1, seed=0, depth_estimator=torch.full((32, 32), 2.0))
    assert "condition image only" in caplog.text
    assert used == [model_estimator]  # the generated frames' depth comes from the model's estimator
    assert len(seen) >= 4 and rec["points"].shape[0] > 0


def test_generate_video_save_path_checked_before_work(tmp_path):
    from worldstereo.pipeline import generate_video
    from worldstereo.testing import tiny_model

    model = tiny_model("worldstereo-camera")
    traj = CameraTrajectory.preset("forward", num_frames=4, height=32, width=32, distance=0.2)
    folder = tmp_path / "video.mp4"
    folder.mkdir()
    for path, match in ((folder, "is a folder"), (tmp_path / "v.avi", r"\.mp4"), (tmp_path / "no" / "v.mp4", "exist")):
        with pytest.raises(ValueError, match=match):
            generate_video(model, torch.rand(3, 32, 32), traj, num_frames=4, height=32, width=32,
                           num_inference_steps=1, output_format="video", save_path=str(path))
