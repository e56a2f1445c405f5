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
    w = torch.as_tensor(w2c, dtype=torch.float64)
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.shape != (n, 4, 4):
        raise ValueError(f"w2c: expected ({n},4,4) world-to-camera matrices (one per frame), got {tuple(w.shape)}")
    k = torch.as_tensor(K, dtype=torch.float64)
    if k.ndim == 2:
        k = k.unsqueeze(0).expand(n, 3, 3)
    if k.shape != (n, 3, 3):
        raise ValueError(f"K: expected ({n},3,3) or (3,3) intrinsics, got {tuple(k.shape)}")
    return w, k
