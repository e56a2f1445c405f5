"""Smooth keyframe paths: Catmull-Rom splines on centres, quaternions and intrinsics."""

import math

import pytest
import torch

from worldstereo.camera import CameraTrajectory, catmull_rom, interpolate_keyframes
from worldstereo.camera.rotations import rotation_y


def _keyframes(centers, yaws_deg, fov=60.0):
    """Cameras at ``centers`` (world, OpenCV) turned by ``yaws_deg`` about the world y axis."""
    n = len(centers)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = rotation_y(torch.tensor([math.radians(a) for a in yaws_deg], dtype=torch.float64))
    c2w[:, :3, 3] = torch.tensor(centers, dtype=torch.float64)
    return CameraTrajectory.from_poses(c2w, convention="c2w_opencv", height=48, width=64, fov_deg=fov)


def test_catmull_rom_hits_control_points_and_reproduces_a_straight_uniform_line():
    points = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0], [4.0, 4.0]], dtype=torch.float64)
    t = torch.arange(4, dtype=torch.float64)
    assert torch.equal(catmull_rom(points, t), points)
    # equally spaced collinear points: the inner segments are traversed at constant speed (linear)
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    s = torch.linspace(1.0, 2.0, 11, dtype=torch.float64)
    assert torch.allclose(catmull_rom(line, s)[:, 0], s, atol=1e-12)
    # end segments ease in: half the chord as tangent -> position 0 + 0.5*s + ... (Hermite by hand)
    s0 = torch.tensor([0.5], dtype=torch.float64)
    # p1=0, p2=1, m1=(1-0)/2=0.5, m2=(2-0)/2=1 at s=0.5
    expected = (2 * .125 - 3 * .25 + 1) * 0 + (.125 - 2 * .25 + .5) * 0.5 + (-2 * .125 + 3 * .25) * 1 + (.125 - .25) * 1
    assert float(catmull_rom(line, s0)[0, 0]) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="points"):
        catmull_rom(torch.zeros(0, 3), s0)


def test_path_passes_through_every_keyframe_exactly():
    keys = _keyframes([[0, 0, 0], [0.5, 0, 0.2], [0.8, -0.1, 0.6], [0.6, 0, 1.0]], [0, 15, 40, 70])
    path = interpolate_keyframes(keys, 13)  # (13 - 1) / 3 = 4 frames per segment: frames 0, 4, 8, 12 are keyframes
    assert len(path) == 13 and path.height == 48 and path.fov_intrinsics
    for k, i in enumerate((0, 4, 8, 12)):
        assert torch.allclose(path.w2c[i].double(), keys.w2c[k].double(), atol=1e-6)


def test_path_is_c1_smooth_at_keyframes_unlike_the_linear_resample():
    keys = _keyframes([[0, 0, 0], [1.0, 0, 0], [1.0, 0, 1.0]], [0, 45, 90])  # a right angle in the path
    n = 401  # keyframe 1 is frame 200
    smooth = interpolate_keyframes(keys, n).centers.double()
    linear = keys.resample(n).centers.double()
    h = 1.0 / ((n - 1) / 2)  # parameter step

    def kink(c):  # velocity jump across frame 200
        before, after = (c[200] - c[199]) / h, (c[201] - c[200]) / h
        return float((after - before).norm())

    assert kink(smooth) < 0.02  # continuous velocity (the jump shrinks with the step)
    assert kink(linear) > 1.0   # the linear path turns a corner (|(0,0,1) - (1,0,0)| = 1.41)


def test_rotation_of_two_keyframes_turns_about_their_axis_monotonically():
    keys = _keyframes([[0, 0, 0], [0, 0, 0]], [0, 60])
    path = interpolate_keyframes(keys, 7)
    R = path.c2w[:, :3, :3].double()
    yaw = torch.rad2deg(torch.atan2(R[:, 0, 2], R[:, 2, 2]))  # rotation about y
    assert torch.allclose(R[:, 1, 1], torch.ones(7, dtype=torch.float64), atol=1e-9)  # no tilt, no roll
    assert float(yaw[0]) == pytest.approx(0.0, abs=1e-9) and float(yaw[-1]) == pytest.approx(60.0, abs=1e-6)
    assert bool((yaw[1:] > yaw[:-1]).all())


def test_quaternion_signs_are_made_consistent():
    # 170 deg then 190 deg (= -170): the short way continues through 180, not back through 0
    keys = _keyframes([[0, 0, 0]] * 3, [0, 170, 190])
    path = interpolate_keyframes(keys, 9)
    R = path.c2w[:, :3, :3].double()
    yaw = torch.rad2deg(torch.atan2(R[:, 0, 2], R[:, 2, 2])) % 360
    assert float(yaw[4]) == pytest.approx(170.0, abs=1e-6) and float(yaw[8]) == pytest.approx(190.0, abs=1e-6)
    assert 170.0 < float(yaw[6]) < 200.0  # on the way from 170 to 190 (the long way would pass near 0)


def test_one_keyframe_repeats_and_units_and_intrinsics_are_kept():
    keys = CameraTrajectory.orbit(30, num_frames=3, height=48, width=64)[:1]
    path = interpolate_keyframes(keys, 4)
    assert len(path) == 4 and path.units == "median_depth"
    assert torch.allclose(path.w2c, keys.w2c.expand(4, 4, 4))
    # intrinsics interpolate entry-wise: a zoom from f to 2f passes f..2f monotonically
    zoom = CameraTrajectory.zoom_in(2.0, num_frames=2, height=48, width=64)
    fx = interpolate_keyframes(zoom, 9).K[:, 0, 0]
    assert float(fx[0]) == pytest.approx(float(zoom.K[0, 0, 0])) and float(fx[-1]) == pytest.approx(float(zoom.K[1, 0, 0]))
    assert bool((fx[1:] >= fx[:-1]).all())
    with pytest.raises(TypeError, match="keyframes"):
        interpolate_keyframes(torch.eye(4), 3)
    with pytest.raises(ValueError, match="num_frames"):
        interpolate_keyframes(keys, 0)
