"""Trajectory units (median depths vs scene units), motion scaling and square pixels at other sizes."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from worldstereo.camera import CameraTrajectory, intrinsics_from_fov


def _orbit(**kw):
    return CameraTrajectory.orbit(azimuth_deg=40.0, num_frames=5, **kw)


def test_presets_are_in_median_depths_and_files_in_scene_units(tmp_path):
    assert CameraTrajectory.forward(num_frames=3).units == "median_depth"
    assert CameraTrajectory.eloop(num_frames=5).units == "median_depth"
    assert CameraTrajectory.look_at([[0, 0, 0], [1, 0, 0]], [0, 0, 5]).units == "scene"
    t = CameraTrajectory.forward(num_frames=3)
    t.save(tmp_path / "t.json")
    back = CameraTrajectory.load(tmp_path / "t.json")
    assert back.units == "median_depth" and back.fov_intrinsics and back.allclose(t)
    t.to_reference_json(tmp_path / "camera.json")
    ref = CameraTrajectory.from_reference_json(tmp_path / "camera.json")
    assert ref.units == "scene" and not ref.fov_intrinsics  # a camera file describes one image, scene units
    with pytest.raises(ValueError, match="units"):
        CameraTrajectory(torch.eye(4), units="metres")


def test_scaled_multiplies_the_motion_about_frame_0_and_keeps_rotations():
    t = _orbit()
    s = t.scaled(2.5)
    torch.testing.assert_close(s.centers.double(), 2.5 * t.centers.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.w2c[:, :3, :3], t.w2c[:, :3, :3])
    # a preset built at median depth 1 and scaled by m is the preset built for median depth m
    m = 3.7
    built = CameraTrajectory.orbit(azimuth_deg=40.0, num_frames=5, depth=m)
    assert t.in_scene_units(m).allclose(built, atol=1e-5)
    assert t.in_scene_units(m).units == "scene"
    spiral = CameraTrajectory.spiral(radius=0.3, num_frames=6, focus_depth=1.0, forward=0.2)
    assert spiral.in_scene_units(m).allclose(
        CameraTrajectory.spiral(radius=0.3 * m, num_frames=6, focus_depth=m, forward=0.2 * m), atol=1e-4)
    # scene-unit trajectories are left alone
    scene = CameraTrajectory(t.w2c, t.K, 512, 512)
    assert scene.in_scene_units(m) is scene
    with pytest.raises(ValueError, match="factor"):
        t.scaled(0.0)


def test_scaled_keeps_frame_0_when_it_is_not_the_identity():
    # the reference city camera.json starts 14.8 units behind the world origin
    w2c = torch.eye(4).repeat(3, 1, 1)
    w2c[:, 2, 3] = torch.tensor([14.8, 14.0, 13.0])
    w2c[1, 0, 3] = -2.0
    t = CameraTrajectory(w2c)
    s = t.scaled(0.5)
    torch.testing.assert_close(s.w2c[0], t.w2c[0])
    rel_t = t.w2c @ torch.linalg.inv(t.w2c[0])
    rel_s = s.w2c @ torch.linalg.inv(s.w2c[0])
    torch.testing.assert_close(rel_s[:, :3, 3], 0.5 * rel_t[:, :3, 3], atol=1e-5, rtol=0)


def test_preset_at_another_size_keeps_square_pixels_and_horizontal_fov():
    t = CameraTrajectory.forward(num_frames=3)  # 512 x 512, 60 deg
    g = t.at_size(480, 768)
    fx, fy = g.K[:, 0, 0], g.K[:, 1, 1]
    expected = 384.0 / math.tan(math.radians(30.0))
    torch.testing.assert_close(fx, torch.full_like(fx, expected))
    torch.testing.assert_close(fy, fx)
    torch.testing.assert_close(g.K[0], intrinsics_from_fov(480, 768, 60.0))
    # zoom presets keep the per-frame focal ratio
    z = CameraTrajectory.zoom_in(factor=2.0, num_frames=3).at_size(480, 768)
    assert float(z.K[-1, 0, 0] / z.K[0, 0, 0]) == pytest.approx(2.0)
    assert torch.allclose(z.K[:, 0, 0], z.K[:, 1, 1])


def test_pixel_intrinsics_rescaled_anisotropically_warn(caplog):
    K = intrinsics_from_fov(512, 512, 60.0)
    t = CameraTrajectory(torch.eye(4), K, 512, 512)  # a file's K: describes a 512 x 512 image
    with caplog.at_level(logging.WARNING):
        g = t.at_size(480, 768)
    assert "no longer square" in caplog.text
    assert float(g.K[0, 0, 0]) == pytest.approx(float(K[0, 0]) * 1.5)
    assert float(g.K[0, 1, 1]) == pytest.approx(float(K[1, 1]) * 480 / 512)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        t.at_size(256, 256)  # same aspect: no warning
    assert caplog.text == ""


def test_cat_brings_trajectories_to_the_first_size():
    # the docs/cameras.md example: an orbit at 480 x 768 joined with a 512 x 512 pan
    traj = CameraTrajectory.preset("orbit", azimuth_deg=45, num_frames=21, height=480, width=768)
    both = CameraTrajectory.cat([traj, CameraTrajectory.pan_left(num_frames=8)[1:]])
    assert len(both) == 28 and (both.height, both.width) == (480, 768)
    assert torch.allclose(both.K[:, 0, 0], both.K[:, 1, 1])  # square pixels throughout
    torch.testing.assert_close(both.K[-1], traj.K[0])


def test_principal_point_far_from_the_centre_warns(caplog):
    K = intrinsics_from_fov(96, 128, 60.0)
    K2 = K.clone()
    K2[:2] *= 2.0  # the K of a 2x larger image: principal point at the corner of the 96 x 128 one
    with caplog.at_level(logging.WARNING):
        CameraTrajectory(torch.eye(4), K, 96, 128)
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        CameraTrajectory(torch.eye(4), K2, 96, 128)
    assert "another image size" in caplog.text
    K3 = K.clone()
    K3[:2] *= 2.5  # principal point outside the image: an error
    with pytest.raises(ValueError, match="different image size"):
        CameraTrajectory(torch.eye(4), K3, 96, 128)
