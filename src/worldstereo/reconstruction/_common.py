"""Private helpers shared by the reconstruction modules: the one conversion of inputs at the public
boundaries, and the cameras.

Conventions (every module of the package): ``w2c`` is world-to-camera 4x4 with OpenCV axes (x right,
y down, z forward); ``K`` is a 3x3 pixel intrinsic matrix of the image it describes; image coordinates
are ``(u, v)`` with ``u`` along the columns and ``v`` along the rows, and the centre of pixel (row r,
column c) is at ``(u, v) = (c + 0.5, r + 0.5)`` — the convention of the whole library and of COLMAP /
nerfstudio. Lifting, projection, z-buffering, bilinear sampling and rendering are those of
:mod:`worldstereo.geometry` (``lifting.unproject_depth``, ``projection``, ``sampling``, ``render``);
the reconstruction code runs in float32 PyTorch on the device of its inputs (numpy inputs: CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CameraArrays", "camera_arrays", "frames_per_chunk", "median", "to_numpy", "to_tensor"]


def to_tensor(x: Any, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The conversion at a public boundary: tensors are detached and moved / cast (no copy when they
    already match), arrays and nested lists are converted. ``device=None`` keeps a tensor's device
    (CPU for everything else)."""
    if isinstance(x, Tensor):
        return x.detach().to(device=device if device is not None else x.device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A NumPy array of ``dtype`` (on the CPU) for the file writers and the CPU-only libraries
    (scikit-image, trimesh, SciPy); half-precision tensors are widened first."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def frames_per_chunk(height: int, width: int, pixels: int) -> int:
    """How many frames of ``height`` x ``width`` are processed together when a chunk may hold
    ``pixels`` pixels (at least one): the memory bound of the streaming loops."""
    return max(1, pixels // (height * width))


def median(x: Tensor, *, is_sorted: bool = False) -> Tensor:
    """Median of a non-empty 1-D tensor, averaging the two middle values for an even count (NumPy's
    definition; ``torch.median`` returns the lower one). ``is_sorted``: ``x`` is in increasing order."""
    n = x.numel()
    if is_sorted:
        return x[(n - 1) // 2] if n % 2 else 0.5 * (x[n // 2 - 1] + x[n // 2])
    lo = torch.kthvalue(x, (n + 1) // 2).values
    if n % 2:
        return lo
    return 0.5 * (lo + torch.kthvalue(x, n // 2 + 1).values)


@dataclass(frozen=True)
class CameraArrays:
    """Tensor view of a camera trajectory (what the reconstruction modules work with).

    Attributes:
        w2c: (N,4,4) float64 world-to-camera, OpenCV axes.
        K: (N,3,3) float64 pixel intrinsics of an image of size ``height`` x ``width``.
        height, width: image size ``K`` refers to.

    The matrices are float64 (N x 25 numbers): the exports write them at full precision, and
    projections compose ``K [R | t]`` in float64 before rounding to float32
    (:func:`worldstereo.geometry.projection.projection_matrices`). NumPy arrays are accepted and
    converted on construction.
    """

    w2c: Tensor
    K: Tensor
    height: int
    width: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "w2c", to_tensor(self.w2c, dtype=torch.float64))
        object.__setattr__(self, "K", to_tensor(self.K, dtype=torch.float64, device=self.w2c.device))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))

    def __len__(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def device(self) -> torch.device:
        return self.w2c.device

    @property
    def c2w(self) -> Tensor:
        """(N,4,4) float64 camera-to-world."""
        return torch.linalg.inv(self.w2c)

    @property
    def centers(self) -> Tensor:
        """(N,3) float64 camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str | None) -> CameraArrays:
        """The cameras on ``device``."""
        if device is None or torch.device(device) == self.device:
            return self
        return CameraArrays(self.w2c.to(device), self.K.to(device), self.height, self.width)

    def resized(self, height: int, width: int) -> CameraArrays:
        """Rescale K rows 0 / 1 to a ``height`` x ``width`` image."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return CameraArrays(self.w2c, K, int(height), int(width))

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """(w2c, K) as float64 NumPy arrays (for the file writers)."""
        return to_numpy(self.w2c), to_numpy(self.K)


def camera_arrays(trajectory: Any, *, num_frames: int | None = None, height: int | None = None,
                  width: int | None = None, name: str = "trajectory",
                  device: torch.device | str | None = None) -> CameraArrays:
    """Extract (w2c, K, height, width) from a ``CameraTrajectory`` (or any object with ``w2c``/``K``/
    ``height``/``width`` attributes, or a :class:`CameraArrays`), on ``device`` (default: the
    trajectory's).

    When ``height``/``width`` are given and differ from the trajectory's image size, ``K`` is rescaled
    to that size. Raises ``ValueError``/``TypeError`` naming ``name`` on bad input.
    """
    if isinstance(trajectory, CameraArrays):
        cams = trajectory
    else:
        if not hasattr(trajectory, "w2c"):
            raise TypeError(f"{name} must be a CameraTrajectory (with w2c, K, height, width); "
                            f"got {type(trajectory).__name__}")
        w2c = to_tensor(trajectory.w2c, dtype=torch.float64)
        if w2c.dim() == 2:
            w2c = w2c[None]
        if w2c.dim() != 3 or w2c.shape[1:] != (4, 4):
            raise ValueError(f"{name}.w2c must have shape (N,4,4); got {tuple(w2c.shape)}")
        K_raw = getattr(trajectory, "K", None)
        th = getattr(trajectory, "height", None)
        tw = getattr(trajectory, "width", None)
        if K_raw is None:
            raise ValueError(f"{name} has no intrinsics; call trajectory.with_intrinsics(...) first")
        K = to_tensor(K_raw, dtype=torch.float64, device=w2c.device)
        if K.dim() == 2:
            K = K.expand(w2c.shape[0], 3, 3)
        if K.shape != (w2c.shape[0], 3, 3):
            raise ValueError(f"{name}.K must have shape (N,3,3) or (3,3) with N={w2c.shape[0]}; "
                             f"got {tuple(K.shape)}")
        if th is None or tw is None:
            if height is None or width is None:
                raise ValueError(f"{name} has no image size (height/width); cannot interpret K")
            th, tw = height, width
        cams = CameraArrays(w2c, K.contiguous(), int(th), int(tw))
    if not bool(torch.isfinite(cams.w2c).all()) or not bool(torch.isfinite(cams.K).all()):
        raise ValueError(f"{name} contains non-finite camera values")
    if num_frames is not None and len(cams) != num_frames:
        raise ValueError(f"{name} has {len(cams)} cameras but there are {num_frames} frames")
    if height is not None and width is not None and (height, width) != (cams.height, cams.width):
        cams = cams.resized(height, width)
    return cams.to(device)
