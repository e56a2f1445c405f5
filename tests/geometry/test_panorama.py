"""Panorama <-> perspective conversions and equirectangular lifting."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.geometry.lifting import lift_depth
from worldstereo.geometry.panorama import (
    equirect_to_perspective,
    intrinsics_from_fov,
    lift_equirect_depth,
    perspective_from_equirect,
    perspective_to_equirect,
    view_rotation,
)
from worldstereo.geometry.render import (
    equirect_pixel_to_direction,
    render_point_cloud,
    render_point_cloud_equirect,
)

from .scene import COLOURS, depth_map, raycast


def _direction_pano(h: int, w: int) -> torch.Tensor:
    """(3,H,W) panorama whose pixels store their own unit direction (a smooth analytic image)."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return equirect_pixel_to_direction(xs, ys, h, w).permute(2, 0, 1)


def _view_rays(K: torch.Tensor, w2c: torch.Tensor, h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    d = pix @ torch.inverse(K).t() @ w2c[:3, :3]  # world = R^T d
    return (d / d.norm(dim=-1, keepdim=True)).permute(2, 0, 1)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (90, 0, 0), (-135, 20, 0), (30, -45, 10), (180, 0, 0)])
def test_crop_samples_the_right_directions(yaw: float, pitch: float, roll: float) -> None:
    pano = _direction_pano(256, 512)
    img, K, w2c = perspective_from_equirect(pano, yaw, pitch, 70.0, 48, 64, roll_deg=roll)
    assert img.shape == (3, 48, 64)
    assert torch.allclose(K, intrinsics_from_fov(70.0, 48, 64))
    expected = _view_rays(K, w2c, 48, 64)
    assert (img - expected).abs().max() < 0.02  # bilinear interpolation of a smooth field
    # the view's optical axis is the documented yaw/pitch direction
    fwd = torch.inverse(w2c)[:3, 2]
    y, p = math.radians(yaw), math.radians(pitch)
    assert torch.allclose(fwd, torch.tensor([math.sin(y) * math.cos(p), -math.sin(p), math.cos(y) * math.cos(p)]),
                          atol=1e-6)


def test_crop_with_a_posed_panorama() -> None:
    pano = _direction_pano(128, 256)
    w2c_pano = torch.eye(4)
    w2c_pano[:3, :3] = view_rotation(40, 10, 0).t()
    w2c_pano[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    img, K, w2c = perspective_from_equirect(pano, 10, 5, 60.0, 32, 32, w2c_pano=w2c_pano)
    # directions stored in the pano are in the panorama frame: compare there
    rays_world = _view_rays(K, w2c, 32, 32).permute(1, 2, 0)
    rays_pano = rays_world @ w2c_pano[:3, :3].t()
    assert (img - rays_pano.permute(2, 0, 1)).abs().max() < 0.03
    # the crop shares the panorama's centre
    assert torch.allclose(torch.inverse(w2c)[:3, 3], torch.inverse(w2c_pano)[:3, 3], atol=1e-5)


def test_stitching_crops_reconstructs_the_panorama() -> None:
    pano = _direction_pano(64, 128)
    views, w2cs = [], []
    for yaw in range(0, 360, 60):
        for pitch in (-50, 0, 50):
            img, K, w2c = perspective_from_equirect(pano, yaw, pitch, 90.0, 32, 32)
            views.append(img)
            w2cs.append(w2c)
    out, cov = perspective_to_equirect(torch.stack(views), torch.stack(w2cs), K, 64, 128)
    assert cov.shape == (1, 64, 128) and cov.mean() > 0.95
    m = cov[0].bool()
    assert (out[:, m] - pano[:, m]).abs().max() < 0.05


def test_equirect_crop_matches_pinhole_render() -> None:
    # scene cloud lifted from a wide pinhole view; render it as a panorama and as a pinhole view
    Hs, Ws = 240, 320
    Ks = torch.tensor([[150.0, 0, Ws / 2], [0, 150.0, Hs / 2], [0, 0, 1]])
    d, ids = depth_map(Ks, torch.eye(4), Hs, Ws)
    valid = ids >= 0
    cloud = lift_depth(torch.where(valid, d, 0).float(), Ks, torch.eye(4), COLOURS[ids.clamp_min(0)].permute(2, 0, 1),
                       valid_mask=valid, sobel_threshold=None, contract=None)
    pano = render_point_cloud_equirect(cloud, torch.eye(4), 256, 512, point_radius=1.5 / 128)
    crop, K, w2c = perspective_from_equirect(pano.image[0], 5.0, -3.0, 50.0, 48, 64, mode="nearest")
    hole_crop, _, _ = perspective_from_equirect(pano.hole_mask[0], 5.0, -3.0, 50.0, 48, 64, mode="nearest")
    ref = render_point_cloud(cloud, w2c, K, 48, 64, point_radius=1.0 / 24)
    both = (hole_crop[0] == 0) & (ref.hole_mask[0, 0] == 0)
    assert both.float().mean() > 0.9
    # away from colour edges (2-pixel band: resampling shifts edges by up to a pixel)
    img = ref.image[0][None]
    spread = torch.nn.functional.max_pool2d(img, 5, 1, 2) + torch.nn.functional.max_pool2d(-img, 5, 1, 2)
    flat = (spread[0] < 1e-4).all(0) & both
    assert flat.float().mean() > 0.6
    assert (crop - ref.image[0]).abs().max(0).values[flat].max() < 0.02


def test_lift_equirect_depth_round_trip() -> None:
    h, w = 64, 128
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    dirs = equirect_pixel_to_direction(xs.double(), ys.double(), h, w)
    rng, ids = raycast(torch.zeros(3), dirs)
    valid = ids >= 0
    w2c = torch.eye(4)
    w2c[:3, :3] = view_rotation(30, 0, 0).t()
    w2c[:3, 3] = -w2c[:3, :3] @ torch.tensor([0.0, 0.0, -1.0])  # centre (0,0,-1)
    # the range map is of a panorama at the origin with identity pose; re-express for the posed one
    pc = lift_equirect_depth(torch.where(valid, rng, 0).float(), COLOURS[ids.clamp_min(0)].permute(2, 0, 1))
    assert len(pc) == int(valid.sum())
    wall = (ids == 0)[valid]
    assert torch.allclose(pc.xyz[wall, 2], torch.tensor(6.0), atol=1e-4)  # wall plane z = 6
    sphere = (ids == 2)[valid]
    dist = (pc.xyz[sphere] - torch.tensor([1.3, 0.6, 4.5])).norm(dim=1)
    assert torch.allclose(dist, torch.tensor(0.6), atol=1e-4)
    # posed panorama: points move with the pose
    pc2 = lift_equirect_depth(torch.where(valid, rng, 0).float(), w2c=w2c)
    c2w = torch.inverse(w2c)
    assert torch.allclose(pc2.xyz, pc.xyz @ c2w[:3, :3].t() + c2w[:3, 3], atol=1e-4)
    with pytest.raises(ValueError, match="image"):
        lift_equirect_depth(torch.ones(4, 8), torch.zeros(3, 4, 4))


def test_bad_arguments() -> None:
    pano = torch.zeros(3, 8, 16)
    with pytest.raises(ValueError, match="fov_deg"):
        perspective_from_equirect(pano, 0, 0, 190.0, 8, 8)
    with pytest.raises(ValueError, match="height"):
        perspective_from_equirect(pano, 0, 0, 60.0, 0, 8)
    with pytest.raises(ValueError, match="pano"):
        perspective_from_equirect(torch.zeros(8, 16), 0, 0, 60.0, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        equirect_to_perspective(pano, torch.eye(4), torch.eye(3), 8, 8, mode="cubic")
