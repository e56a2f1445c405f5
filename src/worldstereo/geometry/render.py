"""Point-cloud renderer in pure PyTorch, for pinhole and equirectangular cameras.

Algorithm (vectorised, no per-point Python loop, batched over frames):

1. Project every point into every frame: one ``addmm`` per frame with the composed float32 matrix
   ``K · [R | t]`` (pinhole: rows ``u z, v z, z``) or ``[R | t]`` (equirectangular: longitude /
   latitude of the camera-frame direction, see :func:`equirect_project`).
2. **Per-pixel z-buffer**: each point falls into the pixel that contains its projection; one
   ``scatter_reduce(amin)`` on a packed 64-bit key (float32 depth bits << 32 | point index) keeps the
   nearest point of every pixel (with its sub-pixel position, depth and colour). Points outside the
   padded image land on a ring of trash cells; points behind the camera get the largest key.
3. **Footprint splatting** on the (at most H·W) z-buffer winners: every kept point covers the pixel
   centres within ``r`` pixels of its projection (``r = point_radius · min(H, W) / 2``:
   ``point_radius`` is in PyTorch3D NDC units as in the reference, where 0.008 at 480 px gives
   ~1.9 px). For each output pixel, the covering points of the neighbouring pixels are gathered with
   dense shifted-image operations (processed in cache-sized tiles); the front surface is their
   minimum depth ``z0``; the covering points with depth ``<= z0 · (1 + depth_tolerance)`` are
   blended front to back with weights ``1 − d²/r²`` (``d`` = distance of the pixel centre to the
   projected point; the reference's alpha weights), normalised to sum 1. At most
   ``points_per_pixel`` points are blended, taken by increasing pixel offset (the pixel's own point
   first).
   With ``point_radius=0`` this step is skipped: the z-buffer winners are the result.
4. A pixel no point covers is a hole: colour 0, depth 0, ``hole_mask`` 1.

Huge and overflowing values: points closer than ``1e-4`` or farther than ``1e12`` (z-depth or range)
are not rendered, and neither are finite points whose projection overflows float32 (e.g. coordinates
near 3e38, where ``inf - inf`` gives NaN pixel positions): they leave holes instead of crashing the
index arithmetic.

Differences from the reference (PyTorch3D ``PointsRasterizer`` + ``AlphaCompositor``): colours are
a normalised weighted mean rather than front-to-back alpha compositing over a grey background (so
sparse regions are not darkened), and a pixel's own points are reduced to the nearest one before
splatting (other points of the same pixel can only be hidden by it, up to sub-pixel effects).

Conventions: ``w2c`` world-to-camera 4x4, OpenCV axes (x right, y down, z forward); ``K`` pixel
intrinsics, pixel (row r, col c) has its centre at ``(c + 0.5, r + 0.5)``; images in [0, 1].

Performance (CPU): about ten in-place element-wise ops per stencil offset over tiles of ``_TILE``
canvas pixels (large enough for torch's intra-op parallelism to use every core, small enough to stay
in the last-level cache), plus one scatter and six gathers per frame (``benchmarks/render.py``: 400k
points at 480x832 and the pipeline defaults: about 22-25 ms per frame with 2 threads on the idle
2-core CI box, where Open3D's 1-pixel ``project_to_rgbd_image`` takes about 18-20 ms and this
module's 1-pixel z-buffer, ``point_radius=0``, about 10 ms). On a CPU shared with other busy
processes set ``OMP_WAIT_POLICY=PASSIVE`` in the environment (or use fewer torch threads): spinning
OpenMP threads that lose their core can make it 5-10x slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.io.limits import MAX_VIDEO_BYTES
from .pointcloud import PointCloud
from .projection import NEAR, pack_depth_keys, projection_matrices

__all__ = [
    "RenderOutput",
    "equirect_project",
    "equirect_pixel_to_direction",
    "footprint_radius_px",
    "render_point_cloud",
    "render_point_cloud_equirect",
]

_NEAR = NEAR            # minimum z (pinhole) / range (equirect) of a rendered point
_MAX_CHUNK_PIXELS = 1 << 19  # frames rendered together: at most this many canvas pixels per chunk (or 1 frame)


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
    lo_side, hi_side = RENDER_LIMITS["side"]
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo_side <= v <= hi_side:
            raise ValueError(f"{name}: expected a positive int of at most {hi_side:.0f} pixels, got {v!r}")
    max_radius = RENDER_LIMITS["point_radius"][1]
    if isinstance(point_radius, bool) or not isinstance(point_radius, (int, float)) or \
            not math.isfinite(point_radius) or not 0 <= point_radius <= max_radius:
        raise ValueError(f"point_radius: expected a number in [0, {max_radius}] (NDC units; 0 = plain z-buffer), "
                         f"got {point_radius!r}")
    max_ppp = RENDER_LIMITS["points_per_pixel"][1]
    if isinstance(points_per_pixel, bool) or not isinstance(points_per_pixel, int) or \
            not 1 <= points_per_pixel <= max_ppp:
        raise ValueError(f"points_per_pixel: expected an int in [1, {max_ppp:.0f}], got {points_per_pixel!r}")
    if isinstance(depth_tolerance, bool) or not isinstance(depth_tolerance, (int, float)) or \
            not 0 <= depth_tolerance <= 1e6:
        raise ValueError(f"depth_tolerance: expected a finite number >= 0, got {depth_tolerance!r}")


def _check_frames(frames: int, height: int, width: int) -> None:
    """The whole render (F x H x W pixels) must fit :data:`~worldstereo.io.limits.MAX_VIDEO_BYTES` as 8-bit RGB."""
    if frames * height * width * 3 > MAX_VIDEO_BYTES:
        raise ValueError(f"w2c: {frames} frames of {height}x{width} pixels exceed the render budget of "
                         f"{MAX_VIDEO_BYTES} bytes of RGB (worldstereo.io.limits.MAX_VIDEO_BYTES); render fewer or "
                         f"smaller frames")


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
# arithmetic (points farther than _MAX_DEPTH are not rendered). _SCALE is a power of two, so scaling
# is exact and the coverage sign seen by the depth pass and by the blending pass always agree.
_NO_POINT = 1e15
_HOLE_DEPTH = 1e13
_MAX_DEPTH = 1e12

#: Bounds of the renderer's settings: ``point_radius`` (NDC units; 0 = plain z-buffer),
#: ``points_per_pixel`` and the image side in pixels; and the whole render (frames x height x width)
#: must fit :data:`worldstereo.io.limits.MAX_VIDEO_BYTES` as 8-bit RGB. They keep one call's time and
#: memory bounded whatever the arguments.
RENDER_LIMITS: dict[str, tuple[float, float]] = {
    "point_radius": (0.0, 0.5),
    "points_per_pixel": (1, 64),
    "side": (1, 16384),
}
_SCALE = 2.0**66
_INT64_MAX = torch.iinfo(torch.int64).max
_TILE = 1 << 17  # canvas pixels per tile of the splatting loops (large enough for intra-op parallelism)


def _equirect_uv(x: Tensor, y: Tensor, z: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Planar :func:`equirect_project` (x, y, z: camera-frame coordinates of the same shape)."""
    rho = torch.sqrt(x * x + y * y + z * z)
    lon = torch.atan2(x, z)
    lat = torch.asin(torch.clamp(-y / rho.clamp_min(1e-12), -1.0, 1.0))
    u = lon.mul_(width / (2 * math.pi)).add_(0.5 * width)
    v = lat.mul_(-height / math.pi).add_(0.5 * height)
    return u, v, rho


class _Workspace:
    """Buffers of one render call, reused by all its chunks of frames (allocated for the largest chunk)."""

    def __init__(self, n: int, chunk: int, length: int, margin: int, n_a: int, n_b: int, far: float,
                 rgb_t: Tensor) -> None:
        dev = rgb_t.device
        total = chunk * n
        self.sentinel = total
        # per-point attributes [z, r, g, b, du, dv] (du, dv: position of the projection relative to
        # its pixel centre, in [-0.5, 0.5)) for every (frame, point), plus a final "no point" column
        self.attrs = torch.empty(6, total + 1, device=dev)
        self.attrs[1:4, :total].view(3, chunk, n).copy_(rgb_t.unsqueeze(1))
        self.attrs[:, total] = torch.tensor([_NO_POINT, 0.0, 0.0, 0.0, far, far])
        self.key = torch.empty(chunk, n, dtype=torch.int64, device=dev)
        self.pix = torch.empty(chunk, n, dtype=torch.int64, device=dev)
        self.ids = torch.arange(total, device=dev).view(chunk, n)
        # per-frame projection temporaries (reused: fresh large allocations cost page faults)
        self.proj = torch.empty(3, n, device=dev)
        self.col = torch.empty(n, device=dev)
        self.row = torch.empty(n, device=dev)
        self.cell = torch.empty(n, device=dev)
        self.valid = torch.empty(n, dtype=torch.bool, device=dev)
        self.valid2 = torch.empty(n, dtype=torch.bool, device=dev)
        lm = length + 2 * margin
        # padded canvas planes [1, z, r, g, b, du, dv] with margins for the shifted slices; the
        # margins hold "no point"; the constant row of ones makes the weight sum part of the blend
        self.planes = torch.empty(7, lm, device=dev)
        self.planes[0].fill_(1.0)
        self.planes[1:].copy_(self.attrs[:, total:].expand(6, lm))
        t = min(_TILE, length)
        tl = t + 2 * margin  # a tile and the margins its shifted slices read
        self.e = torch.empty(tl, device=dev)
        self.a = torch.empty(n_a, tl, device=dev)   # weight terms depending on du (and |d|^2)
        self.ap = torch.empty(n_a, tl, device=dev)  # the same times -_SCALE (coverage penalties)
        self.b = torch.empty(n_b, tl, device=dev)   # weight terms depending on dv
        self.zs = torch.empty(tl, device=dev)
        self.z0 = torch.empty(t, device=dev)
        self.tmp = torch.empty(t, device=dev)
        self.w = torch.empty(t, device=dev)
        self.budget = torch.empty(t, device=dev)
        self.acc = torch.empty(5, length, device=dev)
        self.hole = torch.empty(length, dtype=torch.bool, device=dev)


def _shade(ws: _Workspace, length: int, margin: int, wp: int, r: float, offs: list[tuple[int, int]],
           points_per_pixel: int, depth_tolerance: float) -> None:
    """Footprint splatting over the padded canvas planes of ``ws`` (filled by :func:`_render`).

    The canvas is flat and contiguous: a shift by (dy, dx) pixels is a slice at flat offset
    ``dy · wp + dx``. It is processed in tiles of ``_TILE`` pixels so that the planes of a tile stay
    in cache while the per-offset loops (a few fused in-place ops each) run over it. Writes
    ``ws.acc`` = [Σw, Σw z, Σw r, Σw g, Σw b] and ``ws.hole`` (one ``addcmul`` per offset: the planes
    are [1, z, r, g, b, du, dv], so the weight sum is blended like the other rows).

    Weight of the point of pixel q = p + (dy, dx) at the centre of p (its projection lies at
    (dx + du_q, dy + dv_q) from it): ``w = 1 - d²/r² = A_dx[q] + B_dy[q]`` with
    ``A_dx = 1 - (dx² + 2 dx du + du² + dv²)/r²`` and ``B_dy = -(dy² + 2 dy dv)/r²``; it covers p iff
    w > 0 (the "no point" sentinel du = dv = far makes w < 0 everywhere).
    """
    pl = ws.planes
    z_pl, blend, du, dv = pl[1], pl[0:5], pl[5], pl[6]
    r2 = r * r
    dxs = sorted({dx for _, dx in offs})
    dys = sorted({dy for dy, _ in offs if dy != 0})
    ia = {dx: i for i, dx in enumerate(dxs)}
    ib = {dy: i for i, dy in enumerate(dys)}
    # offsets that cover the pixel centre wherever the point lies in its pixel (with a safety margin)
    always = [o for o in offs if (abs(o[1]) + 0.5) ** 2 + (abs(o[0]) + 0.5) ** 2 < r2 * (1.0 - 1e-3)]
    cond = [o for o in offs if o not in always]
    n_off = len(offs)
    capped = points_per_pixel < n_off
    thr_scale = (1.0 + depth_tolerance) * (1.0 + 1e-6) * _SCALE
    zero = torch.zeros((), device=z_pl.device)
    for p0 in range(0, length, _TILE):
        t = min(_TILE, length - p0)
        base = margin + p0

        # derived planes of the tile (and its margins), computed here so that they stay in cache
        lo, tl = base - margin, t + 2 * margin
        du_t, dv_t = du[lo:lo + tl], dv[lo:lo + tl]
        e = torch.mul(du_t, du_t, out=ws.e[:tl]).addcmul_(dv_t, dv_t).mul_(-1.0 / r2)
        for dx, i in ia.items():
            if dx == 0:
                torch.add(e, 1.0, out=ws.a[i, :tl])
            else:
                torch.add(e, du_t, alpha=-2.0 * dx / r2, out=ws.a[i, :tl]).add_(1.0 - dx * dx / r2)
            torch.mul(ws.a[i, :tl], -_SCALE, out=ws.ap[i, :tl])
        for dy, i in ib.items():
            torch.mul(dv_t, -2.0 * dy / r2, out=ws.b[i, :tl]).add_(-dy * dy / r2)
        torch.mul(z_pl[lo:lo + tl], _SCALE, out=ws.zs[:tl])

        def sl(x: Tensor, dy: int, dx: int) -> Tensor:  # global plane, shifted
            a = base + dy * wp + dx
            return x[a:a + t]

        def sll(x: Tensor, dy: int, dx: int) -> Tensor:  # tile-local plane, shifted
            a = margin + dy * wp + dx
            return x[a:a + t]

        # pass 1: depth z0 of the front surface = min depth of the covering points
        z0, tmp, w = ws.z0[:t], ws.tmp[:t], ws.w[:t]
        if len(always) >= 2:
            torch.minimum(sl(z_pl, *always[0]), sl(z_pl, *always[1]), out=z0)
            rest = always[2:]
        else:
            z0.fill_(_NO_POINT)
            rest = always
        for dy, dx in rest:
            torch.minimum(z0, sl(z_pl, dy, dx), out=z0)
        for dy, dx in cond:
            # penalty -S w: > 0 (far beyond any depth) when not covering; max(penalty, z) is then a
            # candidate front depth, and clamp(..., max=z0) keeps the running minimum
            if dy == 0:
                pen = sll(ws.ap[ia[dx]], dy, dx)
            else:
                pen = torch.add(sll(ws.ap[ia[dx]], dy, dx), sll(ws.b[ib[dy]], dy, dx), alpha=-_SCALE, out=tmp)
            torch.clamp(pen, min=sl(z_pl, dy, dx), max=z0, out=z0)
        torch.ge(z0, _HOLE_DEPTH, out=ws.hole[p0:p0 + t])
        thr = z0.mul_(thr_scale)  # S · (1 + tol) · z0
        # pass 2: blend the covering points within the depth tolerance, nearest offsets first:
        # w = relu(min(1 - d²/r², (thr - z) S)), capped to points_per_pixel contributions
        acc = ws.acc[:, p0:p0 + t]
        budget = ws.budget[:t]
        if capped:
            budget.fill_(float(points_per_pixel))
        for k, (dy, dx) in enumerate(offs):
            a_dx = sll(ws.a[ia[dx]], dy, dx)
            src = a_dx if dy == 0 else torch.add(a_dx, sll(ws.b[ib[dy]], dy, dx), out=w)
            torch.sub(thr, sll(ws.zs, dy, dx), out=tmp)
            torch.minimum(src, tmp, out=w)
            if k >= points_per_pixel:  # budget = points_per_pixel - contributions so far (0 or >= 1)
                torch.clamp(w, min=zero, max=budget, out=w)
            else:
                w.clamp_(min=0.0)
            if capped and k < n_off - 1:
                budget.sub_(torch.sign(w, out=tmp))
            a = base + dy * wp + dx
            if k == 0:
                torch.mul(blend[:, a:a + t], w, out=acc)
            else:
                acc.addcmul_(blend[:, a:a + t], w)


def _render(points: PointCloud, w2c: Tensor, K: Tensor | None, height: int, width: int, point_radius: float,
            points_per_pixel: int, depth_tolerance: float, equirect: bool) -> RenderOutput:
    dev = points.device
    nf = w2c.shape[0]
    n = len(points)
    if n == 0:
        return RenderOutput(torch.zeros(nf, 3, height, width, device=dev), torch.zeros(nf, 1, height, width, device=dev),
                            torch.ones(nf, 1, height, width, device=dev))
    image = torch.empty(nf, 3, height, width, device=dev)
    depth = torch.empty(nf, 1, height, width, device=dev)
    hole = torch.empty(nf, 1, height, width, device=dev)
    r = footprint_radius_px(point_radius, height, width)
    s, offs = _stencil(r) if r > 0 else (0, [])
    offs = sorted(offs, key=lambda o: (o[0] ** 2 + o[1] ** 2, o))  # nearest first (points_per_pixel cap)
    hp, wp = height + 2 * s, width + 2 * s
    # scatter canvas of a frame: pinhole = the padded image plus a ring of trash cells that catches
    # every point outside it; equirectangular = padded rows, unpadded (wrapping) columns
    ch, cw = (hp, width) if equirect else (hp + 2, wp + 2)
    chunk = max(1, min(nf, _MAX_CHUNK_PIXELS // (hp * wp), (2**31 - 2) // n))  # point ids fit 32 bits
    # projection matrices, composed in float64: rows give (u z, v z, z) (pinhole) or camera coords
    P = projection_matrices(w2c.to(dev), K)
    margin = s * wp + s
    far = 4.0 * (s + 1)  # sub-pixel position of "no point": no offset within the stencil covers it
    n_a = len({dx for _, dx in offs})
    n_b = len({dy for dy, _ in offs if dy != 0})
    ws = _Workspace(n, chunk, chunk * hp * wp, margin, n_a, n_b, far, points.rgb.t())
    xyz_t = points.xyz.t().contiguous()
    cell_dtype = torch.float32 if chunk * ch * cw < 2**24 else torch.float64  # exact integer cell numbers
    colmap = torch.remainder(torch.arange(-s, width + s, device=dev), width) if equirect else None
    for f0 in range(0, nf, chunk):
        fc = min(chunk, nf - f0)
        length = fc * hp * wp
        for i in range(fc):
            seg = slice(i * n, (i + 1) * n)
            proj = torch.addmm(P[f0 + i, :, 3:], P[f0 + i, :, :3], xyz_t, out=ws.proj)  # (3, N)
            if equirect:
                u, v, z = _equirect_uv(proj[0], proj[1], proj[2], height, width)
            else:
                z = proj[2]
                ws.attrs[0, seg].copy_(z)
                inv = torch.clamp(z, min=_NEAR, out=ws.cell).reciprocal_()
                u, v = proj[0].mul_(inv), proj[1].mul_(inv)
            z = ws.attrs[0, seg].copy_(z) if equirect else ws.attrs[0, seg]
            col, row = torch.floor(u, out=ws.col), torch.floor(v, out=ws.row)
            # overflow guard: a finite point whose projection overflows float32 (inf - inf = NaN) gets
            # no pixel (NaN would become an out-of-range int64 cell); its key is invalid anyway
            col.nan_to_num_(nan=-float(s + 1), posinf=float(width + s), neginf=-float(s + 1))
            row.nan_to_num_(nan=-float(s + 1), posinf=float(height + s), neginf=-float(s + 1))
            torch.sub(u, col, out=ws.attrs[4, seg]).sub_(0.5)
            torch.sub(v, row, out=ws.attrs[5, seg]).sub_(0.5)
            if equirect:  # v in [0, H]: always inside the padded rows
                col.remainder_(width)
                off = s * cw
            else:
                col.clamp_(-s - 1, width + s)
                row.clamp_(-s - 1, height + s)
                off = (s + 1) * cw + s + 1
            if cell_dtype == torch.float32:
                cell = torch.add(col, row, alpha=cw, out=ws.cell).add_(off + i * ch * cw)
            else:
                cell = torch.add(col.double(), row.double(), alpha=cw).add_(off + i * ch * cw)
            ws.pix[i].copy_(cell)
            # packed z-buffer key: the bits of a positive float32 depth are order-preserving integers
            valid = torch.gt(z, _NEAR, out=ws.valid).logical_and_(torch.lt(z, _MAX_DEPTH, out=ws.valid2))
            valid.logical_and_(torch.isfinite(u)).logical_and_(torch.isfinite(v))
            pack_depth_keys(z, ws.ids[i], valid, out=ws.key[i])
        canvas = torch.full((fc * ch * cw,), _INT64_MAX, dtype=torch.int64, device=dev)
        canvas.scatter_reduce_(0, ws.pix[:fc].view(-1), ws.key[:fc].view(-1), reduce="amin")
        canvas = canvas.view(fc, ch, cw)
        canvas = canvas.index_select(2, colmap) if equirect else canvas[:, 1:-1, 1:-1]
        idx = torch.bitwise_and(canvas, 0xFFFFFFFF).clamp_(max=ws.sentinel).view(-1)  # empty -> "no point"
        for j in range(6):
            torch.index_select(ws.attrs[j], 0, idx, out=ws.planes[j + 1, margin:margin + length])
        rest = ws.planes.shape[1] - margin - length
        if rest > margin:  # a last, smaller chunk: "no point" after it
            ws.planes[1:, margin + length:].copy_(ws.attrs[:, ws.sentinel:].expand(6, rest))
        if offs:
            _shade(ws, length, margin, wp, r, offs, points_per_pixel, depth_tolerance)
        else:  # point_radius 0: a plain z-buffer, the nearest point of each pixel
            torch.eq(idx, ws.sentinel, out=ws.hole[:length])
            ws.acc[1:, :length].copy_(ws.planes[1:5, margin:margin + length])
            ws.acc[0, :length].copy_(ws.hole[:length]).sub_(1.0).neg_()
            ws.acc[1:, :length].mul_(ws.acc[0, :length])
        acc = ws.acc[:, :length]
        wsum = acc[0].clamp_min_(1e-30)  # 0 only at holes, where every Σw · x is 0 too
        acc[1:].div_(wsum)
        acc[2:].clamp_(0.0, 1.0)

        def crop(x: Tensor) -> Tensor:
            return x.reshape(-1, fc, hp, wp)[..., s:s + height, s:s + width].transpose(0, 1)

        image[f0:f0 + fc].copy_(crop(acc[2:]))
        depth[f0:f0 + fc].copy_(crop(acc[1:2]))
        hole[f0:f0 + fc].copy_(crop(ws.hole[:length].unsqueeze(0)))
    return RenderOutput(image, depth, hole)


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
        point_radius: footprint radius in PyTorch3D NDC units (``r_px = point_radius · min(H,W)/2``);
            0 renders a plain z-buffer (each point covers only the pixel containing its projection,
            no blending; the like-for-like setting of 1-pixel projections such as Open3D's).
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
    _check_frames(max(w2c_b.shape[0], K_b.shape[0]), height, width)
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
    _check_frames(w2c_b.shape[0], height, width)
    return _render(points, w2c_b, None, height, width, point_radius, points_per_pixel, depth_tolerance, True)
