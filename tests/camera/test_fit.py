"""Fitting a trajectory to a scene (CameraTrajectory.fit_to_scene / fit_trajectory) on scenes with exact
geometry: the procedural room and the reference city camera.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from worldstereo.camera import (
    CameraTrajectory,
    fit_trajectory,
    scene_median_depth,
    trajectory_subsample_linspace,
)
from worldstereo.geometry import lift_depth, render_coverage, render_point_cloud, warn_low_coverage
from worldstereo.scenes import make_room_scene

# Renders of at least ~250 pixels: there the default point footprint is one pixel wide and the
# lifting's edge filter keeps most of the room (it drops half of a 128-pixel view)
SIZE = 256
CITY = Path(__file__).resolve().parents[2] / ".." / "shared" / "examples" / "images" / "photorealistic-outdoor-city-062"


def _coverage(points, traj, point_radius=0.008):
    out = render_point_cloud(points, traj.w2c.float(), traj.K.float(), traj.height, traj.width,
                             point_radius=point_radius)
    cov = render_coverage(out.hole_mask)
    return [1.0] + cov[1:]  # frame 0 is the condition image itself in every render the library writes


@pytest.fixture(scope="module")
def room():
    """The interface document's trajectory at SIZE x SIZE and the room's first view lifted to points."""
    traj = CameraTrajectory.forward(distance=2.0, num_frames=16).at_size(SIZE, SIZE)
    image, depth = make_room_scene(seed=0).render(torch.eye(4), traj.K[0], SIZE, SIZE)
    points = lift_depth(depth, traj.K[0], torch.eye(4), image)
    return traj, depth, points


def test_interface_example_collapses_unfitted_and_keeps_40_percent_fitted(room, caplog):
    traj, depth, points = room
    median = scene_median_depth(points, traj.w2c[0], traj.K[0], SIZE, SIZE)
    assert median == pytest.approx(float(depth[depth > 0].median()), rel=0.02)
    unfitted = traj.in_scene_units(median)  # 2 median depths forward: through the far wall
    cov = _coverage(points, unfitted)
    assert min(cov) < 0.05
    with caplog.at_level(logging.WARNING):
        frame = warn_low_coverage(cov)
    assert frame is not None and f"frame {frame} covers" in caplog.text and "fit_to_scene" in caplog.text

    fitted = traj.fit_to_scene(points)
    assert fitted.units == "scene" and len(fitted) == 16
    fitted_cov = _coverage(points, fitted)
    assert min(fitted_cov) >= 0.4, fitted_cov
    # only the translation shrank: same rotations, same direction of motion, frame 0 untouched
    torch.testing.assert_close(fitted.w2c[:, :3, :3], unfitted.w2c[:, :3, :3])
    ratio = fitted.centers[-1, 2] / unfitted.centers[-1, 2]
    assert 0.05 < float(ratio) < 1.0
    torch.testing.assert_close(fitted.centers[:, 2], ratio * unfitted.centers[:, 2], atol=1e-4, rtol=0)
    torch.testing.assert_close(fitted.w2c[0], torch.eye(4))


def test_a_trajectory_that_already_fits_is_unchanged(room):
    traj, _, points = room
    short = traj[::5].in_scene_units(0.2)  # 0.4 units forward in a room about 4 units deep
    result = fit_trajectory(short, points)
    assert result.scale == 1.0 and result.reached and result.trajectory is short
    assert min(result.coverage) >= 0.5


def test_fit_with_explicit_intrinsics_and_size():
    radius, size = 0.008, SIZE
    traj = CameraTrajectory.forward(distance=2.0, num_frames=4).at_size(size, size)
    image, depth = make_room_scene(seed=0).render(torch.eye(4), traj.K[0], size, size)
    points = lift_depth(depth, traj.K[0], torch.eye(4), image)
    no_k = CameraTrajectory(traj.in_scene_units(4.0).w2c)
    fitted = no_k.fit_to_scene(points, traj.K[0], height=size, width=size, min_coverage=0.6, point_radius=radius)
    assert min(_coverage(points, fitted, radius)) >= 0.5
    assert min(_coverage(points, no_k.with_intrinsics(traj.K[0], height=size, width=size), radius)) < 0.3
    with pytest.raises(ValueError, match="K"):
        no_k.fit_to_scene(points)
    with pytest.raises(ValueError, match="min_coverage"):
        traj.fit_to_scene(points, min_coverage=0.0)
    with pytest.raises(ValueError, match="points"):
        traj.fit_to_scene(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="sees none"):
        traj.fit_to_scene(torch.tensor([[0.0, 0.0, -5.0]]))  # behind the camera


@pytest.mark.skipif(not (CITY / "camera.json").exists(), reason="shared examples not present")
def test_reference_city_orbit_is_made_usable_on_a_median_2_5_scene():
    # the reference camera.json orbits a point 14.8 units ahead (metric depth); a relative depth of
    # median 2.5 puts the scene far inside that orbit
    ref = CameraTrajectory.from_reference_json(CITY / "camera.json")
    h, w, radius = 192, 256, 0.008
    traj = ref[trajectory_subsample_linspace(len(ref), 11)].at_size(h, w)
    depth = torch.linspace(1.5, 3.5, h)[:, None].expand(h, w).contiguous()  # ground plane, median 2.5
    points = lift_depth(depth, traj.K[0], traj.w2c[0], torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)))
    before = _coverage(points, traj, radius)
    assert max(before[3:]) == 0.0  # nothing left from frame 3 of 11 on (frame 5 of 21 in the issue)
    result = fit_trajectory(traj, points, point_radius=radius)
    after = _coverage(points, result.trajectory, radius)
    assert result.reached and min(after) >= 0.4, after
    # fitting the motion scales the orbit's centre onto the scene: 14.8 -> about 2.5
    assert 0.1 < result.scale < 0.3
