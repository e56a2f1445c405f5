"""Bilinear image sampling at image coordinates, batched over frames, on any device.

Convention: pixel (row r, column c) holds the value at its centre ``(u, v) = (c + 0.5, r + 0.5)``
(``align_corners=False`` semantics, the library convention), so the four taps of a sample at
``(u, v)`` are the pixels around ``(u - 0.5, v - 0.5)`` in index space. A sample is *inside* only when
all four taps lie in the image (no extrapolation, no border padding) and, when a validity mask is
given, all four taps are valid — so that samples never blend across the image border or across
invalid pixels (e.g. depth edges next to holes).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_bilinear"]


def sample_bilinear(image: Tensor, u: Tensor, v: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sample (F,C,H,W) images at (F,N) image coordinates.

    Args:
        image: (F,C,H,W) float.
        u, v: (F,N) image coordinates (u along the columns, v along the rows; pixel centres at +0.5).
        valid: optional (F,H,W) bool; a sample with an invalid tap is not inside.

    Returns:
        ``(values, inside)``: (F,C,N) bilinear samples (0 where not inside) and (F,N) bool.
    """
    F, C, H, W = image.shape
    x = u - 0.5
    y = v - 0.5
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < W) & (y0 + 1 < H)  # False for NaN coordinates too
    fx = torch.where(inside, x - x0, torch.zeros_like(x)).to(image.dtype)
    fy = torch.where(inside, y - y0, torch.zeros_like(y)).to(image.dtype)
    i00 = torch.where(inside, y0 * W + x0, torch.zeros_like(x0)).long()  # (F,N)
    flat = image.reshape(F, C, H * W)

    def tap(offset: int) -> Tensor:
        return torch.gather(flat, 2, (i00 + offset).unsqueeze(1).expand(F, C, -1))

    a, b, c, d = tap(0), tap(1), tap(W), tap(W + 1)
    fx_, fy_ = fx.unsqueeze(1), fy.unsqueeze(1)
    top = torch.lerp(a, b, fx_)
    bottom = torch.lerp(c, d, fx_)
    values = torch.lerp(top, bottom, fy_)
    if valid is not None:
        vflat = valid.reshape(F, H * W)
        for offset in (0, 1, W, W + 1):
            inside &= torch.gather(vflat, 1, i00 + offset)
    values = values.masked_fill(~inside.unsqueeze(1), 0.0)
    return values, inside
