"""Depth estimator protocol and prediction container.

Conventions (design.md): depth is **z-depth** (distance along the camera's +z axis, OpenCV camera
axes), in scene units. Metric estimators give metres. Relative estimators are normalised so that the
median depth of the valid pixels of the image is 1.0. Invalid pixels (sky, failed predictions) have
``valid_mask == False`` and depth 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["DepthEstimator", "DepthPrediction", "normalize_median_depth"]


@dataclass
class DepthPrediction:
    """Output of a :class:`DepthEstimator` for one image of size ``(H, W)``.

    Attributes:
        depth: ``(H, W)`` float32 z-depth in scene units; 0 where invalid. Relative predictions are
            normalised so that the median over valid pixels is 1.0.
        valid_mask: ``(H, W)`` bool, True where ``depth`` is usable.
        is_metric: True when ``depth`` is in metres (metric estimator or metric user depth).
        K: ``(3, 3)`` pixel intrinsics of the ``(H, W)`` image when the estimator predicts them, else None.
    """

    depth: Tensor
    valid_mask: Tensor
    is_metric: bool
    K: Tensor | None = None

    def __post_init__(self) -> None:
        if self.depth.ndim != 2:
            raise ValueError(f"depth: expected (H,W), got shape {tuple(self.depth.shape)}")
        if self.valid_mask.shape != self.depth.shape:
            raise ValueError(
                f"valid_mask: shape {tuple(self.valid_mask.shape)} does not match depth {tuple(self.depth.shape)}"
            )
        if self.K is not None and tuple(self.K.shape) != (3, 3):
            raise ValueError(f"K: expected (3,3), got shape {tuple(self.K.shape)}")

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])

    def to(self, device: torch.device | str | None = None) -> "DepthPrediction":
        """Move all tensors to ``device``."""
        return DepthPrediction(
            depth=self.depth.to(device),
            valid_mask=self.valid_mask.to(device),
            is_metric=self.is_metric,
            K=None if self.K is None else self.K.to(device),
        )


@runtime_checkable
class DepthEstimator(Protocol):
    """Anything that maps an image ``(3, H, W)`` float in [0, 1] to a :class:`DepthPrediction` of size (H, W)."""

    def __call__(self, image: Tensor) -> DepthPrediction:  # pragma: no cover - protocol
        ...


def normalize_median_depth(depth: Tensor, valid_mask: Tensor) -> Tensor:
    """Scale ``depth`` so that the median over ``valid_mask`` is 1.0; invalid pixels become 0.

    Args:
        depth: ``(H, W)`` positive depth.
        valid_mask: ``(H, W)`` bool.

    Raises:
        ValueError: no valid pixel.
    """
    if not bool(valid_mask.any()):
        raise ValueError("depth: no valid pixel to normalise (all depth values are zero or invalid)")
    med = depth[valid_mask].median()
    out = torch.where(valid_mask, depth / med, torch.zeros_like(depth))
    return out
