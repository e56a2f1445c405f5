"""User-supplied depth maps: loading (.npy / .npz / 16-bit PNG), validation, and a fixed-depth estimator."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldstereo.depth.base import DepthPrediction, normalize_median_depth
from worldstereo.io.atomic import atomic_write
from worldstereo.io.errors import InputFileError, reading
from worldstereo.io.files import check_input_file, load_npy, load_npz
from worldstereo.io.image import open_image_file

__all__ = ["load_depth", "validate_depth", "save_depth_png16", "UserDepth", "DEPTH_FILE_SUFFIXES"]

logger = logging.getLogger(__name__)

#: File suffixes :func:`load_depth` understands.
DEPTH_FILE_SUFFIXES = (".npy", ".npz", ".png")

#: Default scale of 16-bit PNG depth: stored values are millimetres -> metres.
PNG16_DEFAULT_SCALE = 1.0 / 1000.0
#: Usable z-depth range in scene units: the point renderer draws points in (1e-4, 1e12) (its near
#: and far limits, :mod:`worldstereo.geometry.render`); a depth map beyond it would render nothing.
MIN_USABLE_DEPTH = 1e-4
MAX_DEPTH = 1e12


def validate_depth(
    depth: Tensor | np.ndarray,
    height: int | None = None,
    width: int | None = None,
    *,
    name: str = "depth",
) -> Tensor:
    """Check a z-depth map and return it as float32 ``(H, W)``.

    Zero marks invalid pixels. ``(1, H, W)`` and ``(1, 1, H, W)`` are squeezed.

    Args:
        depth: depth map, tensor or numpy array.
        height, width: expected size (the image's), or None to skip the check.
        name: parameter name for error messages.

    Raises:
        TypeError: not a tensor / array, or not a real dtype.
        ValueError: wrong shape or size, NaN/inf values (set them to 0 to mark them invalid),
            negative values, no positive value at all, values above :data:`MAX_DEPTH` or none
            above :data:`MIN_USABLE_DEPTH` (a wrong scale: nothing would be rendered).
    """
    if isinstance(depth, np.ndarray):
        if depth.dtype.kind not in "uif":
            raise TypeError(f"{name}: expected a numeric depth array, got dtype {depth.dtype}")
        depth = torch.from_numpy(np.ascontiguousarray(depth))
    if not isinstance(depth, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(depth).__name__}")
    if depth.dtype == torch.bool or depth.is_complex():
        raise TypeError(f"{name}: expected a real-valued depth map, got dtype {depth.dtype}")
    shape = tuple(depth.shape)
    d = depth
    while d.ndim > 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"{name}: expected a depth map (H,W), got shape {shape}")
    if height is not None and width is not None and tuple(d.shape) != (height, width):
        raise ValueError(
            f"{name}: size {tuple(d.shape)} does not match the image size ({height}, {width}); "
            "the depth map must have the (height, width) of the image it belongs to"
        )
    d = d.float()
    finite = torch.isfinite(d)
    if not bool(finite.all()):
        n = int((~finite).sum())
        raise ValueError(f"{name}: {n} NaN or infinite values; set invalid pixels to 0 instead")
    if bool((d < 0).any()):
        raise ValueError(f"{name}: negative depth values (min {float(d.min()):.4g}); depth must be >= 0 (0 = invalid)")
    if not bool((d > 0).any()):
        raise ValueError(f"{name}: all depth values are zero (no valid pixel)")
    top = float(d.max())
    if top > MAX_DEPTH:
        raise ValueError(f"{name}: depth values up to {top:.4g}; expected z-depth in scene units below {MAX_DEPTH:g} "
                         f"(is the scale right?)")
    if top <= MIN_USABLE_DEPTH:
        raise ValueError(f"{name}: every depth value is at most {top:.4g}; expected z-depth in scene units above "
                         f"{MIN_USABLE_DEPTH:g} (is the scale right?)")
    return d.contiguous()


def load_depth(path: str | os.PathLike[str], scale: float | None = None, *, name: str = "depth") -> Tensor:
    """Load a z-depth map from a file.

    Supported files:
        * ``.npy``: a 2-D array (or ``(1, H, W)``), float or integer;
        * ``.npz``: the array named ``depth`` (or the only array in the file);
        * ``.png``: a 16-bit (or 8-bit) single-channel PNG of integers.

    Args:
        path: depth file.
        scale: multiplier from stored values to scene units. Default: 1.0 for ``.npy``/``.npz``,
            1/1000 for PNG (millimetres -> metres, the usual convention of 16-bit depth PNGs).
        name: parameter name for error messages.

    Returns:
        float32 ``(H, W)`` z-depth; 0 = invalid.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputFileError: (a ``ValueError``) unsupported extension, unreadable file, or invalid content
            (see :func:`validate_depth`); the message names the file.
        ValueError: ``scale`` is not a positive finite number.
    """
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not (np.isfinite(scale) and scale > 0)):
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    p = check_input_file(path, name, "depth file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(p, name)
        default_scale = 1.0
    elif suffix == ".npz":
        arrays = load_npz(p, name)
        if "depth" in arrays:
            arr = arrays["depth"]
        elif len(arrays) == 1:
            arr = next(iter(arrays.values()))
        else:
            raise InputFileError(p, f"has arrays {sorted(arrays)}; expected one named 'depth' (or a single array)",
                                 option=name)
        default_scale = 1.0
    elif suffix == ".png":
        with open_image_file(p, name) as img:
            if img.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                raise InputFileError(p, f"PNG depth must be single-channel 16-bit (or 8-bit), got mode {img.mode!r}",
                                     option=name)
            with reading(p, "PNG depth file"):
                img.load()
                arr = np.asarray(img).astype(np.float64)
        default_scale = PNG16_DEFAULT_SCALE
    else:
        raise InputFileError(p, f"unsupported depth file type; expected one of {DEPTH_FILE_SUFFIXES}", option=name)
    s = default_scale if scale is None else float(scale)
    if arr.dtype.kind not in "uif":
        raise InputFileError(p, f"holds a non-numeric array (dtype {arr.dtype}); expected float z-depth", option=name)
    with np.errstate(over="ignore"):
        scaled = arr.astype(np.float64) * s
    if scaled.size and np.isfinite(arr.astype(np.float64)).all() and np.abs(scaled).max() > np.finfo(np.float32).max:
        raise InputFileError(p, f"depth values up to {np.abs(scaled).max():.4g} (scale {s:g}) overflow float32",
                             option=name)
    try:
        depth = validate_depth(scaled, name=name)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        reason = reason[len(name) + 2:] if reason.startswith(f"{name}: ") else reason
        raise InputFileError(p, reason, option=name) from None
    logger.debug("loaded depth %s from %s (scale %g)", tuple(depth.shape), p, s)
    return depth


def save_depth_png16(path: str | os.PathLike[str], depth: Tensor, scale: float = PNG16_DEFAULT_SCALE) -> Path:
    """Write z-depth ``(H, W)`` as a 16-bit PNG storing ``round(depth / scale)`` (0 = invalid), atomically.

    Raises:
        ValueError: values that do not fit in 16 bits at this ``scale``.
    """
    from PIL import Image


    d = validate_depth(depth).double().cpu().numpy()
    q = np.rint(d / scale)
    if q.max() > 65535:
        raise ValueError(f"depth: max {d.max():.4g} exceeds 16 bits at scale {scale}; use a larger scale")
    img = Image.fromarray(q.astype(np.uint16))
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


class UserDepth:
    """A :class:`~worldstereo.depth.base.DepthEstimator` that returns a depth map supplied by the user.

    Args:
        depth: ``(H, W)`` z-depth (tensor, array or file path for :func:`load_depth`); 0 = invalid.
        is_metric: whether the values are metres (default True: user depth is taken as given, in
            scene units).
        normalize: rescale so that the median valid depth is 1.0 (then ``is_metric`` is False).
        K: optional ``(3, 3)`` intrinsics of the image.
        scale: file scale for :func:`load_depth` when ``depth`` is a path.
    """

    def __init__(
        self,
        depth: Tensor | np.ndarray | str | os.PathLike[str],
        *,
        is_metric: bool = True,
        normalize: bool = False,
        K: Tensor | None = None,
        scale: float | None = None,
    ) -> None:
        if isinstance(depth, (str, os.PathLike)):
            self.depth = load_depth(depth, scale)
        else:
            self.depth = validate_depth(depth)
        if normalize:
            self.depth = normalize_median_depth(self.depth, self.depth > 0)
        self.is_metric = bool(is_metric) and not normalize
        if K is not None and tuple(K.shape) != (3, 3):
            raise ValueError(f"K: expected (3,3) intrinsics, got shape {tuple(K.shape)}")
        self.K = K

    def __call__(self, image: Tensor) -> DepthPrediction:
        """Return the stored depth; its size must equal the image's ``(H, W)`` (``image`` is (3,H,W))."""
        if not isinstance(image, Tensor) or image.ndim != 3:
            raise ValueError(f"image: expected (3,H,W), got {getattr(image, 'shape', type(image).__name__)}")
        h, w = int(image.shape[-2]), int(image.shape[-1])
        depth = validate_depth(self.depth, h, w).to(image.device)
        return DepthPrediction(depth=depth, valid_mask=depth > 0, is_metric=self.is_metric,
                               K=None if self.K is None else self.K.to(image.device).float())
