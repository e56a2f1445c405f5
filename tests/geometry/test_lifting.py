"""Lifting: analytic unprojection, contraction, edge mask and the library wrapper."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.geometry.lifting import (
    contract_far_depth,
    depth_edge_mask,
    get_points3d_and_colors,
    lift_depth,
    unproject_depth,
    unproject_points,
)


def _K() -> torch.Tensor:
    return torch.tensor([[20.0, 0.0, 8.0], [0.0, 20.0, 6.0], [0.0, 0.0, 1.0]])


def test_plane_unprojects_onto_the_plane_in_world() -> None:
    # camera at (1,2,3) rotated 30 deg about y; depth of the world plane seen at z_cam = 2
    a = math.radians(30)
    R = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    c = torch.tensor([1.0, 2.0, 3.0])
    w2c = torch.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ c
    depth = torch.full((12, 16), 2.0)
    img = torch.rand(3, 12, 16) * 2 - 1
    pts, cols = get_points3d_and_colors(_K(), w2c[None], depth[None, None], img[None], sobel_threshold=None)
    assert pts.shape == (192, 3) and torch.equal(cols, img.reshape(3, -1).t())
    cam = (pts - c) @ R.t()
    assert torch.allclose(cam[:, 2], torch.full((192,), 2.0), atol=1e-5)
    # pixel (row 0, col 0) centre (0.5, 0.5) -> x = (0.5 - 8) / 20 * 2
    assert torch.allclose(cam[0, :2], torch.tensor([(0.5 - 8) / 10, (0.5 - 6) / 10]), atol=1e-5)


def test_contraction_uses_lower_median_and_does_not_mutate() -> None:
    depth = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0, 100.0]])
    out = contract_far_depth(depth, 8.0)
    m = 8 * 3.0  # positive values 1,2,3,4,100 -> median 3
    assert out[0, 5].item() == pytest.approx(2 * m - m * m / (100 + 1e-6))
    assert torch.equal(out[0, :5], depth[0, :5]) and depth[0, 5] == 100.0
    d2 = torch.tensor([1.0, 2.0, 3.0, 4.0, 40.0, 50.0])  # even count -> lower median 3
    assert contract_far_depth(d2, 8.0)[5].item() == pytest.approx(2 * 24 - 24 * 24 / 50)
    assert torch.equal(contract_far_depth(depth, None), depth)


def test_edge_mask_finds_a_depth_step() -> None:
    depth = torch.ones(10, 10)
    depth[:, 5:] = 3.0
    edge = depth_edge_mask(depth, 0.35)
    assert edge[:, 4:6].all() and not edge[:, :3].any() and not edge[:, 7:].any()


def test_none_cases_and_in_place() -> None:
    img = torch.zeros(3, 4, 4)
    assert get_points3d_and_colors(_K(), torch.eye(4), torch.zeros(4, 4), img) == (None, None)
    bad = torch.ones(4, 4)
    bad[0, 0] = float("nan")
    assert get_points3d_and_colors(_K(), torch.eye(4), bad, img) == (None, None)
    few = torch.zeros(4, 4)
    few[0, :3] = 1.0  # 3 valid pixels only (the reference keeps unmasked zero-depth pixels as points)
    assert get_points3d_and_colors(_K(), torch.eye(4), few, img, mask=few == 0, sobel_threshold=None) == (None, None)
    pts, _ = get_points3d_and_colors(_K(), torch.eye(4), few, img, sobel_threshold=None)
    assert pts is not None and len(pts) == 16 and torch.equal(pts[3], torch.zeros(3))
    d = torch.ones(4, 4)
    d[0, 0] = 1000.0
    get_points3d_and_colors(_K(), torch.eye(4), d, img, sobel_threshold=None, in_place=True)
    assert d[0, 0] < 16.0  # contracted into (8, 16)
    with pytest.raises(ValueError, match="image"):
        get_points3d_and_colors(_K(), torch.eye(4), torch.ones(4, 4), torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="mask"):
        get_points3d_and_colors(_K(), torch.eye(4), torch.ones(4, 4), img, mask=torch.zeros(3, 3, dtype=torch.bool))


def test_lift_depth_wrapper() -> None:
    depth = torch.full((12, 16), 2.0)
    depth[0, 0] = 0.0
    depth[1, 1] = float("inf")
    valid = torch.ones(12, 16, dtype=torch.bool)
    valid[2, 2] = False
    image = torch.rand(3, 12, 16)
    pc = lift_depth(depth, _K(), torch.eye(4), image, valid_mask=valid, sobel_threshold=None)
    assert len(pc) == 192 - 3
    assert torch.allclose(pc.xyz[:, 2], torch.full((189,), 2.0))
    assert torch.allclose(pc.rgb[0], image[:, 0, 1])
    assert len(lift_depth(torch.zeros(4, 4), _K(), torch.eye(4))) == 0
    grey = lift_depth(torch.ones(4, 4), _K(), torch.eye(4), sobel_threshold=None)
    assert torch.all(grey.rgb == 0.5) and len(grey) == 16


def test_batched_and_selected_pixels_equal_the_single_frame_lifting() -> None:
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(3, 6, 9, generator=g) + 1.0
    K = torch.stack([_K(), _K() * torch.tensor([[1.1], [1.0], [1.0]]), _K()])
    w2c = torch.eye(4).repeat(3, 1, 1)
    w2c[:, :3, 3] = torch.rand(3, 3, generator=g)
    batched = unproject_depth(depth, K, w2c)
    assert batched.shape == (3, 54, 3)
    for i in range(3):
        assert torch.equal(batched[i], unproject_depth(depth[i], K[i], w2c[i]))
    pixels = torch.tensor([[0, 10, 53], [5, 6, 7], [20, 20, 1]])
    picked = unproject_depth(depth, K, w2c, pixels=pixels)
    assert torch.equal(picked, torch.stack([batched[i, pixels[i]] for i in range(3)]))
    # unproject_points at the pixel centres is the same lifting
    r, c = pixels[0] // 9, pixels[0] % 9
    pts = unproject_points(c + 0.5, r + 0.5, depth[0].reshape(-1)[pixels[0]], K[0], w2c[0])
    assert torch.equal(pts, picked[0])
