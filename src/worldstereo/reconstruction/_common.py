"""Small private helpers shared by the reconstruction modules.

Conventions: ``w2c`` is world-to-camera 4x4 with OpenCV axes (x right, y down, z forward); ``K`` is a
3x3 pixel intrinsic matrix of the image it describes; image coordinates are ``(u, v)`` with ``u``
along the columns and ``v`` along the rows, and the centre of pixel (row r, column c) is at
``(u, v) = (c + 0.5, r + 0.5)`` — the convention of the whole library (``worldstereo.geometry.lifting``,
the point renderer, the procedural scenes) and of COLMAP / nerfstudio. So ``cx = W/2`` puts the optical
axis through the image centre, and a point projecting to ``(u, v)`` lies in pixel
``(floor(v), floor(u))``; bilinear sampling at ``(u, v)`` interpolates between the pixel centres
(``align_corners=False`` semantics). All geometry here runs in float64 NumPy; public functions
convert at their boundaries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CameraArrays",
    "as_numpy",
    "atomic_path",
    "camera_arrays",
    "project",
    "unproject",
    "zbuffer_splat",
]


def as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """Convert a tensor / array-like to a NumPy array of ``dtype`` (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


@dataclass(frozen=True)
class CameraArrays:
    """Plain NumPy view of a camera trajectory.

    Attributes:
        w2c: (N,4,4) float64 world-to-camera, OpenCV axes.
        K: (N,3,3) float64 pixel intrinsics of an image of size ``height`` x ``width``.
        height, width: image size ``K`` refers to.
    """

    w2c: np.ndarray
    K: np.ndarray
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def c2w(self) -> np.ndarray:
        """(N,4,4) camera-to-world."""
        return np.linalg.inv(self.w2c)

    @property
    def centers(self) -> np.ndarray:
        """(N,3) camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    def resized(self, height: int, width: int) -> CameraArrays:
        """Rescale K rows 0 / 1 to a ``height`` x ``width`` image."""
        K = self.K.copy()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return CameraArrays(self.w2c, K, int(height), int(width))


def camera_arrays(trajectory: Any, *, num_frames: int | None = None, height: int | None = None,
                  width: int | None = None, name: str = "trajectory") -> CameraArrays:
    """Extract (w2c, K, height, width) from a ``CameraTrajectory`` (or any object with ``w2c``/``K``/
    ``height``/``width`` attributes, or a :class:`CameraArrays`).

    When ``height``/``width`` are given and differ from the trajectory's image size, ``K`` is rescaled
    to that size. Raises ``ValueError``/``TypeError`` naming ``name`` on bad input.
    """
    if isinstance(trajectory, CameraArrays):
        cams = trajectory
    else:
        if not hasattr(trajectory, "w2c"):
            raise TypeError(f"{name} must be a CameraTrajectory (with w2c, K, height, width); "
                            f"got {type(trajectory).__name__}")
        w2c = as_numpy(trajectory.w2c)
        if w2c.ndim == 2:
            w2c = w2c[None]
        if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
            raise ValueError(f"{name}.w2c must have shape (N,4,4); got {tuple(w2c.shape)}")
        K_raw = getattr(trajectory, "K", None)
        th = getattr(trajectory, "height", None)
        tw = getattr(trajectory, "width", None)
        if K_raw is None:
            raise ValueError(f"{name} has no intrinsics; call trajectory.with_intrinsics(...) first")
        K = as_numpy(K_raw)
        if K.ndim == 2:
            K = np.broadcast_to(K, (w2c.shape[0], 3, 3)).copy()
        if K.shape != (w2c.shape[0], 3, 3):
            raise ValueError(f"{name}.K must have shape (N,3,3) or (3,3) with N={w2c.shape[0]}; "
                             f"got {tuple(K.shape)}")
        if th is None or tw is None:
            if height is None or width is None:
                raise ValueError(f"{name} has no image size (height/width); cannot interpret K")
            th, tw = height, width
        cams = CameraArrays(w2c, K, int(th), int(tw))
    if not np.all(np.isfinite(cams.w2c)) or not np.all(np.isfinite(cams.K)):
        raise ValueError(f"{name} contains non-finite camera values")
    if num_frames is not None and len(cams) != num_frames:
        raise ValueError(f"{name} has {len(cams)} cameras but there are {num_frames} frames")
    if height is not None and width is not None and (height, width) != (cams.height, cams.width):
        cams = cams.resized(height, width)
    return cams


def unproject(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lift a z-depth map to world points (pixel (r, c) is lifted at its centre ``(c + 0.5, r + 0.5)``).

    Same points as ``worldstereo.geometry.lifting.unproject_depth`` (which it calls, in float64).

    Args:
        depth: (H,W) z-depth (distance along the optical axis); <= 0 or non-finite = invalid.
        K: (3,3) pixel intrinsics; w2c: (4,4) world-to-camera (OpenCV).
        mask: optional (H,W) bool, True = use the pixel.

    Returns:
        (points (M,3) world float64, flat pixel indices (M,) into the H*W raster).
    """
    from worldstereo.geometry.lifting import unproject_depth

    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H,W); got {tuple(depth.shape)}")
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask.astype(bool)
    idx = np.flatnonzero(valid.ravel())
    if idx.size == 0:
        return np.zeros((0, 3)), idx
    # the library's lifting (pixel centres at (c + 0.5, r + 0.5)), in float64, on the valid pixels only
    d = torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float64))
    pts = unproject_depth(d, torch.from_numpy(np.asarray(K, np.float64)), torch.from_numpy(np.asarray(w2c, np.float64)))
    return pts.numpy()[idx], idx


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points (M,3) into a pinhole camera; returns (u (M,), v (M,), z (M,))."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = cam @ K.T
        u = pix[:, 0] / pix[:, 2]
        v = pix[:, 1] / pix[:, 2]
    return u, v, z


def zbuffer_splat(points: np.ndarray, K: np.ndarray, w2c: np.ndarray, height: int, width: int,
                  *, near: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-point z-buffer of points projected to the pixel that contains them (1-pixel splats).

    A point projecting to ``(u, v)`` lands in pixel (row ``floor(v)``, column ``floor(u)``), i.e. the
    pixel whose centre ``(c + 0.5, r + 0.5)`` is nearest; a point lifted from a pixel centre with
    :func:`unproject` therefore lands back in its own pixel.

    Returns:
        (zbuf (H,W) float64 with +inf where no point lands, owner (H,W) int64 index of the winning
        point or -1).
    """
    u, v, z = project(points, K, w2c)
    with np.errstate(invalid="ignore"):
        ui = np.floor(u)
        vi = np.floor(v)
    ok = (z > near) & np.isfinite(ui) & np.isfinite(vi) & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
    flat = (vi[ok] * width + ui[ok]).astype(np.int64)
    zs = z[ok]
    zbuf = np.full(height * width, np.inf)
    np.minimum.at(zbuf, flat, zs)
    owner = np.full(height * width, -1, dtype=np.int64)
    win = zs <= zbuf[flat]
    owner[flat[win]] = np.flatnonzero(ok)[win]
    return zbuf.reshape(height, width), owner.reshape(height, width)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the destination folder (created if missing); renamed onto ``path``
    on success (``worldstereo.io.atomic.atomic_write``). The temporary name keeps ``path``'s suffix so
    that format-sniffing writers (trimesh, PIL) work."""
    from worldstereo.io.atomic import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        yield tmp
