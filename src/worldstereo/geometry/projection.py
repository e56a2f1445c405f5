"""Pinhole projection and the per-pixel z-buffer, batched over frames, on any device.

These are the package's one implementation of the projection conventions (the point renderer
:mod:`~worldstereo.geometry.render` uses the same matrices and z-buffer keys; the reconstruction
package projects, z-buffers and samples through this module and :mod:`~worldstereo.geometry.sampling`).

Conventions: ``w2c`` is world-to-camera 4x4 with OpenCV axes (x right, y down, z forward); ``K`` is a
3x3 pixel intrinsic matrix of the image; image coordinates are ``(u, v)``, ``u`` along the columns and
``v`` along the rows; the centre of pixel (row r, column c) is at ``(c + 0.5, r + 0.5)``, so a point
projecting to ``(u, v)`` lies in pixel (``floor(v)``, ``floor(u)``) and a point lifted from a pixel
centre (:func:`~worldstereo.geometry.lifting.unproject_depth`) projects back into its own pixel.
Depth is z-depth (camera-frame z).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "NEAR",
    "ZBuffer",
    "pack_depth_keys",
    "project_points",
    "projection_matrices",
    "zbuffer",
]

#: default minimum z of a projected / z-buffered point (the renderer's near plane)
NEAR = 1e-4
_INT64_MAX = torch.iinfo(torch.int64).max


def projection_matrices(w2c: Tensor, K: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(F,3,4) projection matrices ``P`` with ``P @ [x; 1] = (u z, v z, z)`` (``K`` given) or the
    camera-frame point (``K`` None).

    ``K · [R | t]`` is composed in float64 and rounded once to ``dtype`` (float32 composition would
    add its own rounding error to every projected point).

    Args:
        w2c: (F,4,4) or (4,4) world-to-camera (OpenCV axes).
        K: optional (F,3,3) or (3,3) pixel intrinsics (one matrix is used for every frame).
        dtype: result dtype (float32, or float64 for float64 points).
    """
    if w2c.dim() == 2:
        w2c = w2c.unsqueeze(0)
    P = w2c.to(dtype=torch.float64)[:, :3, :]
    if K is not None:
        P = K.to(device=P.device, dtype=torch.float64).expand(P.shape[0], 3, 3) @ P
    return P.to(dtype)


def project_points(points: Tensor, w2c: Tensor, K: Tensor, *, near: float = NEAR) -> tuple[Tensor, Tensor, Tensor]:
    """Project world points into F pinhole cameras.

    Args:
        points: (N,3) world points seen by every camera, or (F,N,3) one set per camera.
        w2c: (F,4,4) world-to-camera; K: (F,3,3) pixel intrinsics ((4,4) / (3,3) = one camera).
        near: z is clamped to at least ``near`` before the division (so u, v stay finite); they are
            meaningful only where ``z > near``.

    Returns:
        ``(u, v, z)``, each (F,N): image coordinates (pixel centres at +0.5) and z-depth; float32, or
        float64 for float64 points. Differentiable with respect to ``points``.
    """
    dt = torch.promote_types(points.dtype, torch.float32)
    P = projection_matrices(w2c, K, dt).to(points.device)  # (F,3,4)
    pts = points.to(dt)
    if pts.dim() == 2:
        cam = torch.matmul(P[:, :, :3], pts.t()).add_(P[:, :, 3:])  # (F,3,N)
    else:
        cam = torch.baddbmm(P[:, :, 3:], P[:, :, :3], pts.transpose(1, 2))
    z = cam[:, 2]
    inv = z.clamp(min=near).reciprocal()
    return cam[:, 0] * inv, cam[:, 1] * inv, z


def pack_depth_keys(z: Tensor, ids: Tensor, valid: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Z-buffer keys ``(float32 bits of z) << 32 | id``: the smallest key of a pixel is its nearest point
    (ties: the smallest id). Invalid points get the largest int64 (they never win).

    The bits of a positive float32 are order-preserving integers, so one integer ``amin`` reduction
    (``scatter_reduce``) finds nearest point and its id at once. ``z`` must be float32 and positive
    where ``valid``; ``ids`` int64 in [0, 2^32).
    """
    key = torch.add(ids, z.contiguous().view(torch.int32), alpha=1 << 32, out=out)
    return key.masked_fill_(valid.logical_not(), _INT64_MAX)


@dataclass
class ZBuffer:
    """Result of :func:`zbuffer` for F frames of size H x W and N points per frame.

    Attributes:
        index: (F,H,W) int64 index (into the N points of the frame) of the nearest point whose
            projection lies in the pixel; -1 where no point lands.
        depth: (F,H,W) float32 z-depth of that point; 0 where no point lands.
        u, v, z: (F,N) float32 projections of every point (see :func:`project_points`).
    """

    index: Tensor
    depth: Tensor
    u: Tensor
    v: Tensor
    z: Tensor

    @property
    def hit(self) -> Tensor:
        """(F,H,W) bool, True where a point landed."""
        return self.index >= 0


def zbuffer(points: Tensor, w2c: Tensor, K: Tensor, height: int, width: int, *, near: float = NEAR,
            max_depth: float = 1e12) -> ZBuffer:
    """Nearest point per pixel (1-pixel splats): every point lands in the pixel that contains its
    projection (pixel (``floor(v)``, ``floor(u)``)); points with ``z <= near``, ``z >= max_depth``,
    non-finite coordinates or outside the image are dropped.

    This is the point renderer's z-buffer (``render_point_cloud(..., point_radius=0)`` shows the same
    winners) returning the winners' indices.

    Args:
        points: (N,3) world points seen by every camera, or (F,N,3) one set per camera.
        w2c: (F,4,4) world-to-camera; K: (F,3,3) pixel intrinsics ((4,4) / (3,3) = one camera).
        height, width: image size.

    Returns:
        :class:`ZBuffer`.
    """
    u, v, z = project_points(points, w2c, K, near=near)
    F, n = z.shape
    if n >= 2**32:
        raise ValueError(f"points: at most 2^32 - 1 points per frame; got {n}")
    dev = z.device
    col = torch.floor(u)
    row = torch.floor(v)
    valid = (z > near) & (z < max_depth) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    hw = height * width
    # one canvas per frame plus a trash cell that catches every dropped point
    cell = torch.where(valid, row * width + col, torch.full_like(col, hw)).long()
    cell += torch.arange(F, device=dev).unsqueeze(1) * (hw + 1)
    ids = torch.arange(n, device=dev).expand(F, n)
    key = pack_depth_keys(torch.where(valid, z, torch.ones_like(z)), ids, valid)
    canvas = torch.full((F * (hw + 1),), _INT64_MAX, dtype=torch.int64, device=dev)
    canvas.scatter_reduce_(0, cell.reshape(-1), key.reshape(-1), reduce="amin")
    canvas = canvas.view(F, hw + 1)[:, :hw]
    empty = canvas == _INT64_MAX
    index = torch.bitwise_and(canvas, 0xFFFFFFFF).masked_fill_(empty, -1)
    depth = torch.bitwise_right_shift(canvas, 32).to(torch.int32).view(torch.float32)
    depth = depth.masked_fill(empty, 0.0)
    return ZBuffer(index.view(F, height, width), depth.view(F, height, width), u, v, z)
