"""Shared argument handling of the memories: per-frame cameras as float64 batches."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def per_frame_cameras(w2c: Any, K: Any, n: int) -> tuple[Tensor, Tensor]:
    """``w2c`` (n,4,4) or (4,4) and ``K`` (n,3,3) or (3,3) as float64 ``(n,4,4)``, ``(n,3,3)``.

    Raises:
        ValueError: shapes that do not give one camera per frame, naming ``w2c`` / ``K``.
    """
    w = _as_float64(w2c, "w2c")
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.shape != (n, 4, 4):
        raise ValueError(f"w2c: expected ({n},4,4) world-to-camera matrices (one per frame), got {tuple(w.shape)}")
    k = _as_float64(K, "K")
    if k.ndim == 2:
        k = k.unsqueeze(0).expand(n, 3, 3)
    if k.shape != (n, 3, 3):
        raise ValueError(f"K: expected ({n},3,3) or (3,3) intrinsics, got {tuple(k.shape)}")
    if not (torch.isfinite(w).all() and torch.isfinite(k).all()):
        raise ValueError("w2c/K: contain NaN or infinite values")
    return w, k


def _as_float64(x: Any, name: str) -> Tensor:
    try:
        return torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name}: expected a tensor or array of numbers, got {type(x).__name__}") from exc
