"""Render coverage: the share of pixels a point-cloud render covers, per frame.

Coverage tells whether a render can steer the model: the ControlNet branch follows the geometry it
is shown, and a frame whose render is mostly holes gives it nothing to follow (typically the camera
flew through the scene or far away from it because the trajectory's scale does not match the
scene's). Every render in the library (``generate_video``, ``worldstereo render`` / ``generate`` /
``multi-view``, pre-rendered inputs) computes it here, from a hole mask, and warns through
:func:`warn_low_coverage`.

Conventions: hole masks are 1 (or True) where no point covers the pixel; coverage is
``1 - mean(hole_mask)`` over a frame's pixels, in [0, 1].
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

__all__ = ["LOW_COVERAGE_THRESHOLD", "first_low_coverage_frame", "render_coverage", "warn_low_coverage"]

logger = logging.getLogger(__name__)

#: Coverage below which a frame's render is considered unusable and a warning names the frame.
LOW_COVERAGE_THRESHOLD = 0.3


def render_coverage(hole_mask: Tensor) -> list[float]:
    """Per-frame coverage of a render.

    Args:
        hole_mask: ``(F, 1, H, W)``, ``(F, H, W)`` or ``(H, W)`` (one frame), bool or float in
            [0, 1]; 1 / True = hole. Fractional values count fractionally.

    Returns:
        ``F`` floats in [0, 1]: the share of non-hole pixels of each frame.

    Raises:
        ValueError: another shape, an empty frame, or values outside [0, 1].
    """
    if not isinstance(hole_mask, Tensor):
        raise TypeError(f"hole_mask: expected a tensor, got {type(hole_mask).__name__}")
    mask = hole_mask
    if mask.ndim == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"hole_mask: expected (F,1,H,W), got {tuple(mask.shape)}")
        mask = mask[:, 0]
    elif mask.ndim == 2:
        mask = mask[None]
    elif mask.ndim != 3:
        raise ValueError(f"hole_mask: expected (F,1,H,W), (F,H,W) or (H,W), got {tuple(hole_mask.shape)}")
    if mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise ValueError(f"hole_mask: frames must have at least one pixel, got {tuple(hole_mask.shape)}")
    holes = mask.detach().to(torch.float64)
    if holes.numel() and (float(holes.min()) < 0.0 or float(holes.max()) > 1.0):
        raise ValueError("hole_mask: expected values in [0, 1] (1 = hole)")
    return [float(c) for c in (1.0 - holes.flatten(1).mean(1)).clamp(0.0, 1.0)]


def first_low_coverage_frame(coverage: list[float], threshold: float = LOW_COVERAGE_THRESHOLD) -> int | None:
    """Index of the first frame whose coverage is below ``threshold``, or None."""
    for i, c in enumerate(coverage):
        if c < threshold:
            return i
    return None


def warn_low_coverage(coverage: list[float], threshold: float = LOW_COVERAGE_THRESHOLD, *, what: str = "render",
                      log: logging.Logger | None = None) -> int | None:
    """Log a warning naming the first frame whose coverage is below ``threshold`` and the fixes.

    Args:
        coverage: per-frame coverage (:func:`render_coverage`).
        threshold: the limit (default :data:`LOW_COVERAGE_THRESHOLD`).
        what: what was rendered, for the message (e.g. ``"render of video 2"``).
        log: logger to warn on (default this module's).

    Returns:
        The index of that frame, or None when every frame is covered enough (nothing is logged).
    """
    index = first_low_coverage_frame(coverage, threshold)
    if index is not None:
        low = min(coverage)
        (log or logger).warning(
            "%s: frame %d covers only %.0f%% of the image (below %.0f%%; lowest %.0f%% at frame %d): the point "
            "cloud leaves the view, so the model has little geometry to follow there. Fit the trajectory to the "
            "scene (CameraTrajectory.fit_to_scene / --fit-trajectory), shorten it (e.g. --preset-arg distance=...), "
            "or check the depth scale (trajectory translations and depth must be in the same units)",
            what, index, 100.0 * coverage[index], 100.0 * threshold, 100.0 * low, coverage.index(low))
    return index
