"""generate_video / generate_multi_view / reconstruct_3d and the scene: presets scaled by the condition
view's median depth, per-frame render coverage in the record, the low-coverage warning, square pixels
at the generation size (issue 10)."""

from __future__ import annotations

import logging

import pytest
import torch

from worldstereo.camera import CameraTrajectory, intrinsics_from_fov
from worldstereo.geometry import lift_depth, render_coverage
from worldstereo.pipeline import SceneMemory, generate_multi_view, generate_video, reconstruct_3d
from worldstereo.scenes import make_room_scene
from worldstereo.testing import tiny_model

H, W = 64, 96
# footprint of about one pixel at this size (the default 0.008 is one pixel at ~250 pixels)
POINT_RADIUS = 0.025


@pytest.fixture(scope="module")
def model():
    m = tiny_model("worldstereo-camera")
    m.global_memory_config = {**m.global_memory_config, "point_radius": POINT_RADIUS}
    return m


@pytest.fixture(scope="module")
def room():
    """The room at the generation size: image and exact metric depth (median about 4 m)."""
    K = intrinsics_from_fov(H, W, 60.0)
    image, depth = make_room_scene(seed=0).render(torch.eye(4), K, H, W)
    return image, depth, K


def _generate(model, image, trajectory, size=(H, W), **kw):
    memory = kw.pop("memory", None) or SceneMemory()
    generate_video(model, image, trajectory, num_frames=len(trajectory), height=size[0], width=size[1],
                   num_inference_steps=1, seed=0, memory=memory, **kw)
    return memory.history[-1]


def test_preset_is_scaled_by_the_median_depth_of_every_source(model, room):
    image, depth, K = room
    median = float(depth.median())
    preset = CameraTrajectory.right(distance=0.3, num_frames=2)
    small = (32, 48)  # only the cameras matter here
    for source in (depth, depth * 10.0):  # metric depth in metres, the same scene in decimetres
        m = float(source.median())
        record = _generate(model, image, preset, small, depth_estimator=source)
        assert record.median_depth == pytest.approx(m, rel=1e-6)
        assert record.trajectory.units == "scene"
        torch.testing.assert_close(record.trajectory.centers[-1].double(),
                                   torch.tensor([0.3 * m, 0.0, 0.0], dtype=torch.float64), atol=1e-4 * m, rtol=0)
    # a given point cloud: its median depth seen from frame 0
    points = lift_depth(depth, K, torch.eye(4), image)
    record = _generate(model, image, preset, small, point_cloud=points, depth_estimator=depth)  # depth: updates
    # (every lifted point is in view 0, world = camera 0: the median of their z)
    assert record.median_depth == pytest.approx(float(points.xyz[:, 2].median()), rel=1e-6)
    # relative depth (median 1): the preset is used as it is
    record = _generate(model, image, preset, small, depth_estimator=depth / median)
    assert record.median_depth == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(record.trajectory.centers[-1], torch.tensor([0.3, 0.0, 0.0]), atol=1e-5, rtol=0)
    # a trajectory in scene units is not scaled
    scene = preset.in_scene_units(0.5)
    record = _generate(model, image, scene, small, depth_estimator=depth)
    torch.testing.assert_close(record.trajectory.centers[-1], torch.tensor([0.15, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_record_and_summary_hold_the_render_coverage(model, room):
    image, depth, _ = room
    record = _generate(model, image, CameraTrajectory.orbit(azimuth_deg=10, num_frames=4), depth_estimator=depth)
    assert len(record.coverage) == 4 and record.coverage[0] == 1.0
    assert record.coverage == render_coverage(record.render_mask)
    assert record.summary()["coverage"] == pytest.approx(record.coverage, abs=1e-6)
    assert min(record.coverage) > 0.5  # a small orbit about the room's median depth stays covered
    assert record.render_depth.shape == (4, 1, H, W)
    holes = record.render_mask > 0.5
    assert (record.render_depth[holes] == 0).all()
    later_depth, later_holes = record.render_depth[1:], holes[1:]
    assert (later_depth[~later_holes] > 0).all()


def test_collapsing_render_warns_and_the_fitted_trajectory_stays_covered(model, room, caplog):
    """The interface document's forward(distance=2.0) flies through the room's far wall."""
    image, depth, K = room
    trajectory = CameraTrajectory.forward(distance=2.0, num_frames=8)
    with caplog.at_level(logging.WARNING, logger="worldstereo"):
        record = _generate(model, image, trajectory, depth_estimator=depth)
    first = next(i for i, c in enumerate(record.coverage) if c < 0.3)
    assert f"frame {first} covers only" in caplog.text and "fit_to_scene" in caplog.text
    assert min(record.coverage) < 0.05

    points = lift_depth(depth, K, torch.eye(4), image)
    fitted = trajectory.fit_to_scene(points, height=H, width=W, point_radius=POINT_RADIUS)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worldstereo"):
        record = _generate(model, image, fitted, depth_estimator=depth)
    assert min(record.coverage) >= 0.4, record.coverage
    assert "covers only" not in caplog.text


def test_presets_keep_square_pixels_and_pixel_intrinsics_warn(model, room, caplog):
    image, depth, _ = room
    preset = CameraTrajectory.left(distance=0.2, num_frames=2)  # 512 x 512 by default
    with caplog.at_level(logging.WARNING, logger="worldstereo"):
        record = _generate(model, image, preset, depth_estimator=depth)
    torch.testing.assert_close(record.trajectory.K[0], intrinsics_from_fov(H, W, 60.0))
    assert "no longer square" not in caplog.text
    from_file = CameraTrajectory(preset.w2c, preset.K, 512, 512)  # a camera file's K: one 512 x 512 image
    with caplog.at_level(logging.WARNING, logger="worldstereo"):
        record = _generate(model, image, from_file, depth_estimator=depth)
    assert "no longer square" in caplog.text
    assert float(record.trajectory.K[0, 0, 0]) != pytest.approx(float(record.trajectory.K[0, 1, 1]))


def test_multi_view_takes_trajectories_of_any_size(model, room):
    image, depth, _ = room
    trajectories = [CameraTrajectory.left(distance=0.2, num_frames=3),  # 512 x 512
                    CameraTrajectory.right(distance=0.2, num_frames=3, height=480, width=768)]
    memory = SceneMemory()
    videos = generate_multi_view(model, image, trajectories, memory=memory, height=H, width=W,
                                 num_inference_steps=1, seed=0, depth_estimator=depth)
    assert [tuple(v.shape) for v in videos] == [(3, 3, H, W)] * 2
    for record in memory.history:
        assert (record.trajectory.height, record.trajectory.width) == (H, W)
        torch.testing.assert_close(record.trajectory.K[0], intrinsics_from_fov(H, W, 60.0))
    # both presets were scaled with the median depth of the first video
    assert memory.history[1].median_depth == pytest.approx(float(depth.median()), rel=1e-6)


def test_reconstruct_3d_uses_the_trajectory_in_scene_units(model, room):
    from worldstereo.depth import DepthPrediction

    def flat(image):  # a depth model: every image, generated frames included, at 4 units
        h, w = image.shape[-2:]
        return DepthPrediction(depth=torch.full((h, w), 4.0), valid_mask=torch.ones(h, w, dtype=torch.bool),
                               is_metric=True)

    image, _, _ = room
    preset = CameraTrajectory.right(distance=0.3, num_frames=3)
    _, rec = reconstruct_3d(model, image, preset, num_frames=3, height=H, width=W, num_inference_steps=1, seed=0,
                            depth_estimator=flat)
    cams = rec["cameras"]
    assert (cams.height, cams.width) == (H, W) and cams.units == "scene"
    torch.testing.assert_close(cams.centers[-1].double(), torch.tensor([1.2, 0.0, 0.0], dtype=torch.float64),
                               atol=1e-3, rtol=0)


def test_a_given_render_gets_its_coverage_measured(model, room, caplog):
    """Pre-rendered ControlNet inputs (render_video / render_mask) are measured like our own renders."""
    image, _, _ = room
    render = torch.rand(3, 3, H, W)
    holes = torch.zeros(3, 1, H, W)
    holes[1, :, : H // 4] = 1.0  # a quarter of frame 1 uncovered
    holes[2, :, : 3 * H // 4] = 1.0  # three quarters of frame 2
    with caplog.at_level(logging.WARNING, logger="worldstereo"):
        record = _generate(model, image, CameraTrajectory.right(distance=0.1, num_frames=3), render_video=render,
                           render_mask=holes)
    assert record.coverage == pytest.approx([1.0, 0.75, 0.25])
    assert record.summary()["coverage"] == pytest.approx([1.0, 0.75, 0.25])
    assert "given render: frame 2 covers only 25%" in caplog.text
    assert record.render_depth is None
