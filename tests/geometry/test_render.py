"""Point renderer against analytic ray casting (pinhole and equirectangular)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from worldstereo.geometry.lifting import lift_depth
from worldstereo.geometry.pointcloud import PointCloud
from worldstereo.geometry.render import (
    RenderOutput,
    equirect_pixel_to_direction,
    equirect_project,
    footprint_radius_px,
    render_point_cloud,
    render_point_cloud_equirect,
)

from .scene import COLOURS, depth_map, raycast

H, W = 96, 128
SS = 3  # source super-sampling


def _K(h: int, w: int, f: float) -> torch.Tensor:
    return torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])


def _pose(yaw_deg: float, centre: tuple[float, float, float]) -> torch.Tensor:
    a = math.radians(yaw_deg)
    R = torch.tensor([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
    w2c = torch.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ torch.tensor(centre)
    return w2c


@pytest.fixture(scope="module")
def source_cloud() -> PointCloud:
    """The scene as seen by the identity camera, lifted from its exact depth at 3x resolution."""
    K = _K(H * SS, W * SS, 80.0 * SS)  # wider than the target views
    depth, ids = depth_map(K, torch.eye(4), H * SS, W * SS)
    image = COLOURS[ids.clamp_min(0)].permute(2, 0, 1)
    valid = ids >= 0
    d = torch.where(valid, depth, torch.zeros_like(depth)).float()
    return lift_depth(d, K, torch.eye(4), image, valid_mask=valid, sobel_threshold=None, contract=None)


def _interior(fields: list[torch.Tensor], depth: torch.Tensor, b: int, rel: float) -> torch.Tensor:
    """Pixels whose (2b+1)^2 neighbourhood has constant values of every field and a depth spread <= rel."""
    ok = torch.ones(depth.shape, dtype=torch.bool)
    for f in fields:
        f = f.double()[None, None]
        ok &= (F.max_pool2d(f, 2 * b + 1, 1, b) == -F.max_pool2d(-f, 2 * b + 1, 1, b))[0, 0]
    d = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))[None, None]
    dmax = F.max_pool2d(d, 2 * b + 1, 1, b)[0, 0]
    dmin = -F.max_pool2d(-d, 2 * b + 1, 1, b)[0, 0]
    ok &= (dmax - dmin) <= rel * dmax.clamp_min(1e-9)
    ok[:b] = ok[-b:] = False
    ok[:, :b] = ok[:, -b:] = False
    return ok


def test_pinhole_depth_holes_and_colours_match_raycast(source_cloud: PointCloud) -> None:
    K = _K(H, W, 70.0)
    w2c = _pose(-4.0, (0.9, -0.1, 0.3))
    radius_px = 1.5
    out = render_point_cloud(source_cloud, torch.stack([torch.eye(4), w2c]), K, H, W,
                             point_radius=radius_px / (min(H, W) / 2))
    assert isinstance(out, RenderOutput)
    assert out.image.shape == (2, 3, H, W) and out.depth.shape == (2, 1, H, W) and out.hole_mask.shape == (2, 1, H, W)
    # analytic truth for the moved camera: first hit, and whether the source camera sees that point
    depth_t, ids_t = depth_map(K, w2c, H, W)
    c2w = torch.inverse(w2c.double())
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).double()
    cam = (pix @ torch.inverse(K.double()).t()) * torch.where(torch.isfinite(depth_t), depth_t, 0)[..., None]
    P = cam @ c2w[:3, :3].t() + c2w[:3, 3]
    t_src, _ = raycast(torch.zeros(3), P)  # hit at t = 1 iff P is the first surface seen from the source
    K_src = _K(H * SS, W * SS, 80.0 * SS).double()
    proj = P @ K_src.t()
    us, vs = proj[..., 0] / proj[..., 2], proj[..., 1] / proj[..., 2]
    in_src = (us >= 0) & (us < W * SS) & (vs >= 0) & (vs < H * SS)
    seen = (ids_t >= 0) & in_src & ((t_src - 1).abs() < 1e-6)
    hole_true = ~seen
    disoccluded = (ids_t >= 0) & in_src & ~seen

    b = math.ceil(radius_px) + 1
    interior = _interior([ids_t, hole_true], depth_t, b, 0.02)
    assert interior.float().mean() > 0.6
    assert (interior & disoccluded).sum() >= 30, "scene must contain interior disocclusion holes"

    hole = out.hole_mask[1, 0].bool()
    assert torch.equal(hole[interior], hole_true[interior])
    cov = interior & ~hole_true
    rel = (out.depth[1, 0].double()[cov] - depth_t[cov]).abs() / depth_t[cov]
    assert rel.max() < 0.01
    assert rel.median() < 0.002
    col_true = COLOURS[ids_t.clamp_min(0)].permute(2, 0, 1)
    assert (out.image[1][:, cov] - col_true[:, cov]).abs().max() < 1e-4
    # holes are black with depth 0
    assert out.image[1][:, hole].abs().max() == 0 and out.depth[1, 0][hole].abs().max() == 0
    # frame 0 (the source pose) is fully covered wherever the scene is hit
    d0, ids0 = depth_map(K, torch.eye(4), H, W)
    in_src0 = ((xs - W / 2).abs() * 80.0 / 70.0 < W / 2 - b) & ((ys - H / 2).abs() * 80.0 / 70.0 < H / 2 - b)
    in0 = _interior([ids0], d0, b, 0.02) & (ids0 >= 0) & in_src0
    assert in0.sum() > 0.5 * H * W
    assert out.hole_mask[0, 0][in0].sum() == 0
    rel0 = (out.depth[0, 0].double()[in0] - d0[in0]).abs() / d0[in0]
    assert rel0.max() < 0.01


def test_pinhole_footprint_and_nearest_point_wins() -> None:
    K = _K(40, 60, 50.0)
    # two points on the same ray: the nearer one (green) must win; a third point alone elsewhere
    xyz = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0], [1.0, 0.5, 4.0]])
    rgb = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    r_px = 2.2
    out = render_point_cloud(PointCloud(xyz, rgb), torch.eye(4), K, 40, 60, point_radius=r_px / 20)
    # point 0 projects to (30, 20): pixel centres within 2.2 px are covered
    ys, xs = torch.meshgrid(torch.arange(40) + 0.5, torch.arange(60) + 0.5, indexing="ij")
    d0 = (xs - 30) ** 2 + (ys - 20) ** 2
    u2, v2 = 50 * 1.0 / 4 + 30, 50 * 0.5 / 4 + 20
    d2 = (xs - u2) ** 2 + (ys - v2) ** 2
    covered = (d0 < r_px**2) | (d2 < r_px**2)
    assert torch.equal(out.hole_mask[0, 0] == 0, covered)
    near = d0 < r_px**2
    assert torch.allclose(out.depth[0, 0][near], torch.tensor(2.0))
    assert torch.allclose(out.image[0, :, near], torch.tensor([0.0, 1.0, 0.0])[:, None])
    far = (d2 < r_px**2) & ~near
    assert torch.allclose(out.depth[0, 0][far], torch.tensor(4.0))


@pytest.mark.parametrize("equirect", [False, True])
def test_zero_radius_is_a_plain_z_buffer(equirect: bool) -> None:
    """point_radius=0: each point covers exactly the pixel containing its projection, the nearest
    point of a pixel wins, every other pixel is a hole (checked against a per-point loop)."""
    g = torch.Generator().manual_seed(3)
    n, h, w = 3000, 24, 40
    xyz = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([0.0, 0.0, 3.0])
    rgb = torch.rand(n, 3, generator=g)
    K = _K(h, w, 30.0)
    if equirect:
        out = render_point_cloud_equirect(PointCloud(xyz, rgb), torch.eye(4), h, w, point_radius=0.0)
        from worldstereo.geometry.render import equirect_project

        u, v, z = equirect_project(xyz.double(), h, w)
    else:
        out = render_point_cloud(PointCloud(xyz, rgb), torch.eye(4), K, h, w, point_radius=0.0)
        z = xyz[:, 2].double()
        u = K[0, 0] * xyz[:, 0].double() / z + K[0, 2]
        v = K[1, 1] * xyz[:, 1].double() / z + K[1, 2]
    depth = torch.zeros(h, w, dtype=torch.float64)
    colour = torch.zeros(3, h, w)
    for i in range(n):  # the straightforward z-buffer
        c, r = int(torch.floor(u[i])), int(torch.floor(v[i]))
        if 0 <= r < h and 0 <= c < w and z[i] > 0 and (depth[r, c] == 0 or z[i] < depth[r, c]):
            depth[r, c] = z[i]
            colour[:, r, c] = rgb[i]
    assert torch.equal(out.hole_mask[0, 0] == 1, depth == 0)
    torch.testing.assert_close(out.depth[0, 0].double(), depth, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(out.image[0], colour)


def test_points_behind_camera_and_empty_cloud() -> None:
    K = _K(20, 20, 20.0)
    pc = PointCloud(torch.tensor([[0.0, 0.0, -1.0]]), torch.ones(1, 3))
    out = render_point_cloud(pc, torch.eye(4), K, 20, 20)
    assert out.hole_mask.min() == 1
    out = render_point_cloud(PointCloud.empty(), torch.eye(4).expand(3, 4, 4), K, 20, 20)
    assert out.hole_mask.shape == (3, 1, 20, 20) and out.hole_mask.min() == 1


def test_points_per_pixel_caps_blending() -> None:
    # many points at the same depth around one pixel, colours 0/1: with points_per_pixel=1 the pixel
    # takes the colour of its own (nearest-offset) point only
    K = _K(9, 9, 10.0)
    xyz, rgb = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            xyz.append([dx / 10.0 * 2.0, dy / 10.0 * 2.0, 2.0])
            rgb.append([1.0, 1.0, 1.0] if (dx, dy) == (0, 0) else [0.0, 0.0, 0.0])
    pc = PointCloud(torch.tensor(xyz), torch.tensor(rgb))
    one = render_point_cloud(pc, torch.eye(4), K, 9, 9, point_radius=1.6 / 4.5, points_per_pixel=1)
    many = render_point_cloud(pc, torch.eye(4), K, 9, 9, point_radius=1.6 / 4.5, points_per_pixel=20)
    assert one.image[0, 0, 4, 4] == 1.0
    assert 0.0 < many.image[0, 0, 4, 4] < 1.0


def test_equirect_convention_single_points() -> None:
    Hq, Wq = 64, 128
    # a point placed exactly on the direction of a pixel centre lands on that pixel
    for r_, c_ in [(10, 20), (32, 64), (50, 100), (5, 127)]:
        d = equirect_pixel_to_direction(torch.tensor(c_ + 0.5), torch.tensor(r_ + 0.5), Hq, Wq)
        pc = PointCloud((3.0 * d)[None], torch.ones(1, 3))
        out = render_point_cloud_equirect(pc, torch.eye(4), Hq, Wq, point_radius=0.4 / 32)
        covered = torch.nonzero(out.hole_mask[0, 0] == 0).tolist()
        assert covered == [[r_, c_]]
        assert abs(out.depth[0, 0, r_, c_].item() - 3.0) < 1e-5
    # documented axes: forward -> centre, right (+x) -> 3/4 width, up (-y) -> top, back -> the border
    pts = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    u, v, rho = equirect_project(pts, Hq, Wq)
    assert torch.allclose(u[:3], torch.tensor([64.0, 96.0, u[2].item()]))
    assert torch.allclose(v[:2], torch.tensor([32.0, 32.0])) and v[2].item() == 0.0
    assert u[3].item() in (0.0, 128.0) and torch.allclose(rho, torch.ones(4))


def test_equirect_wraps_around_the_seam() -> None:
    Hq, Wq = 32, 64
    d = equirect_pixel_to_direction(torch.tensor(0.5), torch.tensor(16.5), Hq, Wq)  # column 0
    out = render_point_cloud_equirect(PointCloud((2.0 * d)[None], torch.ones(1, 3)), torch.eye(4), Hq, Wq,
                                      point_radius=1.2 / 16)
    cols = set(torch.nonzero(out.hole_mask[0, 0] == 0)[:, 1].tolist())
    assert cols == {63, 0, 1}


def test_equirect_range_matches_raycast(source_cloud: PointCloud) -> None:
    Hq, Wq = 128, 256
    r_px = 1.5
    w2c = _pose(0.0, (0.1, 0.05, 0.2))
    out = render_point_cloud_equirect(source_cloud, w2c, Hq, Wq, point_radius=r_px / (Hq / 2))
    ys, xs = torch.meshgrid(torch.arange(Hq) + 0.5, torch.arange(Wq) + 0.5, indexing="ij")
    dirs = equirect_pixel_to_direction(xs.double(), ys.double(), Hq, Wq)
    centre = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float64)
    t, ids = raycast(centre, dirs)  # unit directions: t = range
    # seen from the source camera?
    P = centre + t[..., None] * dirs
    t_src, _ = raycast(torch.zeros(3), torch.where(torch.isfinite(P), P, torch.ones_like(P)))
    K_src = _K(H * SS, W * SS, 80.0 * SS).double()
    proj = torch.where(torch.isfinite(P), P, torch.ones_like(P)) @ K_src.t()
    us, vs = proj[..., 0] / proj[..., 2], proj[..., 1] / proj[..., 2]
    in_src = (proj[..., 2] > 0) & (us >= 0) & (us < W * SS) & (vs >= 0) & (vs < H * SS)
    seen = (ids >= 0) & in_src & ((t_src - 1).abs() < 1e-6)
    # ranges of a plane vary quickly with the angle: only silhouettes are excluded by the spread test
    interior = _interior([ids, ~seen], t, math.ceil(r_px) + 1, 0.1)
    cov = interior & seen
    assert cov.sum() > 500
    hole = out.hole_mask[0, 0].bool()
    assert torch.equal(hole[interior], ~seen[interior])
    rel = (out.depth[0, 0].double()[cov] - t[cov]).abs() / t[cov]
    assert rel.max() < 0.01


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"height": 0}, "height"),
        ({"point_radius": -1.0}, "point_radius"),
        ({"point_radius": float("nan")}, "point_radius"),
        ({"points_per_pixel": 0}, "points_per_pixel"),
        ({"w2c": torch.eye(3)}, "w2c"),
        ({"K": torch.eye(4)}, "K"),
        ({"K": torch.eye(3).expand(2, 3, 3), "w2c": torch.eye(4).expand(3, 4, 4)}, "K"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"points": PointCloud(torch.ones(2, 3), torch.ones(2, 3)), "w2c": torch.eye(4), "K": torch.eye(3),
            "height": 8, "width": 8}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        render_point_cloud(**args)


def test_footprint_radius_convention() -> None:
    assert footprint_radius_px(0.008, 480, 832) == pytest.approx(1.92)


def test_batched_frames_equal_single_frames(source_cloud: PointCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    import worldstereo.geometry.render as render_mod

    K = _K(H, W, 70.0)
    w2cs = torch.stack([_pose(-4.0, (0.9, -0.1, 0.3)), torch.eye(4), _pose(3.0, (-0.3, 0.1, 0.0))])
    batched = render_point_cloud(source_cloud, w2cs, K.expand(3, 3, 3), H, W)
    monkeypatch.setattr(render_mod, "_MAX_CHUNK_PIXELS", 1)  # one frame per chunk
    for i in range(3):
        single = render_point_cloud(source_cloud, w2cs[i], K, H, W)
        assert torch.equal(single.image[0], batched.image[i])
        assert torch.equal(single.depth[0], batched.depth[i])
        assert torch.equal(single.hole_mask[0], batched.hole_mask[i])
    eq = render_point_cloud_equirect(source_cloud, w2cs, 32, 64)
    for i in range(3):
        assert torch.equal(render_point_cloud_equirect(source_cloud, w2cs[i], 32, 64).depth[0], eq.depth[i])


def test_tiling_does_not_change_the_result(source_cloud: PointCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """The splatting runs over cache-sized tiles of the canvas: tile borders must be invisible."""
    import worldstereo.geometry.render as render_mod

    K = _K(H, W, 70.0)
    w2cs = torch.stack([_pose(-4.0, (0.9, -0.1, 0.3)), _pose(3.0, (-0.3, 0.1, 0.0))])
    kw = {"point_radius": 1.5 / 48, "points_per_pixel": 4}
    ref = render_point_cloud(source_cloud, w2cs, K, H, W, **kw)
    ref_eq = render_point_cloud_equirect(source_cloud, w2cs, 32, 64)
    assert (ref.hole_mask == 0).float().mean() > 0.5
    monkeypatch.setattr(render_mod, "_TILE", 997)  # odd size: tiles start mid-row
    out = render_point_cloud(source_cloud, w2cs, K, H, W, **kw)
    assert torch.equal(out.image, ref.image) and torch.equal(out.depth, ref.depth)
    assert torch.equal(out.hole_mask, ref.hole_mask)
    assert torch.equal(render_point_cloud_equirect(source_cloud, w2cs, 32, 64).depth, ref_eq.depth)


def test_pipeline_defaults_blend_a_dense_plane() -> None:
    """Defaults (point_radius 0.008, points_per_pixel 8) on a dense fronto-parallel plane at depth 3:
    no holes inside, depth exactly 3 and the plane's colour everywhere (independent truth)."""
    h, w = 60, 80
    K = _K(h, w, 60.0)
    # one point per pixel, 0.1 px right of and below its centre: inside r = 0.24 px of that centre only
    ys, xs = torch.meshgrid(torch.arange(h) + 0.6, torch.arange(w) + 0.6, indexing="ij")
    z = torch.full_like(xs, 3.0)
    xyz = torch.stack([(xs - w / 2) / 60.0 * z, (ys - h / 2) / 60.0 * z, z], -1).reshape(-1, 3)
    rgb = torch.tensor([0.2, 0.5, 0.7]).expand(xyz.shape[0], 3)
    out = render_point_cloud(PointCloud(xyz, rgb), torch.eye(4), K, h, w)
    assert out.hole_mask.sum() == 0
    assert torch.allclose(out.depth, torch.tensor(3.0), atol=1e-5)
    assert torch.allclose(out.image[0], torch.tensor([0.2, 0.5, 0.7])[:, None, None], atol=1e-5)


def _brute_force_splat(u: torch.Tensor, v: torch.Tensor, z: torch.Tensor, rgb: torch.Tensor, h: int, w: int,
                       r: float, ppp: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel loop of the documented semantics (float64): nearest point per pixel, footprint r with
    weights 1 - d²/r², front surface = min covering depth, points within tol of it blended (at most
    ppp, nearest pixel offsets first). Also returns pixels whose result is sensitive to rounding."""
    win: dict[tuple[int, int], int] = {}
    for i in range(len(z)):
        key = (int(torch.floor(v[i])), int(torch.floor(u[i])))
        if key not in win or z[i] < z[win[key]]:
            win[key] = i
    s = math.ceil(r + 0.5)
    offs = sorted(((dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)),
                  key=lambda o: (o[0] ** 2 + o[1] ** 2, o))
    image, depth = torch.zeros(3, h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
    hole, ambiguous = torch.ones(h, w, dtype=torch.bool), torch.zeros(h, w, dtype=torch.bool)
    for py in range(h):
        for px in range(w):
            cov = []  # (offset rank, weight, point) of the covering winners
            for rank, (dy, dx) in enumerate(offs):
                i = win.get((py + dy, px + dx))
                if i is None:
                    continue
                d2 = (u[i].item() - px - 0.5) ** 2 + (v[i].item() - py - 0.5) ** 2
                if abs(d2 - r * r) < 1e-3:
                    ambiguous[py, px] = True
                if d2 < r * r:
                    cov.append((rank, 1.0 - d2 / (r * r), i))
            if not cov:
                continue
            hole[py, px] = False
            z0 = min(z[i].item() for _, _, i in cov)
            front = [(wt, i) for _, wt, i in sorted(cov) if z[i].item() <= z0 * (1 + tol)][:ppp]
            total = sum(wt for wt, _ in front)
            depth[py, px] = sum(wt * z[i].item() for wt, i in front) / total
            image[:, py, px] = sum(wt * rgb[i].double() for wt, i in front) / total
    return image, depth, hole, ambiguous


@pytest.mark.parametrize("r_px, ppp", [(1.92, 8), (1.5, 3), (2.6, 30)])
def test_footprint_blending_matches_brute_force(r_px: float, ppp: int) -> None:
    """Random sub-pixel positions, depth layers (some within, some beyond the depth tolerance of each
    other), several points in some pixels: every unambiguous pixel equals a per-pixel loop."""
    g = torch.Generator().manual_seed(7)
    h, w, f = 14, 18, 20.0
    n = 260
    u = torch.rand(n, generator=g, dtype=torch.float64) * w
    v = torch.rand(n, generator=g, dtype=torch.float64) * h
    layers = torch.tensor([2.0, 2.01, 2.08, 2.6, 3.5], dtype=torch.float64)
    z = layers[torch.randint(0, 5, (n,), generator=g)] + torch.rand(n, generator=g, dtype=torch.float64) * 1e-3
    rgb = torch.rand(n, 3, generator=g)
    K = _K(h, w, f)
    xyz = torch.stack([(u - w / 2) / f * z, (v - h / 2) / f * z, z], 1).float()
    out = render_point_cloud(PointCloud(xyz, rgb), torch.eye(4), K, h, w, point_radius=r_px / (min(h, w) / 2),
                             points_per_pixel=ppp, depth_tolerance=0.02)
    image, depth, hole, ambiguous = _brute_force_splat(u, v, z, rgb, h, w, r_px, ppp, 0.02)
    ok = ~ambiguous
    assert ok.float().mean() > 0.8 and (~hole & ok).sum() > 150
    assert torch.equal(out.hole_mask[0, 0].bool()[ok], hole[ok])
    torch.testing.assert_close(out.depth[0, 0].double()[ok], depth[ok], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.image[0].double()[:, ok], image[:, ok], rtol=1e-4, atol=1e-4)
