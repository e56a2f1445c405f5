"""A procedurally textured room ray-cast analytically: exact images and z-depth for any pinhole camera.

The scene is used by the download-free demo and by tests that need ground-truth geometry. Nothing is
rasterised or approximated: every pixel's ray is intersected in closed form with the room's six
planes (the camera must be inside the room), axis-aligned boxes and spheres, so the returned depth is
exact up to floating-point rounding.

Conventions: world coordinates use OpenCV-style axes for the identity camera (x right, **y down**,
z forward), so the floor is the plane ``y = room_max[1]`` and the ceiling ``y = room_min[1]``.
``w2c`` is a world-to-camera 4x4 (OpenCV axes), ``K`` 3x3 in pixels; pixel ``(u, v)`` (column, row)
is sampled at its centre ``(u + 0.5, v + 0.5)`` (the convention of the point lifting,
:func:`worldstereo.geometry.lift_depth`). Returned depth is **z-depth** (camera-space z), not range.
Shading is Lambertian under a fixed directional light, hence view-independent: a surface point has the
same colour from every camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Box", "Sphere", "ProceduralScene", "make_room_scene"]

_EPS = 1e-9


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[min_xyz, max_xyz]`` with a checker texture of two colours (RGB in [0,1])."""

    min_xyz: tuple[float, float, float]
    max_xyz: tuple[float, float, float]
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    tile: float = 0.15


@dataclass(frozen=True)
class Sphere:
    """Sphere with latitude/longitude stripes of two colours (RGB in [0,1])."""

    center: tuple[float, float, float]
    radius: float
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    stripes: int = 8


def _lattice(seed: int) -> Tensor:
    """64x64 table of uniform random lattice values for :func:`_value_noise` (deterministic in ``seed``)."""
    g = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFF)
    return torch.rand(64, 64, generator=g, dtype=torch.float64)


def _value_noise(u: Tensor, v: Tensor, seed: int, scale: float) -> Tensor:
    """Smooth 2-D value noise in [0, 1]: random lattice values (period 64), smoothstep interpolation."""
    table = _lattice(seed).to(u.dtype).reshape(-1)
    x, y = u * scale, v * scale
    xf, yf = torch.floor(x), torch.floor(y)
    fx, fy = x - xf, y - yf
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    xi, yi = xf.long() % 64, yf.long() % 64
    xj, yj = (xi + 1) % 64, (yi + 1) % 64
    n00, n10 = table[yi * 64 + xi], table[yi * 64 + xj]
    n01, n11 = table[yj * 64 + xi], table[yj * 64 + xj]
    return (n00 * (1 - sx) + n10 * sx) * (1 - sy) + (n01 * (1 - sx) + n11 * sx) * sy


def _checker(u: Tensor, v: Tensor, tile: float) -> Tensor:
    return ((torch.floor(u / tile) + torch.floor(v / tile)) % 2).abs()


def _mix(a: Any, b: Any, t: Tensor) -> Tensor:
    a_t = torch.as_tensor(a, dtype=t.dtype, device=t.device)
    b_t = torch.as_tensor(b, dtype=t.dtype, device=t.device)
    return a_t + (b_t - a_t) * t[..., None]


@dataclass
class ProceduralScene:
    """A room (inside of an axis-aligned box) with boxes and spheres, rendered exactly by ray casting.

    Attributes:
        room_min, room_max: opposite corners of the room; the camera must stay strictly inside.
        boxes, spheres: objects inside the room.
        light_dir: direction *towards* the light (normalised internally).
        seed: texture seed.
    """

    room_min: tuple[float, float, float] = (-3.0, -1.8, -3.0)
    room_max: tuple[float, float, float] = (3.0, 1.2, 6.0)
    boxes: list[Box] = field(default_factory=list)
    spheres: list[Sphere] = field(default_factory=list)
    light_dir: tuple[float, float, float] = (0.35, -0.8, -0.45)
    seed: int = 0

    # ------------------------------------------------------------------------------------- rays
    @staticmethod
    def _rays(w2c: Tensor, K: Tensor, height: int, width: int, supersample: int) -> tuple[Tensor, Tensor]:
        """Camera centre (3,) and world ray directions (H*W*s*s, 3) scaled so that camera z = 1."""
        s = supersample
        offs = (torch.arange(s, dtype=torch.float64) + 0.5) / s
        u = (torch.arange(width, dtype=torch.float64)[:, None] + offs[None, :]).reshape(-1)  # (W*s)
        v = (torch.arange(height, dtype=torch.float64)[:, None] + offs[None, :]).reshape(-1)  # (H*s)
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1).reshape(-1, 3)
        d_cam = pix @ torch.linalg.inv(K).T
        d_cam = d_cam / d_cam[:, 2:3]
        c2w = torch.linalg.inv(w2c)
        d_world = d_cam @ c2w[:3, :3].T
        return c2w[:3, 3], d_world

    # ------------------------------------------------------------------------------------ trace
    def _intersect(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Nearest hit along rays ``o + t d`` (``d`` scaled so that camera z = 1, hence t = z-depth).

        Returns ``(t, hit_id, room_axis, box_axis)``: hit_id 0 = room, 1.. boxes, then spheres; the
        axes tell which slab plane was hit (room exit / box entry)."""
        n = d.shape[0]
        dtype = d.dtype
        dsafe = torch.where(d.abs() < _EPS, torch.full_like(d, _EPS), d)
        inv = 1.0 / dsafe
        lo = torch.tensor(self.room_min, dtype=dtype)
        hi = torch.tensor(self.room_max, dtype=dtype)
        if not bool(((o > lo) & (o < hi)).all()):
            raise ValueError(f"w2c: the camera centre {o.tolist()} is outside the room {self.room_min}..{self.room_max}")
        # room interior: exit through the nearest of the far slab planes
        tfar = torch.maximum((lo - o) * inv, (hi - o) * inv)  # (N,3)
        best_t, room_axis = tfar.min(dim=1)
        best_id = torch.zeros(n, dtype=torch.long)
        box_axis = torch.zeros(n, dtype=torch.long)
        for i, b in enumerate(self.boxes):
            a1 = (torch.tensor(b.min_xyz, dtype=dtype) - o) * inv
            a2 = (torch.tensor(b.max_xyz, dtype=dtype) - o) * inv
            tn, ax = torch.minimum(a1, a2).max(dim=1)
            tf = torch.maximum(a1, a2).min(dim=1).values
            hit = (tn <= tf) & (tn > 1e-6) & (tn < best_t)
            best_t = torch.where(hit, tn, best_t)
            best_id.masked_fill_(hit, 1 + i)
            box_axis = torch.where(hit, ax, box_axis)
        a = (d * d).sum(1)
        for j, sph in enumerate(self.spheres):
            oc = o - torch.tensor(sph.center, dtype=dtype)
            bq = 2 * (d @ oc)
            cq = float(oc @ oc) - sph.radius**2
            disc = bq * bq - 4 * a * cq
            tn = (-bq - torch.sqrt(disc.clamp_min(0))) / (2 * a)
            hit = (disc >= 0) & (tn > 1e-6) & (tn < best_t)
            best_t = torch.where(hit, tn, best_t)
            best_id.masked_fill_(hit, 1 + len(self.boxes) + j)
        return best_t, best_id, room_axis, box_axis

    def _trace(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest hit distance ``t`` (N,) (= z-depth) and shaded RGB (N,3) in [0,1]."""
        best_t, best_id, axis, box_axis = self._intersect(o, d)
        n = d.shape[0]
        dtype = d.dtype
        p = o + best_t[:, None] * d
        rgb = torch.zeros(n, 3, dtype=dtype)
        normal = torch.zeros(n, 3, dtype=dtype)
        m = best_id == 0
        if bool(m.any()):
            rgb[m], normal[m] = self._shade_room(p[m], axis[m], d[m])
        for i, b in enumerate(self.boxes):
            m = best_id == 1 + i
            if bool(m.any()):
                ax = box_axis[m]
                dm = d[m]
                rows = torch.arange(dm.shape[0])
                nrm = torch.zeros(dm.shape[0], 3, dtype=dtype)
                nrm[rows, ax] = -torch.sign(dm[rows, ax])
                uvw = p[m]
                # texture coordinates: the two axes spanning the face
                u_ = torch.where(ax == 0, uvw[:, 2], uvw[:, 0])
                v_ = torch.where(ax == 1, uvw[:, 2], uvw[:, 1])
                rgb[m] = _mix(b.color_a, b.color_b, _checker(u_, v_, b.tile))
                normal[m] = nrm
        for j, sph in enumerate(self.spheres):
            m = best_id == 1 + len(self.boxes) + j
            if bool(m.any()):
                nrm = (p[m] - torch.tensor(sph.center, dtype=dtype)) / sph.radius
                lat = torch.asin(nrm[:, 1].clamp(-1, 1))
                lon = torch.atan2(nrm[:, 0], nrm[:, 2])
                stripe = ((torch.floor(lon / np.pi * sph.stripes) + torch.floor(lat / np.pi * sph.stripes)) % 2).abs()
                rgb[m] = _mix(sph.color_a, sph.color_b, stripe)
                normal[m] = nrm
        light = torch.tensor(self.light_dir, dtype=dtype)
        light = light / light.norm()
        lambert = (normal @ light).clamp_min(0)
        rgb = (rgb * (0.6 + 0.4 * lambert[:, None])).clamp(0, 1)
        return best_t, rgb

    def _shade_room(self, p: Tensor, axis: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        dtype = p.dtype
        n = p.shape[0]
        rgb = torch.zeros(n, 3, dtype=dtype)
        nrm = torch.zeros(n, 3, dtype=dtype)
        idx = torch.arange(n)
        # inward normal: opposite to the ray's direction along the exit axis
        nrm[idx, axis] = -torch.sign(d[idx, axis])
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        floor = (axis == 1) & (d[:, 1] > 0)
        ceiling = (axis == 1) & (d[:, 1] <= 0)
        side = axis == 0
        front_back = axis == 2
        sd = self.seed
        if bool(floor.any()):
            f = floor
            chk = _checker(x[f], z[f], 0.5)
            grain = _value_noise(x[f], z[f], sd, 6.0)
            base = _mix((0.55, 0.36, 0.2), (0.85, 0.72, 0.5), chk)
            rgb[f] = base * (0.8 + 0.25 * grain[:, None])
        if bool(ceiling.any()):
            c = ceiling
            grid = ((torch.remainder(x[c], 1.0) < 0.04) | (torch.remainder(z[c], 1.0) < 0.04)).to(dtype)
            rgb[c] = _mix((0.92, 0.92, 0.88), (0.45, 0.45, 0.5), grid)
        if bool(side.any()):
            s = side
            left = x[s] < 0
            noise = _value_noise(z[s], y[s], sd + 1, 2.5)
            stripes = (torch.remainder(z[s], 0.6) < 0.3).to(dtype)
            col_l = _mix((0.25, 0.45, 0.75), (0.45, 0.65, 0.9), stripes * 0.6 + 0.4 * noise)
            col_r = _mix((0.7, 0.25, 0.25), (0.95, 0.6, 0.35), noise)
            rgb[s] = torch.where(left[:, None], col_l, col_r)
        if bool(front_back.any()):
            fb = front_back
            front = z[fb] > 0
            hgrad = ((y[fb] - self.room_min[1]) / (self.room_max[1] - self.room_min[1])).clamp(0, 1)
            noise = _value_noise(x[fb], y[fb], sd + 2, 3.0)
            col_f = _mix((0.3, 0.65, 0.35), (0.9, 0.9, 0.4), 0.7 * hgrad + 0.3 * noise)
            big = _checker(x[fb] + 10, y[fb] + 10, 0.75)
            col_b = _mix((0.6, 0.55, 0.75), (0.35, 0.3, 0.5), big * 0.7 + 0.3 * noise)
            rgb[fb] = torch.where(front[:, None], col_f, col_b)
        return rgb, nrm

    # ----------------------------------------------------------------------------------- public
    @torch.no_grad()
    def render(self, w2c: Tensor | np.ndarray, K: Tensor | np.ndarray, height: int, width: int, *,
               supersample: int = 1) -> tuple[Tensor, Tensor]:
        """Render one pinhole view.

        Args:
            w2c: ``(4, 4)`` world-to-camera (OpenCV axes); the camera centre must be inside the room.
            K: ``(3, 3)`` intrinsics in pixels of the ``(height, width)`` image.
            height, width: image size.
            supersample: ``s`` x ``s`` samples per pixel averaged for the colour (antialiasing); the
                depth always comes from the pixel-centre ray.

        Returns:
            ``(image, depth)``: float32 ``(3, H, W)`` in [0, 1] and float32 ``(H, W)`` z-depth (> 0
            everywhere, the room is closed).

        Raises:
            ValueError: bad shapes/sizes, or the camera is outside the room.
        """
        w2c_t = torch.as_tensor(w2c, dtype=torch.float64).cpu()
        K_t = torch.as_tensor(K, dtype=torch.float64).cpu()
        if w2c_t.shape != (4, 4):
            raise ValueError(f"w2c: expected (4,4), got shape {tuple(w2c_t.shape)}")
        if K_t.shape != (3, 3):
            raise ValueError(f"K: expected (3,3), got shape {tuple(K_t.shape)}")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            raise ValueError(f"height/width: expected positive integers, got {height!r}x{width!r}")
        if not (isinstance(supersample, int) and supersample >= 1):
            raise ValueError(f"supersample: expected an integer >= 1, got {supersample!r}")
        o, d = self._rays(w2c_t, K_t, height, width, 1)
        if supersample == 1:
            t, rgb = self._trace(o, d)
        else:
            t = self._intersect(o, d)[0]
            s = supersample
            o, d = self._rays(w2c_t, K_t, height, width, s)
            # colour only: float32 is plenty and halves the memory traffic
            _, rgb = self._trace(o.float(), d.float())
            rgb = rgb.reshape(height, s, width, s, 3).mean(dim=(1, 3)).reshape(-1, 3)
        depth = t.reshape(height, width).float()
        image = rgb.reshape(height, width, 3).permute(2, 0, 1).float().contiguous()
        return image, depth

    def render_many(self, w2c: Tensor, K: Tensor, height: int, width: int, *,
                    supersample: int = 1) -> tuple[Tensor, Tensor]:
        """Render ``N`` views: ``w2c`` (N,4,4), ``K`` (N,3,3) or (3,3) -> images (N,3,H,W), depths (N,H,W)."""
        if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
            raise ValueError(f"w2c: expected (N,4,4), got shape {tuple(w2c.shape)}")
        Ks = K.expand(w2c.shape[0], 3, 3) if K.ndim == 2 else K
        out = [self.render(w2c[i], Ks[i], height, width, supersample=supersample) for i in range(w2c.shape[0])]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


def make_room_scene(seed: int = 0, *, num_boxes: int = 3, num_spheres: int = 2) -> ProceduralScene:
    """A furnished room for a camera near the origin looking along +z (median depth about 3-4 units).

    Room: x in [-3, 3], y in [-1.8 (ceiling), 1.2 (floor)], z in [-3, 6]. Boxes stand on the floor
    and spheres float, all at z in [1.8, 4.8], placed and coloured from ``seed``.

    Args:
        seed: random seed for placement, colours and textures (same seed -> same scene).
        num_boxes, num_spheres: number of objects (0 gives an empty room).
    """
    if num_boxes < 0 or num_spheres < 0:
        raise ValueError(f"num_boxes/num_spheres: expected >= 0, got {num_boxes}, {num_spheres}")
    rng = np.random.default_rng(seed)
    floor_y = 1.2
    boxes: list[Box] = []
    xs = np.linspace(-1.8, 1.8, max(num_boxes, 1)) if num_boxes > 1 else np.array([0.3])
    for i in range(num_boxes):
        w, hgt, dep = rng.uniform(0.5, 0.9), rng.uniform(0.5, 1.4), rng.uniform(0.5, 0.9)
        cx = float(xs[i] + rng.uniform(-0.2, 0.2))
        cz = float(rng.uniform(2.4, 4.2))
        ca = tuple(float(v) for v in rng.uniform(0.2, 0.95, 3))
        cb = tuple(float(v) for v in np.clip(np.array(ca) * 0.5 + rng.uniform(0.0, 0.3, 3), 0, 1))
        boxes.append(Box((cx - w / 2, floor_y - hgt, cz - dep / 2), (cx + w / 2, floor_y, cz + dep / 2),
                         ca, cb, tile=float(rng.uniform(0.1, 0.25))))  # type: ignore[arg-type]
    spheres: list[Sphere] = []
    for _ in range(num_spheres):
        r = float(rng.uniform(0.25, 0.45))
        c = (float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-0.6, 0.1)), float(rng.uniform(1.8, 3.2)))
        ca = tuple(float(v) for v in rng.uniform(0.3, 1.0, 3))
        cb = tuple(float(v) for v in rng.uniform(0.0, 0.4, 3))
        spheres.append(Sphere(c, r, ca, cb, stripes=int(rng.integers(4, 10))))  # type: ignore[arg-type]
    return ProceduralScene(boxes=boxes, spheres=spheres, seed=seed)
