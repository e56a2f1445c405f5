"""Core CameraTrajectory behaviour: construction, indexing, cat, resample, resize, validation."""

import math

import numpy as np
import pytest
import torch

from worldstereo.camera import CameraTrajectory, intrinsics_from_fov, matrix_to_quaternion, quaternion_to_matrix
from worldstereo.camera.rotations import rotation_y, rotation_z


def _random_w2c(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    R = quaternion_to_matrix(q)
    w2c = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    w2c[:, :3, :3] = R
    w2c[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return w2c


def _K(h=48, w=64, f=50.0):
    return torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])


def test_c2w_and_centers_are_inverse_and_projection_consistent():
    w2c = _random_w2c(5)
    t = CameraTrajectory(w2c, _K(), 48, 64)
    assert t.K.shape == (5, 3, 3)  # (3,3) broadcast
    eye = t.w2c @ t.c2w
    torch.testing.assert_close(eye, torch.eye(4, dtype=eye.dtype).expand(5, 4, 4), atol=1e-12, rtol=0)
    # centre maps to the camera origin
    c_h = torch.cat([t.centers, torch.ones(5, 1, dtype=t.w2c.dtype)], -1)
    cam = (t.w2c @ c_h[..., None])[..., :3, 0]
    assert cam.abs().max() < 1e-12
    assert t.w2c.dtype == torch.float64  # float64 kept
    assert CameraTrajectory(w2c.float()).w2c.dtype == torch.float32
    assert not CameraTrajectory(w2c).has_intrinsics


def test_indexing_slicing_and_cat():
    t = CameraTrajectory(_random_w2c(6), _K(), 48, 64)
    assert len(t[2]) == 1 and torch.equal(t[2].w2c[0], t.w2c[2])
    assert torch.equal(t[-1].w2c[0], t.w2c[5])
    assert len(t[1:4]) == 3 and torch.equal(t[1:4].w2c, t.w2c[1:4])
    sel = t[torch.tensor([4, 0])]
    assert torch.equal(sel.w2c, t.w2c[[4, 0]]) and torch.equal(sel.K, t.K[[4, 0]])
    assert torch.equal(t[[1, 3]].w2c, t.w2c[[1, 3]])
    mask = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(t[mask].w2c, t.w2c[[0, 2, 5]])
    both = CameraTrajectory.cat([t[:2], t[2:]])
    assert both.allclose(t, atol=0)
    assert len(t[:2] + t[:3]) == 5
    with pytest.raises(IndexError, match="index"):
        t[10]
    assert [len(x) for x in t] == [1] * 6


def test_to_dtype_device():
    t = CameraTrajectory(_random_w2c(3), _K(), 48, 64)
    f = t.to("cpu", torch.float32)
    assert f.w2c.dtype == torch.float32 and f.K.dtype == torch.float32
    assert f.height == 48 and f.width == 64
    with pytest.raises(ValueError, match="dtype"):
        t.to(dtype=torch.int64)


def test_resample_endpoints_and_slerp_midpoint():
    # two cameras: identity and yaw 90 deg + translation (2, 0, 4)
    c2w1 = torch.eye(4, dtype=torch.float64)
    c2w1[:3, :3] = rotation_y(torch.tensor(math.pi / 2, dtype=torch.float64))
    c2w1[:3, 3] = torch.tensor([2.0, 0.0, 4.0])
    w2c = torch.stack([torch.eye(4, dtype=torch.float64), torch.linalg.inv(c2w1)])
    K = torch.stack([_K(f=40.0), _K(f=80.0)]).double()
    t = CameraTrajectory(w2c, K, 48, 64)
    r = t.resample(3)
    assert len(r) == 3
    assert torch.equal(r.w2c[0], t.w2c[0]) and torch.equal(r.w2c[-1], t.w2c[-1])
    mid = r.c2w[1]
    expected_R = rotation_y(torch.tensor(math.pi / 4, dtype=torch.float64))
    torch.testing.assert_close(mid[:3, :3], expected_R, atol=1e-12, rtol=0)
    torch.testing.assert_close(mid[:3, 3], torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64), atol=1e-12, rtol=0)
    assert abs(float(r.K[1, 0, 0]) - 60.0) < 1e-9
    # upsampling a multi-frame trajectory keeps the original frames at matching parameters
    t5 = CameraTrajectory(_random_w2c(5, seed=3), _K(), 48, 64)
    r9 = t5.resample(9)
    torch.testing.assert_close(r9.w2c[::2], t5.w2c, atol=1e-12, rtol=0)
    # a single frame is repeated
    assert len(t5[0].resample(4)) == 4
    with pytest.raises(ValueError, match="num_frames"):
        t5.resample(0)


def test_resample_uses_shorter_arc():
    c2w1 = torch.eye(4, dtype=torch.float64)
    c2w1[:3, :3] = rotation_z(torch.tensor(math.radians(350.0), dtype=torch.float64))  # = -10 deg
    t = CameraTrajectory(torch.stack([torch.eye(4, dtype=torch.float64), torch.linalg.inv(c2w1)]))
    mid = t.resample(3).c2w[1, :3, :3]
    torch.testing.assert_close(mid, rotation_z(torch.tensor(math.radians(-5.0), dtype=torch.float64)),
                               atol=1e-12, rtol=0)


def test_resized_and_with_intrinsics():
    t = CameraTrajectory(_random_w2c(2), _K(48, 64, 50.0), 48, 64)
    r = t.resized(96, 32)
    assert (r.height, r.width) == (96, 32)
    torch.testing.assert_close(r.K[0], torch.tensor([[25.0, 0, 16], [0, 100.0, 48], [0, 0, 1]], dtype=r.K.dtype))
    n = CameraTrajectory(_random_w2c(2)).with_intrinsics(height=100, width=200, fov_deg=90.0)
    assert abs(float(n.K[0, 0, 0]) - 100.0) < 1e-4 and float(n.K[0, 1, 2]) == 50.0
    with pytest.raises(ValueError, match="intrinsics"):
        CameraTrajectory(_random_w2c(2)).resized(10, 10)


def test_intrinsics_from_fov_matches_definition():
    K = intrinsics_from_fov(480, 640, 60.0, dtype=torch.float64)
    assert abs(2 * math.degrees(math.atan(320.0 / float(K[0, 0]))) - 60.0) < 1e-9
    assert float(K[1, 1]) == float(K[0, 0]) and float(K[1, 2]) == 240.0


def test_from_poses_conventions_agree():
    w2c = _random_w2c(4, seed=7)
    c2w = torch.linalg.inv(w2c)
    a = CameraTrajectory.from_poses(w2c)
    b = CameraTrajectory.from_poses(c2w, convention="c2w_opencv")
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
    c = CameraTrajectory.from_poses(c2w @ flip, convention="c2w_opengl")
    d = CameraTrajectory.from_poses(w2c[:, :3, :])  # 3x4
    for o in (b, c, d):
        assert o.allclose(a, atol=1e-10)
    with pytest.raises(ValueError, match="convention"):
        CameraTrajectory.from_poses(w2c, convention="blender")


def test_look_at_points_the_optical_axis_at_target():
    eyes = torch.tensor([[1.0, -0.5, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.3, 1.0]])
    target = torch.tensor([0.2, 0.1, 3.0])
    t = CameraTrajectory.look_at(eyes, target)
    cam = (t.w2c[:, :3, :3].double() @ target.double() + t.w2c[:, :3, 3].double())
    assert cam[:, :2].abs().max() < 1e-5 and (cam[:, 2] > 0).all()
    # no roll: camera x axis is horizontal (orthogonal to world up = -y)
    assert t.c2w[:, 1, 0].abs().max() < 1e-6
    with pytest.raises(ValueError, match="targets"):
        CameraTrajectory.look_at(target, target)


def test_quaternion_roundtrip_and_sign():
    R = quaternion_to_matrix(torch.randn(50, 4, dtype=torch.float64))
    q = matrix_to_quaternion(R)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------- bad inputs
GOOD = torch.eye(4).repeat(2, 1, 1)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"w2c": torch.eye(3)}, ValueError, "w2c"),  # wrong shape
        ({"w2c": torch.zeros(0, 4, 4)}, ValueError, "w2c"),  # empty
        ({"w2c": torch.full((2, 4, 4), float("nan"))}, ValueError, "w2c"),  # non-finite
        ({"w2c": torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))}, ValueError, "w2c"),  # scaled, non-rigid
        ({"w2c": torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))}, ValueError, "w2c"),  # reflection
        ({"w2c": torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])}, ValueError, "w2c"),
        ({"w2c": "abc"}, TypeError, "w2c"),
        ({"w2c": GOOD, "K": torch.eye(3)}, ValueError, "height"),  # K without size
        ({"w2c": GOOD, "K": torch.eye(2), "height": 4, "width": 4}, ValueError, "K"),  # K shape
        ({"w2c": GOOD, "K": torch.eye(3).repeat(3, 1, 1), "height": 4, "width": 4}, ValueError, "K"),  # count
        ({"w2c": GOOD, "K": torch.tensor([[-5.0, 0, 2], [0, 5, 2], [0, 0, 1]]), "height": 4, "width": 4},
         ValueError, "K"),  # negative focal
        ({"w2c": GOOD, "K": torch.tensor([[5.0, 0, 2000], [0, 5, 2], [0, 0, 1]]), "height": 4, "width": 4},
         ValueError, "principal point"),  # K of another image size
        ({"w2c": GOOD, "K": torch.tensor([[5.0, 0, 2], [0, 5, 2], [0, 0, float("inf")]]), "height": 4, "width": 4},
         ValueError, "K"),
        ({"w2c": GOOD, "height": 0, "width": 4}, ValueError, "height"),
        ({"w2c": GOOD, "height": 4.5, "width": 4}, TypeError, "height"),
        ({"w2c": GOOD, "height": 4}, ValueError, "width"),
    ],
)
def test_bad_inputs_raise_naming_the_parameter(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        CameraTrajectory(**kwargs)


def test_bad_inputs_of_methods():
    t = CameraTrajectory(GOOD, _K(), 48, 64)
    with pytest.raises(ValueError, match="name"):
        CameraTrajectory.preset("teleport")
    with pytest.raises(ValueError, match="trajectories"):
        CameraTrajectory.cat([])
    with pytest.raises(ValueError, match="units"):
        CameraTrajectory.cat([t, CameraTrajectory.forward(num_frames=2, height=48, width=64)])
    with pytest.raises(ValueError, match="fov_deg"):
        t.with_intrinsics(height=10, width=10, fov_deg=180.0)
    with pytest.raises(ValueError, match="width"):
        t.resized(10, -1)
    with pytest.raises(ValueError, match="poses"):
        CameraTrajectory.from_poses(np.zeros((2, 2, 4)))
