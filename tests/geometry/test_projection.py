"""Pinhole projection and the z-buffer against hand-computed cases and the point renderer."""

import math

import numpy as np
import pytest
import torch

from worldstereo.geometry.lifting import unproject_depth
from worldstereo.geometry.pointcloud import PointCloud
from worldstereo.geometry.projection import pack_depth_keys, project_points, projection_matrices, zbuffer
from worldstereo.geometry.render import render_point_cloud


def _pose(yaw: float, t: tuple[float, float, float]) -> torch.Tensor:
    c, s = math.cos(yaw), math.sin(yaw)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    w2c[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return w2c


def test_hand_computed_projection():
    K = torch.tensor([[100.0, 2.0, 40.0], [0.0, 110.0, 30.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    w2c = _pose(0.0, (0.5, -0.25, 1.0))
    X = torch.tensor([[0.5, 0.25, 1.0]], dtype=torch.float64)  # camera frame: (1.0, 0.0, 2.0)
    u, v, z = project_points(X, w2c, K)
    assert u.dtype == torch.float64  # float64 points stay float64
    # u = (100 * 1 + 2 * 0) / 2 + 40 = 90, v = 110 * 0 / 2 + 30 = 30, z = 2
    np.testing.assert_allclose([float(u), float(v), float(z)], [90.0, 30.0, 2.0], atol=1e-12)
    P = projection_matrices(w2c, K)
    assert P.shape == (1, 3, 4) and P.dtype == torch.float32
    np.testing.assert_allclose(P[0].double().numpy(), (K @ w2c[:3]).numpy(), rtol=1e-7)


def test_projection_is_batched_and_differentiable():
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[50.0, 0, 16.0], [0, 50.0, 12.0], [0, 0, 1]])
    w2c = torch.stack([_pose(0.1 * i, (0.1 * i, 0.0, 3.0)) for i in range(3)])
    pts = torch.randn(3, 20, 3, generator=g, dtype=torch.float64)
    u, v, z = project_points(pts, w2c, K)
    for i in range(3):  # one point set per camera == three separate calls
        ui, vi, zi = project_points(pts[i], w2c[i], K)
        np.testing.assert_allclose(u[i].numpy(), ui[0].numpy(), rtol=1e-12)
        np.testing.assert_allclose(z[i].numpy(), zi[0].numpy(), rtol=1e-12)
    shared = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: project_points(p, w2c, K)[0], (shared,))


def test_zbuffer_keeps_the_nearest_point_of_each_pixel():
    K = torch.tensor([[10.0, 0, 2.0], [0, 10.0, 2.0], [0, 0, 1]])
    pts = torch.tensor([
        [0.01, 0.01, 2.0],    # pixel (2, 2), far
        [0.005, 0.012, 1.0],  # pixel (2, 2), near: wins
        [-0.3, -0.3, 2.0],    # u = v = 0.5: pixel (0, 0)
        [0.0, 0.0, -1.0],     # behind the camera: dropped
        [5.0, 0.0, 1.0],      # outside the image: dropped
        [float("nan"), 0, 1],  # not finite: dropped
    ])
    zb = zbuffer(pts, torch.eye(4), K, 4, 4)
    assert zb.index.shape == (1, 4, 4) and zb.hit.sum() == 2
    assert zb.index[0, 2, 2] == 1 and zb.index[0, 0, 0] == 2
    assert float(zb.depth[0, 2, 2]) == 1.0 and float(zb.depth[0, 0, 0]) == 2.0
    assert float(zb.depth[0, 1, 1]) == 0.0 and zb.index[0, 1, 1] == -1
    # equal depths: the smallest index wins (packed keys)
    tie = zbuffer(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), torch.eye(4), K, 4, 4)
    assert tie.index[0, 2, 2] == 0


def test_depth_keys_order_like_depths():
    z = torch.tensor([0.5, 3.0, 1e-3, 2.0, 7.0])
    keys = pack_depth_keys(z, torch.arange(5), torch.tensor([True, True, True, True, False]))
    assert torch.argsort(keys[:4]).tolist() == torch.argsort(z[:4]).tolist()
    assert keys[4] == torch.iinfo(torch.int64).max


def test_lifted_pixels_land_back_in_their_pixels():
    g = torch.Generator().manual_seed(1)
    H, W = 24, 32
    K = torch.tensor([[30.0, 0.5, W / 2], [0, 33.0, H / 2], [0, 0, 1]])
    w2c = _pose(0.3, (0.2, -0.1, 0.5))
    depth = torch.rand(H, W, generator=g) * 3 + 1
    zb = zbuffer(unproject_depth(depth, K, w2c), w2c, K, H, W)
    np.testing.assert_array_equal(zb.index[0].reshape(-1).numpy(), np.arange(H * W))
    np.testing.assert_allclose(zb.depth[0].numpy(), depth.numpy(), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_zbuffer_matches_the_renderer_without_footprint(seed):
    """render_point_cloud(point_radius=0) is the same z-buffer: same covered pixels, the winner's depth
    and colour."""
    g = torch.Generator().manual_seed(seed)
    n, H, W = 3000, 30, 40
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([4.0, 3.0, 4.0]) - torch.tensor([2.0, 1.5, -1.0])
    rgb = torch.rand(n, 3, generator=g)
    K = torch.tensor([[25.0, 0, W / 2], [0, 25.0, H / 2], [0, 0, 1]])
    w2c = torch.stack([_pose(0.0, (0, 0, 0)), _pose(0.2, (0.3, 0.1, 0.2))]).float()
    zb = zbuffer(xyz, w2c, K, H, W)
    out = render_point_cloud(PointCloud(xyz, rgb), w2c, K, H, W, point_radius=0.0)
    np.testing.assert_array_equal(zb.hit.numpy(), (out.hole_mask[:, 0] == 0).numpy())
    np.testing.assert_array_equal(zb.depth.numpy(), out.depth[:, 0].numpy())
    img = rgb[zb.index.clamp_min(0)].permute(0, 3, 1, 2) * zb.hit[:, None]
    np.testing.assert_array_equal(img.numpy(), out.image.numpy())
