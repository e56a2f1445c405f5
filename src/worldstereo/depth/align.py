"""Scale alignment between depth maps (memory updates, reconstruction)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["align_depth_scale"]


def align_depth_scale(
    depth: Tensor,
    reference_depth: Tensor,
    mask: Tensor | None = None,
    *,
    method: Literal["median", "least_squares", "robust"] = "robust",
    min_pixels: int = 16,
) -> float:
    """Scale ``s`` such that ``s * depth`` best matches ``reference_depth`` on overlapping valid pixels.

    Valid pixels: both depths finite and > 0, and ``mask`` True (when given).

    Args:
        depth: ``(..., H, W)`` depth to align (e.g. a new relative estimate).
        reference_depth: same shape, target scale (e.g. depth rendered from the geometric memory).
        mask: optional bool, same shape, pixels allowed to take part.
        method: ``"median"``: median of ``reference / depth``; ``"least_squares"``:
            ``argmin_s sum (s d - r)^2 = sum(d r) / sum(d d)``; ``"robust"`` (default): least squares on
            the pixels whose ratio lies within a factor 1.5 of the median ratio (falls back to the median
            when fewer than ``min_pixels`` survive).
        min_pixels: fewer overlapping valid pixels than this -> ``ValueError``.

    Returns:
        The scale as a Python float (> 0).

    Raises:
        ValueError: shape mismatch, unknown method or too few overlapping valid pixels.
    """
    if depth.shape != reference_depth.shape:
        raise ValueError(
            f"reference_depth: shape {tuple(reference_depth.shape)} does not match depth {tuple(depth.shape)}"
        )
    if method not in ("median", "least_squares", "robust"):
        raise ValueError(f"method: expected 'median', 'least_squares' or 'robust', got {method!r}")
    d = depth.detach().double()
    r = reference_depth.detach().to(d.device).double()
    valid = torch.isfinite(d) & torch.isfinite(r) & (d > 0) & (r > 0)
    if mask is not None:
        if mask.shape != depth.shape:
            raise ValueError(f"mask: shape {tuple(mask.shape)} does not match depth {tuple(depth.shape)}")
        valid &= mask.to(d.device).bool()
    n = int(valid.sum())
    if n < min_pixels:
        raise ValueError(f"depth/reference_depth: only {n} overlapping valid pixels, need at least {min_pixels}")
    dv, rv = d[valid], r[valid]
    ratio = rv / dv
    med = ratio.median()
    if method == "median":
        return float(med)
    if method == "robust":
        keep = (ratio > med / 1.5) & (ratio < med * 1.5)
        if int(keep.sum()) < min_pixels:
            return float(med)
        dv, rv = dv[keep], rv[keep]
    return float((dv * rv).sum() / (dv * dv).sum())
