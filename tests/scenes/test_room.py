"""The procedural room: depth must equal closed-form ray-plane / ray-sphere distances."""

from __future__ import annotations

import math

import pytest
import torch

from worldstereo.scenes import Box, ProceduralScene, Sphere, make_room_scene

H, W = 48, 64
K = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _ray(u: int, v: int) -> torch.Tensor:
    """Camera-frame direction with z = 1 through the centre of pixel (u, v)."""
    return torch.tensor([(u + 0.5 - 32.0) / 50.0, (v + 0.5 - 24.0) / 50.0, 1.0], dtype=torch.float64)


def _look_w2c(yaw_deg: float, center) -> torch.Tensor:
    """Camera at ``center`` rotated by ``yaw`` about the (down) y axis; w2c, OpenCV axes."""
    a = math.radians(yaw_deg)
    R_c2w = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                         dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = R_c2w
    c2w[:3, 3] = torch.tensor(center, dtype=torch.float64)
    return torch.linalg.inv(c2w)


def test_empty_room_plane_distances():
    scene = make_room_scene(num_boxes=0, num_spheres=0)
    image, depth = scene.render(torch.eye(4), K, H, W)
    assert image.shape == (3, H, W) and depth.shape == (H, W)
    assert image.dtype == torch.float32 and float(image.min()) >= 0 and float(image.max()) <= 1
    lo, hi = scene.room_min, scene.room_max
    # centre pixel: the front wall z = hi[2]
    assert depth[24, 32] == pytest.approx(hi[2], abs=1e-5)
    # bottom-centre pixel looks down at the floor y = hi[1]: z = y_floor / ray_y
    d = _ray(32, 47)
    z_floor = hi[1] / d[1]
    assert z_floor < hi[2]
    assert depth[47, 32] == pytest.approx(float(z_floor), rel=1e-6)
    # top-left pixel: nearest of the ceiling (y = lo[1]) and the left wall (x = lo[0])
    d = _ray(0, 0)
    assert depth[0, 0] == pytest.approx(float(min(lo[1] / d[1], lo[0] / d[0], hi[2])), rel=1e-6)


def test_rotated_camera_points_lie_on_room_boundary():
    """Back-projecting every pixel with its depth through c2w must land on one of the six planes."""
    scene = make_room_scene(num_boxes=0, num_spheres=0)
    w2c = _look_w2c(35.0, (0.7, -0.3, 1.1))
    _, depth = scene.render(w2c, K, H, W)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u + 0.5, v + 0.5, torch.ones_like(u)], -1).reshape(-1, 3)
    cam = (pix @ torch.linalg.inv(K).T) * depth.double().reshape(-1, 1)
    c2w = torch.linalg.inv(w2c)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    lo = torch.tensor(scene.room_min, dtype=torch.float64)
    hi = torch.tensor(scene.room_max, dtype=torch.float64)
    assert bool((world >= lo - 1e-4).all() and (world <= hi + 1e-4).all())
    dist_to_plane = torch.minimum((world - lo).abs(), (world - hi).abs()).min(dim=1).values
    assert float(dist_to_plane.max()) < 1e-4


def test_sphere_and_box_depth():
    sphere = Sphere((0.0, 0.0, 3.0), 0.5, (1, 0, 0), (0, 0, 1))
    box = Box((1.0, -0.5, 2.0), (1.6, 0.5, 2.6), (0, 1, 0), (1, 1, 0))
    scene = ProceduralScene(boxes=[box], spheres=[sphere])
    _, depth = scene.render(torch.eye(4), K, H, W)
    # rays through the sphere: solve |t d - c|^2 = r^2 for the nearest root (d has z = 1, so t = z-depth)
    c = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    for u, v in [(32, 24), (36, 27), (28, 20)]:
        d = _ray(u, v)
        a, b, cc = float(d @ d), float(-2 * d @ c), float(c @ c) - 0.25
        t = (-b - math.sqrt(b * b - 4 * a * cc)) / (2 * a)
        assert depth[v, u] == pytest.approx(t, rel=1e-6)
    assert depth[24, 32] == pytest.approx(2.5, abs=2e-3)  # close to the front pole
    # a ray hitting the box's front face z = 2.0 (x in [1, 1.6] at z = 2 -> u in [57, 72))
    assert depth[24, 60] == pytest.approx(2.0, abs=1e-5)


def test_deterministic_and_seeded():
    a = make_room_scene(seed=3)
    b = make_room_scene(seed=3)
    c = make_room_scene(seed=4)
    ia, da = a.render(torch.eye(4), K, H, W, supersample=2)
    ib, db = b.render(torch.eye(4), K, H, W, supersample=2)
    ic, dc = c.render(torch.eye(4), K, H, W)
    assert torch.equal(ia, ib) and torch.equal(da, db)
    assert not torch.equal(da, dc)
    assert float(ia.std()) > 0.05  # textured, not flat


def test_view_independent_colour():
    """The same surface point seen from two cameras has (almost) the same colour (Lambertian shading)."""
    scene = make_room_scene(seed=1)
    i0, d0 = scene.render(torch.eye(4), K, H, W)
    w2c1 = _look_w2c(0.0, (0.2, 0.0, 0.0))  # moved right by 0.2
    i1, _ = scene.render(w2c1, K, H, W)
    # pixel (10, 40) in view 0 -> world point -> its pixel in view 1
    d = _ray(10, 40) * float(d0[40, 10])
    p1 = d - torch.tensor([0.2, 0.0, 0.0], dtype=torch.float64)
    uv = (K @ (p1 / p1[2]))[:2]
    u1, v1 = int(uv[0]), int(uv[1])
    assert torch.allclose(i0[:, 40, 10], i1[:, v1, u1], atol=0.08)


def test_errors():
    scene = make_room_scene()
    w2c = torch.eye(4)
    w2c[2, 3] = -20.0  # camera at z = 20, outside
    with pytest.raises(ValueError, match="outside the room"):
        scene.render(w2c, K, H, W)
    with pytest.raises(ValueError, match="w2c"):
        scene.render(torch.eye(3), K, H, W)
    with pytest.raises(ValueError, match="supersample"):
        scene.render(torch.eye(4), K, H, W, supersample=0)
    imgs, depths = scene.render_many(torch.eye(4)[None].repeat(2, 1, 1), K, 8, 8)
    assert imgs.shape == (2, 3, 8, 8) and depths.shape == (2, 8, 8)
