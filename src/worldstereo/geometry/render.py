"""Point-cloud renderer in pure PyTorch, for pinhole and equirectangular cameras.

Algorithm (vectorised, no per-point Python loop, batched over frames):

1. Project every point into every frame (pinhole: ``K · (R x + t)``; equirectangular: longitude /
   latitude of the camera-frame direction, see :func:`equirect_project`).
2. **Per-pixel z-buffer**: each point falls into the pixel that contains its projection; one
   ``scatter_reduce(amin)`` on a packed 64-bit key (float depth bits << 32 | point index) keeps the
   nearest point of every pixel (with its sub-pixel position, depth and colour).
3. **Footprint splatting**: every kept point covers the pixel centres within ``r`` pixels of its
   projection (``r = point_radius · min(H, W) / 2``: ``point_radius`` is in PyTorch3D NDC units as in
   the reference, where 0.008 at 480 px gives ~1.9 px). For each output pixel, the covering points
   of the neighbouring pixels are gathered with dense shifted-image operations; the front surface is
   their minimum depth ``z0``; the covering points with depth ``<= z0 · (1 + depth_tolerance)`` are
   blended with weights ``1 − d²/r²`` (``d`` = distance of the pixel centre to the projected point;
   the reference's alpha weights), normalised to sum 1. At most ``points_per_pixel`` points are
   blended, taken by increasing pixel offset (the pixel's own point first).
4. A pixel no point covers is a hole: colour 0, depth 0, ``hole_mask`` 1.

Differences from the reference (PyTorch3D ``PointsRasterizer`` + ``AlphaCompositor``): colours are
a normalised weighted mean rather than front-to-back alpha compositing over a grey background (so
sparse regions are not darkened), and a pixel's own points are reduced to the nearest one before
splatting (other points of the same pixel can only be hidden by it, up to sub-pixel effects).

Conventions: ``w2c`` world-to-camera 4x4, OpenCV axes (x right, y down, z forward); ``K`` pixel
intrinsics, pixel (row r, col c) has its centre at ``(c + 0.5, r + 0.5)``; images in [0, 1].

Performance (CPU): a few hundred short, cache-friendly element-wise ops per chunk of frames
(``benchmarks/render.py``: 400k points at 480x832 in roughly 45-60 ms per frame on 2 idle cores).
On a CPU shared with other busy processes set ``OMP_WAIT_POLICY=PASSIVE`` in the environment (or
use fewer torch threads): spinning OpenMP threads that lose their core can make it 5-10x slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .pointcloud import PointCloud

__all__ = [
    "RenderOutput",
    "equirect_project",
    "equirect_pixel_to_direction",
    "footprint_radius_px",
    "render_point_cloud",
    "render_point_cloud_equirect",
]

_NEAR = 1e-4            # minimum z (pinhole) / range (equirect) of a rendered point
_MAX_CHUNK_PIXELS = 1 << 21  # frames rendered together: about this many canvas pixels per chunk


@dataclass
class RenderOutput:
    """Result of rendering F frames.

    Attributes:
        image: (F,3,H,W) float32 colours in [0,1]; 0 at holes.
        depth: (F,1,H,W) float32 z-depth (pinhole) or range = distance to the camera centre
            (equirectangular); 0 at holes.
        hole_mask: (F,1,H,W) float32 in {0,1}; 1 = hole (no point covers the pixel).
    """

    image: Tensor
    depth: Tensor
    hole_mask: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])


def footprint_radius_px(point_radius: float, height: int, width: int) -> float:
    """Point footprint radius in pixels for a radius in PyTorch3D NDC units (``r · min(H, W) / 2``)."""
    return float(point_radius) * min(height, width) / 2.0


# ----------------------------------------------------------------------------------------------
# equirectangular convention
# ----------------------------------------------------------------------------------------------
def equirect_project(cam: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Camera-frame points -> equirectangular pixel coordinates.

    Convention (camera axes OpenCV: x right, y down, z forward):
    ``lon = atan2(x, z)`` in (−π, π] (0 = forward, +π/2 = right), ``lat = asin(−y / ρ)`` in
    [−π/2, π/2] (+π/2 = up), ``ρ = |p|``; pixel coordinates ``u = (lon / 2π + 0.5) · W``,
    ``v = (0.5 − lat / π) · H``. So the image centre looks forward, the left/right borders look
    backward, the top row is straight up; pixel (row r, col c) has its centre at (c + 0.5, r + 0.5).

    Args:
        cam: (..., 3) camera-frame points.
    Returns:
        ``(u, v, rho)`` each of shape (...).
    """
    x, y, z = cam.unbind(-1)
    rho = torch.linalg.vector_norm(cam, dim=-1)
    lon = torch.atan2(x, z)
    lat = torch.asin(torch.clamp(-y / rho.clamp_min(1e-12), -1.0, 1.0))
    u = (lon / (2 * math.pi) + 0.5) * width
    v = (0.5 - lat / math.pi) * height
    return u, v, rho


def equirect_pixel_to_direction(u: Tensor, v: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`equirect_project`: pixel coordinates -> unit camera-frame directions (...,3)."""
    lon = (u / width - 0.5) * (2 * math.pi)
    lat = (0.5 - v / height) * math.pi
    return torch.stack([torch.cos(lat) * torch.sin(lon), -torch.sin(lat), torch.cos(lat) * torch.cos(lon)], dim=-1)


# ----------------------------------------------------------------------------------------------
# argument handling
# ----------------------------------------------------------------------------------------------
def _check_common(points: PointCloud, height: int, width: int, point_radius: float, points_per_pixel: int,
                  depth_tolerance: float) -> None:
    if not isinstance(points, PointCloud):
        raise TypeError(f"points: expected a PointCloud, got {type(points).__name__}")
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if not isinstance(point_radius, (int, float)) or not math.isfinite(point_radius) or point_radius <= 0:
        raise ValueError(f"point_radius: expected a positive number (NDC units), got {point_radius!r}")
    if isinstance(points_per_pixel, bool) or not isinstance(points_per_pixel, int) or points_per_pixel < 1:
        raise ValueError(f"points_per_pixel: expected an int >= 1, got {points_per_pixel!r}")
    if not isinstance(depth_tolerance, (int, float)) or not depth_tolerance >= 0:
        raise ValueError(f"depth_tolerance: expected a number >= 0, got {depth_tolerance!r}")


def _batch_matrices(x: Tensor, n: int, name: str, frames: int | None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or tuple(x.shape[1:]) != (n, n):
        raise ValueError(f"{name}: expected shape ({n},{n}) or (F,{n},{n}), got {tuple(x.shape)}")
    if frames is not None and x.shape[0] not in (1, frames):
        raise ValueError(f"{name}: expected 1 or {frames} matrices (one per frame), got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


# ----------------------------------------------------------------------------------------------
# core
# ----------------------------------------------------------------------------------------------
def _stencil(r: float) -> tuple[int, list[tuple[int, int]]]:
    """Offsets (dy, dx) of the neighbour pixels whose points can cover a pixel centre (|d| < r)."""
    s = int(math.ceil(r + 0.5))
    offs = []
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            ex, ey = max(abs(dx) - 0.5, 0.0), max(abs(dy) - 0.5, 0.0)
            if ex * ex + ey * ey < r * r:
                offs.append((dy, dx))
    return s, offs


# Finite sentinels (differences never produce inf/NaN in float32): the depth of "no point", the
# depth from which a pixel counts as a hole, and the scale that turns coverage / depth tests into
# arithmetic (points farther than _MAX_DEPTH are not rendered).
_NO_POINT = 1e15
_HOLE_DEPTH = 1e13
_MAX_DEPTH = 1e12
_SCALE = 1e20


def _splat(
    u: Tensor, v: Tensor, z: Tensor, ok: Tensor, rgb_t: Tensor, height: int, width: int, r: float,
    points_per_pixel: int, depth_tolerance: float, wrap: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Z-buffer + footprint splatting of projected points for a chunk of frames.

    All image-space work is done on flat, contiguous, padded canvases: a shift by (dy, dx) pixels is
    a slice at flat offset ``dy · Wp + dx``, and the per-offset loop uses only in-place arithmetic
    (boolean masks, ``where`` and fresh allocations are several times slower on CPU).

    Args:
        u, v, z: (Fc, N) pixel coordinates and depth; ok: (Fc, N) bool renderable;
        rgb_t: (3, N) planar colours.
    Returns:
        image (Fc,3,H,W), depth (Fc,1,H,W), hole (Fc,1,H,W).
    """
    fc, n = u.shape
    dev = u.device
    s, offs = _stencil(r)
    hp, wp = height + 2 * s, width + 2 * s
    if wrap:
        u = torch.remainder(u, float(width))
    col = torch.floor(u)
    row = torch.floor(v)
    ok = ok & (row >= -s) & (row < height + s)
    if not wrap:
        ok = ok & (col >= -s) & (col < width + s)
    cw = width if wrap else wp  # width of the scatter canvas
    total = fc * n
    # planar per-point attributes [z, r, g, b, du, dv] (du, dv: offset of the projection from the
    # pixel centre, in [-0.5, 0.5)), one column per (frame, point) plus a final "no point" column
    attrs = torch.empty(6, total + 1, device=dev)
    attrs[0, :total] = z.reshape(-1)
    attrs[1:4, :total].view(3, fc, n).copy_(rgb_t.unsqueeze(1))
    torch.sub(u.reshape(-1), col.reshape(-1), out=attrs[4, :total]).sub_(0.5)
    torch.sub(v.reshape(-1), row.reshape(-1), out=attrs[5, :total]).sub_(0.5)
    attrs[:, total] = torch.tensor([_NO_POINT, 0.0, 0.0, 0.0, 0.0, 0.0])
    # canvas cell of every point; points that are not rendered go to an extra trash cell
    row.clamp_(-s - 1, height + s).add_(s)
    col = torch.remainder(col, width) if wrap else col.clamp_(-s - 1, width + s).add_(s)
    trash = fc * hp * cw
    if trash >= 2**24:  # cell indices are no longer exact in float32 (huge images)
        row, col = row.double(), col.double()
    frame_base = (torch.arange(fc, device=dev, dtype=row.dtype) * (hp * cw)).unsqueeze(1)
    pix = row.mul_(cw).add_(col).add_(frame_base).masked_fill_(~ok, trash).long().reshape(-1)
    # packed key: the bits of a positive float32 depth are order-preserving as integers
    key = (z.reshape(-1).float().contiguous().view(torch.int32).long() << 32) | torch.arange(total, device=dev)
    canvas = torch.full((trash + 1,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    canvas.scatter_reduce_(0, pix, key, reduce="amin")
    sel = (canvas[:trash] & 0xFFFFFFFF).clamp_(max=total)  # empty pixels -> the "no point" column
    if wrap:  # circular padding in x
        colmap = torch.remainder(torch.arange(-s, width + s, device=dev), width)
        sel = sel.view(fc, hp, width).index_select(2, colmap)
    length = fc * hp * wp
    margin = s * wp + s
    # planes [1, z, r, g, b, du, dv] over the padded canvas, with margins for the shifted slices
    planes = torch.empty(7, length + 2 * margin, device=dev)
    planes[0] = 1.0
    sel = sel.reshape(-1)
    for i in range(6):
        planes[i + 1, :margin] = attrs[i, total]
        planes[i + 1, margin + length:] = attrs[i, total]
        torch.index_select(attrs[i], 0, sel, out=planes[i + 1, margin:margin + length])
    blend = planes[:5]  # accumulated with the splat weights: [w, w z, w r, w g, w b]
    zq, du, dv = planes[1], planes[5], planes[6]
    r2 = r * r
    # Pre-scaled planes so that each neighbour offset costs a few fused in-place ops:
    # pen = (d^2 - r^2) * S with d^2 = |du,dv|^2 + 2 dx du + 2 dy dv + dx^2 + dy^2 (the point of pixel
    # q = p + (dy, dx) lies at (dx + du_q, dy + dv_q) from the centre of p); pen < 0 iff it covers p.
    e_pl = (du * du + dv * dv - r2).mul_(_SCALE)
    du_pl = du.mul(2.0 * _SCALE)
    dv_pl = dv.mul(2.0 * _SCALE)
    zq_s = zq.mul(_SCALE)
    offs = sorted(offs, key=lambda o: (o[0] ** 2 + o[1] ** 2, o))  # nearest first (points_per_pixel cap)
    n_off = len(offs)
    pen = torch.empty(length, device=dev)
    tmp = torch.empty(length, device=dev)

    def penalty(dy: int, dx: int) -> int:
        a = margin + dy * wp + dx
        torch.add(e_pl[a:a + length], du_pl[a:a + length], alpha=dx, out=pen)
        pen.add_(dv_pl[a:a + length], alpha=dy).add_((dx * dx + dy * dy) * _SCALE)
        return a

    # pass 1: depth of the front surface (z0) at every pixel
    z0 = torch.full((length,), _NO_POINT, device=dev)
    for dy, dx in offs:
        if (abs(dx) + 0.5) ** 2 + (abs(dy) + 0.5) ** 2 < r2:  # covers wherever the point lies in its pixel
            a = margin + dy * wp + dx
            torch.minimum(z0, zq[a:a + length], out=z0)
        else:
            a = penalty(dy, dx)
            # covering: its depth; not covering: pen >= ~_SCALE * 1e-6, far beyond any depth
            torch.maximum(pen, zq[a:a + length], out=tmp)
            torch.minimum(z0, tmp, out=z0)
    hole = z0 >= _HOLE_DEPTH
    thr_s = z0.mul_((1.0 + depth_tolerance) * (1.0 + 1e-6) * _SCALE)
    # pass 2: blend the covering points within the depth tolerance of the front surface, with weight
    # w = 1 - d^2/r^2 = -pen / (S r^2), or 0 when the point is behind thr: relu(min(w, (thr - z) S))
    acc = torch.zeros(5, length, device=dev)
    count = torch.zeros(length, device=dev) if points_per_pixel < n_off else None
    for k, (dy, dx) in enumerate(offs):
        a = penalty(dy, dx)
        w = pen.mul_(-1.0 / (_SCALE * r2))
        torch.minimum(w, torch.sub(thr_s, zq_s[a:a + length], out=tmp), out=w).clamp_(min=0.0)
        if count is not None:  # at most points_per_pixel contributions, nearest offsets first
            if k >= points_per_pixel:  # (before that the cap cannot be reached)
                torch.sub(points_per_pixel, count, out=tmp).clamp_(0.0, 1.0)
                w.mul_(tmp)
            count.add_(torch.sign(w, out=tmp))
        acc.addcmul_(blend[:, a:a + length], w)
    wsum = acc[0].masked_fill_(hole, 1.0)
    image = (acc[2:] / wsum).masked_fill_(hole, 0.0).clamp_(0.0, 1.0)
    depth = (acc[1] / wsum).masked_fill_(hole, 0.0)

    def _crop(x: Tensor) -> Tensor:
        return x.reshape(-1, fc, hp, wp)[..., s:s + height, s:s + width].transpose(0, 1).contiguous()

    return _crop(image), _crop(depth.unsqueeze(0)), _crop(hole.unsqueeze(0).float())


def _render(points: PointCloud, w2c: Tensor, K: Tensor | None, height: int, width: int, point_radius: float,
            points_per_pixel: int, depth_tolerance: float, equirect: bool) -> RenderOutput:
    dev = points.device
    w2c = w2c.to(device=dev, dtype=torch.float32)
    nf = w2c.shape[0]
    if K is not None:
        K = K.to(device=dev, dtype=torch.float32).expand(nf, 3, 3)
    r = footprint_radius_px(point_radius, height, width)
    s = int(math.ceil(r + 0.5))
    chunk = max(1, _MAX_CHUNK_PIXELS // ((height + 2 * s) * (width + 2 * s)))
    chunk = min(chunk, max(1, (2**31 - 2) // max(len(points), 1)))  # point ids must fit 32 bits
    images, depths, holes = [], [], []
    xyz_t = points.xyz.t().contiguous()  # planar (3,N): per-frame projection with scalar multiply-adds
    rgb_t = points.rgb.t().contiguous()
    n = len(points)
    for f0 in range(0, nf, chunk):
        fc = min(chunk, nf - f0)
        if n == 0:
            images.append(torch.zeros(fc, 3, height, width, device=dev))
            depths.append(torch.zeros(fc, 1, height, width, device=dev))
            holes.append(torch.ones(fc, 1, height, width, device=dev))
            continue
        u = torch.empty(fc, n, device=dev)
        v = torch.empty(fc, n, device=dev)
        z = torch.empty(fc, n, device=dev)
        for i in range(fc):
            m = w2c[f0 + i].double().tolist()
            cam = []
            for row in range(3):
                c = torch.mul(xyz_t[0], m[row][0])
                c.add_(xyz_t[1], alpha=m[row][1]).add_(xyz_t[2], alpha=m[row][2]).add_(m[row][3])
                cam.append(c)
            if equirect:
                uu, vv, rho = equirect_project(torch.stack(cam, dim=-1), height, width)
                u[i], v[i], z[i] = uu, vv, rho
            else:
                assert K is not None
                k = K[f0 + i].double().tolist()
                inv_z = torch.reciprocal(cam[2])
                torch.mul(cam[0], k[0][0], out=u[i]).add_(cam[1], alpha=k[0][1]).add_(cam[2], alpha=k[0][2])
                u[i].mul_(inv_z)
                torch.mul(cam[1], k[1][1], out=v[i]).add_(cam[0], alpha=k[1][0]).add_(cam[2], alpha=k[1][2])
                v[i].mul_(inv_z)
                z[i] = cam[2]
        ok = (z > _NEAR) & (z < _MAX_DEPTH)
        if not equirect:
            ok &= torch.isfinite(u) & torch.isfinite(v)
        u = torch.nan_to_num(u, nan=-1e9, posinf=-1e9, neginf=-1e9)
        v = torch.nan_to_num(v, nan=-1e9, posinf=-1e9, neginf=-1e9)
        img, dep, hole = _splat(u, v, z, ok, rgb_t, height, width, r, points_per_pixel, depth_tolerance,
                                wrap=equirect)
        images.append(img)
        depths.append(dep)
        holes.append(hole)
    return RenderOutput(torch.cat(images), torch.cat(depths), torch.cat(holes))


@torch.no_grad()
def render_point_cloud(
    points: PointCloud,
    w2c: Tensor,
    K: Tensor,
    height: int,
    width: int,
    *,
    point_radius: float = 0.008,
    points_per_pixel: int = 8,
    depth_tolerance: float = 0.02,
) -> RenderOutput:
    """Render a point cloud into F pinhole views (see the module docstring for the algorithm).

    Args:
        points: the cloud (rendered on its device).
        w2c: (F,4,4) or (4,4) world-to-camera, OpenCV axes.
        K: (F,3,3) or (3,3) pixel intrinsics of the (height, width) image.
        height, width: output size in pixels.
        point_radius: footprint radius in PyTorch3D NDC units (``r_px = point_radius · min(H,W)/2``).
        points_per_pixel: at most this many front-surface points are blended per pixel (those of the
            nearest neighbouring pixels first).
        depth_tolerance: relative depth band behind the front surface whose points are blended.
    Returns:
        :class:`RenderOutput` with (F,3,H,W) image, (F,1,H,W) z-depth and hole mask (1 = hole).
    """
    _check_common(points, height, width, point_radius, points_per_pixel, depth_tolerance)
    w2c_b = _batch_matrices(w2c, 4, "w2c", None)
    K_b = _batch_matrices(K, 3, "K", w2c_b.shape[0])
    if K_b.shape[0] != 1 and w2c_b.shape[0] == 1:
        w2c_b = w2c_b.expand(K_b.shape[0], 4, 4)
    return _render(points, w2c_b, K_b, height, width, point_radius, points_per_pixel, depth_tolerance, False)


@torch.no_grad()
def render_point_cloud_equirect(
    points: PointCloud,
    w2c: Tensor,
    height: int,
    width: int,
    *,
    point_radius: float = 0.008,
    points_per_pixel: int = 8,
    depth_tolerance: float = 0.02,
) -> RenderOutput:
    """Render a point cloud into F equirectangular (360°×180°) views centred on the cameras.

    The pixel convention is that of :func:`equirect_project` (centre = camera +z, right = +x, top =
    up = −y); the footprint radius is in pixels as for :func:`render_point_cloud` (not corrected
    for the stretching near the poles), and it wraps around the left/right border.

    Args:
        points: the cloud.
        w2c: (F,4,4) or (4,4) world-to-camera, OpenCV axes (only the pose matters).
        height, width: panorama size (normally width = 2 · height).
        point_radius, points_per_pixel, depth_tolerance: as in :func:`render_point_cloud`.
    Returns:
        :class:`RenderOutput`; ``depth`` is the range (distance to the camera centre).
    """
    _check_common(points, height, width, point_radius, points_per_pixel, depth_tolerance)
    w2c_b = _batch_matrices(w2c, 4, "w2c", None)
    return _render(points, w2c_b, None, height, width, point_radius, points_per_pixel, depth_tolerance, True)
