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
import torch.nn.functional as F
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

    The interpolation is ``torch.nn.functional.grid_sample(..., align_corners=False)``, whose
    normalised coordinates round-trip (u, v) through ``2u / W - 1``: in float32 the sample positions
    carry an error of about ``W * 1e-7`` pixels.
    """
    B, C, H, W = image.shape
    x0 = torch.floor(u - 0.5)
    y0 = torch.floor(v - 0.5)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < W) & (y0 + 1 < H)  # False for NaN coordinates too
    if valid is not None:
        # a sample is valid when its top-left tap (r, c) and the taps (r, c+1), (r+1, c), (r+1, c+1) are
        ok4 = valid.clone()
        ok4[:, :, :-1] &= valid[:, :, 1:]
        ok4[:, :-1] &= ok4[:, 1:].clone()
        tl = torch.where(inside, y0 * W + x0, torch.zeros_like(x0)).long()
        inside &= torch.gather(ok4.reshape(B, H * W), 1, tl)
    # the interpolation itself: grid_sample with align_corners=False has the same pixel-centre convention
    grid = torch.stack([u * (2.0 / W) - 1.0, v * (2.0 / H) - 1.0], dim=-1).to(image.dtype).unsqueeze(2)
    grid = torch.where(inside[:, :, None, None], grid, torch.zeros_like(grid))  # no NaN into the kernel
    values = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]
    values = values.masked_fill(~inside.unsqueeze(1), 0.0)
    return values, inside
