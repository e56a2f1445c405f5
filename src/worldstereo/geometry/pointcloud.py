"""Coloured point clouds in world coordinates."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..devices import check_device

from ..io.errors import InputFileError

from ..io.ply import read_ply, write_ply

__all__ = ["PointCloud"]

logger = logging.getLogger(__name__)

_DEFAULT_GREY = 0.5


def _to_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


@dataclass
class PointCloud:
    """A coloured point cloud.

    Attributes:
        xyz: (N,3) float32 world coordinates (scene units).
        rgb: (N,3) float32 colours in [0,1] (uint8 input is rescaled by 1/255 on construction).
        normals: optional (N,3) float32 normals (not necessarily unit length on input).

    Construction validates shapes, dtypes, devices and finiteness and raises ``ValueError`` /
    ``TypeError`` naming the offending field. An empty cloud (N = 0) is valid; operations that need
    points say so.
    """

    xyz: Tensor
    rgb: Tensor
    normals: Tensor | None = None

    def __post_init__(self) -> None:
        xyz = _to_tensor(self.xyz, "xyz")
        rgb = _to_tensor(self.rgb, "rgb")
        if xyz.dim() != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz: expected shape (N,3), got {tuple(xyz.shape)}")
        if not xyz.is_floating_point():
            raise TypeError(f"xyz: expected a floating tensor, got {xyz.dtype}")
        n = xyz.shape[0]
        if rgb.dim() != 2 or rgb.shape[1] != 3 or rgb.shape[0] != n:
            raise ValueError(f"rgb: expected shape ({n},3) matching xyz, got {tuple(rgb.shape)}")
        if rgb.device != xyz.device:
            raise ValueError(f"rgb: on device {rgb.device}, but xyz is on {xyz.device}")
        if rgb.dtype == torch.uint8:
            rgb = rgb.float() / 255.0
        elif not rgb.is_floating_point():
            raise TypeError(f"rgb: expected float in [0,1] or uint8, got {rgb.dtype}")
        xyz = xyz.float()
        rgb = rgb.float()
        if n and not bool(torch.isfinite(xyz).all()):
            raise ValueError("xyz: contains NaN or infinite coordinates")
        if n and not bool(((rgb >= 0) & (rgb <= 1)).all()):
            raise ValueError("rgb: colours must be finite and lie in [0,1]")
        normals = self.normals
        if normals is not None:
            normals = _to_tensor(normals, "normals")
            if normals.dim() != 2 or normals.shape != (n, 3):
                raise ValueError(f"normals: expected shape ({n},3) matching xyz, got {tuple(normals.shape)}")
            if normals.device != xyz.device:
                raise ValueError(f"normals: on device {normals.device}, but xyz is on {xyz.device}")
            if not normals.is_floating_point():
                raise TypeError(f"normals: expected a floating tensor, got {normals.dtype}")
            normals = normals.float()
            if n and not bool(torch.isfinite(normals).all()):
                raise ValueError("normals: contain NaN or infinite values")
        self.xyz, self.rgb, self.normals = xyz, rgb, normals

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def __repr__(self) -> str:
        return f"PointCloud(n={len(self)}, normals={self.normals is not None}, device={self.device})"

    @property
    def device(self) -> torch.device:
        return self.xyz.device

    @property
    def is_empty(self) -> bool:
        return len(self) == 0

    @classmethod
    def empty(cls, device: torch.device | str | None = None) -> "PointCloud":
        """A cloud with no points."""
        return cls(torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device))

    def to(self, device: torch.device | str | None) -> "PointCloud":
        """Copy of the cloud on ``device`` (self when already there)."""
        if device is None:
            return self
        if check_device(device, "device") == self.device:
            return self
        return PointCloud(self.xyz.to(device), self.rgb.to(device),
                          None if self.normals is None else self.normals.to(device))

    def _select(self, idx: Tensor) -> "PointCloud":
        return PointCloud(self.xyz[idx], self.rgb[idx], None if self.normals is None else self.normals[idx])

    def __getitem__(self, idx: Tensor | slice | int) -> "PointCloud":
        """Subset by index tensor, boolean mask or slice (an int gives a 1-point cloud).

        Raises:
            IndexError: an int out of range; TypeError: an index of another type.
        """
        n = len(self)
        if isinstance(idx, (int, np.integer)) and not isinstance(idx, bool):
            i = int(idx)
            if not -n <= i < n:
                raise IndexError(f"idx: {i} out of range for a cloud of {n} points")
            idx = slice(i % n, i % n + 1)
        elif not isinstance(idx, (slice, Tensor, np.ndarray, list, tuple)):
            raise TypeError(f"idx: expected an int, a slice, integer indices or a bool mask, got {type(idx).__name__}")
        try:
            return self._select(idx)  # type: ignore[arg-type]
        except (IndexError, RuntimeError, TypeError, ValueError) as exc:
            raise IndexError(f"idx: cannot select points of a cloud of {n} with it ({' '.join(str(exc).split())[:120]})") \
                from None

    # ------------------------------------------------------------------ combining
    @classmethod
    def cat(cls, clouds: Sequence["PointCloud"]) -> "PointCloud":
        """Concatenate clouds (in order). Normals are kept only when every cloud has them.

        Raises:
            ValueError: ``clouds`` is empty or the clouds live on different devices.
        """
        clouds = list(clouds)
        if not clouds:
            raise ValueError("clouds: expected at least one PointCloud, got an empty sequence")
        for i, c in enumerate(clouds):
            if not isinstance(c, PointCloud):
                raise TypeError(f"clouds[{i}]: expected a PointCloud, got {type(c).__name__}")
            if c.device != clouds[0].device:
                raise ValueError(f"clouds[{i}]: on device {c.device}, expected {clouds[0].device}")
        with_normals = all(c.normals is not None for c in clouds)
        if not with_normals and any(c.normals is not None for c in clouds):
            logger.debug("PointCloud.cat: dropping normals (not every cloud has them)")
        return cls(torch.cat([c.xyz for c in clouds]), torch.cat([c.rgb for c in clouds]),
                   torch.cat([c.normals for c in clouds]) if with_normals else None)  # type: ignore[misc]

    def merge(self, *others: "PointCloud") -> "PointCloud":
        """This cloud followed by ``others`` (see :meth:`cat`)."""
        return PointCloud.cat([self, *others])

    # ------------------------------------------------------------------ reduction
    def voxel_down_sample(self, voxel_size: float) -> "PointCloud":
        """Average points, colours (and normals, re-normalised) per cubic voxel of edge ``voxel_size``.

        Voxels are aligned to the world origin (voxel index = floor(xyz / voxel_size)). The output
        is ordered by voxel index (lexicographic x, y, z).
        """
        if isinstance(voxel_size, bool) or not isinstance(voxel_size, (int, float)) or not np.isfinite(voxel_size) \
                or voxel_size <= 0:
            raise ValueError(f"voxel_size: expected a positive finite number, got {voxel_size!r}")
        if self.is_empty:
            return self
        q = torch.floor(self.xyz.double() / float(voxel_size))
        if float(q.abs().max()) >= 2.0**62:
            raise ValueError(f"voxel_size: {voxel_size!r} is too small for coordinates up to "
                             f"{float(self.xyz.abs().max()):.4g} (voxel indices overflow 64-bit integers)")
        vox = q.long()
        vmin = vox.min(dim=0).values
        vox = vox - vmin
        ext = vox.max(dim=0).values + 1
        if float(ext[0]) * float(ext[1]) * float(ext[2]) < 2**62:
            key = (vox[:, 0] * ext[1] + vox[:, 1]) * ext[2] + vox[:, 2]
            _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        else:  # astronomically sparse: fall back to row-unique
            _, inverse, counts = torch.unique(vox, dim=0, return_inverse=True, return_counts=True)
        m = counts.shape[0]
        cnt = counts.to(torch.float64).unsqueeze(1)

        def mean(v: Tensor) -> Tensor:
            acc = torch.zeros(m, v.shape[1], dtype=torch.float64, device=v.device)
            acc.index_add_(0, inverse, v.double())
            return (acc / cnt).float()

        normals = None
        if self.normals is not None:
            normals = mean(self.normals)
            normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return PointCloud(mean(self.xyz), mean(self.rgb).clamp(0, 1), normals)

    def random_down_sample(self, n: int, generator: torch.Generator | None = None) -> "PointCloud":
        """Keep ``n`` points chosen uniformly without replacement (original order preserved).

        Returns the cloud itself when it has ``<= n`` points.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        if len(self) <= n:
            return self
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(len(self), generator=generator, device=gen_device)[: int(n)]
        idx = torch.sort(idx).values.to(self.device)
        return self._select(idx)

    def crop(self, min_xyz: Sequence[float] | Tensor, max_xyz: Sequence[float] | Tensor) -> "PointCloud":
        """Points inside the axis-aligned box ``min_xyz <= xyz <= max_xyz`` (inclusive)."""
        bounds = []
        for name, v in (("min_xyz", min_xyz), ("max_xyz", max_xyz)):
            try:
                t = torch.as_tensor(v, dtype=torch.float32, device=self.device).reshape(-1)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"{name}: expected 3 numbers, got {type(v).__name__}") from None
            if t.numel() != 3:
                raise ValueError(f"{name}: expected 3 values, got {t.numel()}")
            if bool(torch.isnan(t).any()):
                raise ValueError(f"{name}: contains NaN")
            bounds.append(t)
        lo, hi = bounds
        if bool((lo > hi).any()):
            raise ValueError(f"min_xyz/max_xyz: min {lo.tolist()} exceeds max {hi.tolist()}")
        inside = ((self.xyz >= lo) & (self.xyz <= hi)).all(dim=1)
        return self._select(inside)

    # ------------------------------------------------------------------ conversion / files
    @classmethod
    def from_tensor(cls, points: Tensor | np.ndarray, colors: Tensor | np.ndarray | None = None) -> "PointCloud":
        """Build a cloud from an (N,3) xyz or (N,6) xyz+rgb array.

        Colours (columns 3-5, or ``colors``) are in [0,1]; 8-bit colours are rescaled: a uint8
        ``colors`` tensor always, and float colours whose maximum exceeds 1 when all lie in
        [0,255]. Without colours the points are mid-grey (0.5).

        Raises:
            ValueError: wrong shape, NaN coordinates, or colours outside [0,1] / [0,255].
        """
        p = _to_tensor(points, "points")
        if p.dim() != 2 or p.shape[1] not in (3, 6):
            raise ValueError(f"points: expected shape (N,3) or (N,6), got {tuple(p.shape)}")
        if p.dtype == torch.uint8 or not (p.is_floating_point() or p.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"points: expected a float tensor, got {p.dtype}")
        xyz = p[:, :3].float()
        if colors is not None:
            if p.shape[1] == 6:
                raise ValueError("colors: given together with (N,6) points; pass one or the other")
            rgb = _to_tensor(colors, "colors").to(p.device)
        elif p.shape[1] == 6:
            rgb = p[:, 3:]
        else:
            rgb = torch.full_like(xyz, _DEFAULT_GREY)
        if rgb.shape != xyz.shape:
            raise ValueError(f"colors: expected shape ({xyz.shape[0]},3), got {tuple(rgb.shape)}")
        if rgb.dtype == torch.uint8:
            rgb = rgb.float() / 255.0
        else:
            rgb = rgb.float()
            if rgb.numel() and not bool(torch.isfinite(rgb).all()):
                raise ValueError("points: colour columns contain NaN or infinite values")
            if rgb.numel() and float(rgb.max()) > 1.0:
                if float(rgb.min()) < 0 or float(rgb.max()) > 255:
                    raise ValueError("points: colours must lie in [0,1] (or [0,255] for 8-bit colours)")
                rgb = rgb / 255.0
        return cls(xyz, rgb)

    def to_tensor(self) -> Tensor:
        """(N,6) xyz + rgb in [0,1]."""
        return torch.cat([self.xyz, self.rgb], dim=1)

    def save_ply(self, path: str | os.PathLike[str]) -> None:
        """Write a binary little-endian PLY (xyz float32, uchar colours, normals if any), atomically."""
        write_ply(path, self.xyz.detach().cpu().numpy(), self.rgb.detach().cpu().numpy(),
                  None if self.normals is None else self.normals.detach().cpu().numpy())

    @classmethod
    def load_ply(cls, path: str | os.PathLike[str], device: torch.device | str | None = None) -> "PointCloud":
        """Read a PLY file (see :func:`worldstereo.io.ply.read_ply`).

        Integer colours are divided by 255 (uint16 by 65535) and must fit that range; float colours
        must lie in [0,1] — float colours in [0,255] are divided by 255 with a warning; anything
        else is refused (``InputFileError``), never wrapped or clipped. Files without colours give
        mid-grey points.
        """

        data = read_ply(path)
        with np.errstate(over="ignore", invalid="ignore"):
            xyz_np = np.ascontiguousarray(data["xyz"], dtype=np.float32)
        if xyz_np.size and not np.isfinite(xyz_np).all():
            raise InputFileError(path, "coordinates are NaN, infinite or beyond the float32 range", field="x/y/z")
        xyz = torch.from_numpy(xyz_np)
        if "rgb" in data:
            rgb = torch.from_numpy(_ply_colors_to_unit(data["rgb"], path))
        else:
            rgb = torch.full_like(xyz, _DEFAULT_GREY)
        normals = torch.from_numpy(data["normals"].astype(np.float32)) if "normals" in data else None
        try:
            cloud = cls(xyz, rgb, normals)
        except (ValueError, TypeError) as exc:
            raise InputFileError(path, str(exc)) from exc
        return cloud.to(device)


def _ply_colors_to_unit(c: np.ndarray, path: Any) -> np.ndarray:
    """Colours as stored in a PLY file -> float32 (N,3) in [0,1] (see :meth:`PointCloud.load_ply`)."""
    if c.size == 0:
        return c.astype(np.float32)
    if np.issubdtype(c.dtype, np.integer):
        top = 65535.0 if c.dtype.itemsize == 2 else 255.0
        lo, hi = int(c.min()), int(c.max())
        if lo < 0 or hi > top:
            raise InputFileError(path, f"integer colours in [{lo}, {hi}]; expected values in [0, {top:.0f}]",
                                 field="red/green/blue")
        return (c.astype(np.float64) / top).astype(np.float32)
    f = c.astype(np.float64)
    if not np.isfinite(f).all():
        raise InputFileError(path, "colours contain NaN or infinite values", field="red/green/blue")
    lo, hi = float(f.min()), float(f.max())
    if lo >= -1e-3 and hi <= 1.0 + 1e-3:
        return np.clip(f, 0.0, 1.0).astype(np.float32)
    if lo >= 0 and hi <= 255.0:
        logger.warning("%s: float colours in [%.4g, %.4g] read as 0-255 values (divided by 255)", path, lo, hi)
        return (f / 255.0).astype(np.float32)
    raise InputFileError(path, f"float colours in [{lo:.4g}, {hi:.4g}]; expected values in [0, 1] (or 0-255)",
                         field="red/green/blue")
