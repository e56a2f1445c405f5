"""Every preset starts at the identity and does what its name promises (analytic geometry)."""

import math

import pytest
import torch

from worldstereo.camera import PRESET_NAMES, CameraTrajectory


def project(traj, point):
    """Pixel coordinates (N, 2) and depth (N,) of a world point in every camera."""
    p = torch.as_tensor(point, dtype=torch.float64)
    cam = traj.w2c[:, :3, :3].double() @ p + traj.w2c[:, :3, 3].double()
    uv = (traj.K.double() @ cam[..., None])[..., 0]
    return uv[:, :2] / uv[:, 2:], cam[:, 2]


def forward_axis(traj):
    return traj.c2w[:, :3, 2].double()


def angle_deg(a, b):
    return math.degrees(math.acos(max(-1.0, min(1.0, float(torch.dot(a, b) / (a.norm() * b.norm()))))))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_starts_at_identity_with_default_intrinsics(name):
    t = CameraTrajectory.preset(name, num_frames=9, height=480, width=640, fov_deg=60.0)
    assert len(t) == 9 and (t.height, t.width) == (480, 640)
    assert torch.equal(t.w2c[0], torch.eye(4))
    fx = 320.0 / math.tan(math.radians(30.0))
    assert abs(float(t.K[0, 0, 0]) - fx) < 1e-3 and float(t.K[0, 0, 2]) == 320.0 and float(t.K[0, 1, 2]) == 240.0
    assert torch.isfinite(t.w2c).all()


def test_api_seed_forward_example():
    t = CameraTrajectory.forward(distance=2.0, num_frames=16)
    assert len(t) == 16 and (t.height, t.width) == (512, 512)
    torch.testing.assert_close(t.centers[-1], torch.tensor([0.0, 0.0, 2.0]))
    steps = t.centers[1:] - t.centers[:-1]
    torch.testing.assert_close(steps, torch.tensor([0.0, 0.0, 2.0 / 15]).expand(15, 3), atol=1e-6, rtol=0)
    assert (t.w2c[:, :3, :3] == torch.eye(3)).all()


@pytest.mark.parametrize(
    "name, end",
    [("forward", (0, 0, 2.0)), ("backward", (0, 0, -2.0)), ("left", (-1.0, 0, 0)), ("right", (1.0, 0, 0)),
     ("up", (0, -1.0, 0)), ("down", (0, 1.0, 0))],
)
def test_translation_presets(name, end):
    t = CameraTrajectory.preset(name, num_frames=5)
    torch.testing.assert_close(t.centers[-1], torch.tensor(end, dtype=torch.float32), atol=1e-6, rtol=0)
    assert (t.w2c[:, :3, :3] == torch.eye(3)).all()
    # default distances can be overridden
    t3 = CameraTrajectory.preset(name, distance=3.0, num_frames=4)
    assert abs(float(t3.centers[-1].norm()) - 3.0) < 1e-6


def test_pan_presets_turn_view_and_shift_image():
    left = CameraTrajectory.pan_left(angle_deg=30.0, num_frames=7)
    right = CameraTrajectory.pan_right(angle_deg=30.0, num_frames=7)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert abs(angle_deg(forward_axis(left)[-1], z) - 30.0) < 1e-4
    assert forward_axis(left)[-1, 0] < 0 and forward_axis(right)[-1, 0] > 0
    assert forward_axis(left)[:, 1].abs().max() < 1e-7  # pure yaw
    assert left.centers.abs().max() < 1e-7
    uv_l, _ = project(left, (0.0, 0.0, 5.0))
    uv_r, _ = project(right, (0.0, 0.0, 5.0))
    assert uv_l[-1, 0] > 256 + 1 and uv_r[-1, 0] < 256 - 1  # scene moves the opposite way
    # monotonic yaw
    ang = [angle_deg(a, z) for a in forward_axis(left)]
    assert all(b > a for a, b in zip(ang, ang[1:]))


def test_tilt_presets():
    up = CameraTrajectory.tilt_up(angle_deg=20.0, num_frames=5)
    down = CameraTrajectory.tilt_down(angle_deg=20.0, num_frames=5)
    assert forward_axis(up)[-1, 1] < 0 and forward_axis(down)[-1, 1] > 0  # OpenCV: up is -y
    assert abs(angle_deg(forward_axis(up)[-1], torch.tensor([0.0, 0, 1], dtype=torch.float64)) - 20.0) < 1e-4
    assert forward_axis(up)[:, 0].abs().max() < 1e-7


def test_roll_keeps_optical_axis_and_rotates_x_axis():
    t = CameraTrajectory.roll(angle_deg=40.0, num_frames=5)
    torch.testing.assert_close(forward_axis(t), torch.tensor([0.0, 0, 1], dtype=torch.float64).expand(5, 3),
                               atol=1e-7, rtol=0)
    x_axis = t.c2w[-1, :3, 0].double()
    assert abs(math.degrees(math.atan2(float(x_axis[1]), float(x_axis[0]))) - 40.0) < 1e-4


def test_zoom_presets_change_only_focal():
    zi = CameraTrajectory.zoom_in(factor=2.0, num_frames=5)
    zo = CameraTrajectory.zoom_out(factor=2.0, num_frames=5)
    for t in (zi, zo):
        assert (t.w2c == torch.eye(4)).all()
        assert (t.K[:, 0, 2] == 256).all() and (t.K[:, 1, 2] == 256).all()
    assert abs(float(zi.K[-1, 0, 0] / zi.K[0, 0, 0]) - 2.0) < 1e-6
    assert abs(float(zo.K[-1, 1, 1] / zo.K[0, 1, 1]) - 0.5) < 1e-6
    assert (zi.K[1:, 0, 0] > zi.K[:-1, 0, 0]).all()


def test_dolly_zoom_keeps_subject_size():
    t = CameraTrajectory.dolly_zoom(distance=0.6, num_frames=6, subject_depth=1.5)
    assert abs(float(t.centers[-1, 2]) - 0.6) < 1e-6
    uv, _ = project(t, (0.3, -0.2, 1.5))  # a point on the subject plane
    assert (uv - uv[0]).abs().max() < 1e-3
    uv_bg, _ = project(t, (0.3, -0.2, 6.0))  # the background shrinks towards the centre
    assert abs(float(uv_bg[-1, 0]) - 256) < abs(float(uv_bg[0, 0]) - 256)
    with pytest.raises(ValueError, match="distance"):
        CameraTrajectory.dolly_zoom(distance=2.0, subject_depth=1.0)


def test_orbit_keeps_looking_at_point_at_constant_distance():
    depth = 2.0
    t = CameraTrajectory.orbit(azimuth_deg=60.0, num_frames=7, elevation_deg=20.0, depth=depth)
    target = torch.tensor([0.0, 0.0, depth], dtype=torch.float64)
    uv, z = project(t, target)
    assert (uv - 256).abs().max() < 1e-3
    torch.testing.assert_close(z, torch.full((7,), depth, dtype=torch.float64), atol=1e-5, rtol=0)
    d = (t.centers.double() - target).norm(dim=-1)
    assert (d - depth).abs().max() < 1e-5
    c = t.centers[-1].double() - target
    # camera moved right and up; azimuth measured in the horizontal plane
    assert c[0] > 0 and c[1] < 0
    assert abs(math.degrees(math.asin(float(-c[1]) / depth)) - 20.0) < 1e-3
    assert abs(math.degrees(math.atan2(float(c[0]), float(-c[2]))) - 60.0) < 1e-3


def test_spiral_radius_grows_and_looks_at_focus():
    t = CameraTrajectory.spiral(radius=0.4, num_frames=9, revolutions=1.0, forward=0.2, focus_depth=2.0)
    r = t.centers[:, :2].double().norm(dim=-1)
    torch.testing.assert_close(r, torch.linspace(0, 0.4, 9, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(float(t.centers[-1, 2]) - 0.2) < 1e-6
    uv, _ = project(t, (0.0, 0.0, 2.0))
    assert (uv - 256).abs().max() < 1e-3
    ang = torch.atan2(t.centers[1:, 1], t.centers[1:, 0])
    assert abs(math.degrees(float(ang[1] - ang[0])) - 45.0) < 1e-3


def test_eloop_is_closed_ellipse_looking_at_depth():
    t = CameraTrajectory.eloop(radius_x=0.3, radius_y=0.4, num_frames=21, depth=1.5)
    c = t.centers.double()
    assert torch.equal(t.w2c[-1], t.w2c[0])  # closed loop
    # on the ellipse ((x / rx)^2 + ((y + ry) / ry)^2 = 1) in the z = 0 plane
    e = (c[:, 0] / 0.3) ** 2 + ((c[:, 1] + 0.4) / 0.4) ** 2
    assert (e - 1).abs().max() < 1e-5 and c[:, 2].abs().max() < 1e-7
    assert c[5, 0] > 0 and abs(float(c[10, 1]) + 0.8) < 1e-5  # right first, top at half way
    uv, _ = project(t, (0.0, 0.0, 1.5))
    assert (uv - 256).abs().max() < 1e-3


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("forward", {"distance": float("nan")}, "distance"),
        ("forward", {"num_frames": 0}, "num_frames"),
        ("pan_left", {"angle_deg": "30"}, "angle_deg"),
        ("zoom_in", {"factor": -1.0}, "factor"),
        ("orbit", {"depth": 0.0}, "depth"),
        ("forward", {"fov_deg": 0.0}, "fov_deg"),
        ("eloop", {"height": -2}, "height"),
    ],
)
def test_bad_preset_arguments(name, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CameraTrajectory.preset(name, **kwargs)
