"""Fast NaN / infinity checks of tensors (weights at load time, latents between sampling steps).

``torch.isfinite(t).all()`` makes several passes over ``t`` and allocates a boolean tensor of its
size. A sum is one pass without a temporary: it is finite whenever every element is finite, unless
finite values overflow it, so a non-finite sum is confirmed with the exact check (in chunks of
bounded memory). Integer and boolean tensors are always finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["all_finite", "count_nonfinite", "CHUNK_ELEMENTS"]

#: Elements per chunk of the exact check (bounds its temporary memory to 16 MiB).
CHUNK_ELEMENTS = 1 << 24


def _exact_nonfinite(t: Tensor) -> tuple[int, int]:
    """(NaN count, infinity count) of ``t``, chunk by chunk."""
    flat = t.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        chunk = flat[start:start + CHUNK_ELEMENTS]
        n_nan = int(torch.isnan(chunk).sum())
        nan += n_nan
        inf += int((~torch.isfinite(chunk)).sum()) - n_nan
    return nan, inf


def all_finite(t: Tensor) -> bool:
    """True when ``t`` holds no NaN and no ±inf (always True for integer/boolean tensors)."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return True
    acc = torch.float64 if t.dtype in (torch.float64, torch.complex128) else None
    if t.is_floating_point():
        total = t.sum(dtype=acc or torch.float32)
    else:
        total = t.sum()
    if bool(torch.isfinite(total).all()):
        return True
    return sum(_exact_nonfinite(t)) == 0  # the sum of finite values may overflow


def count_nonfinite(t: Tensor) -> tuple[int, int]:
    """(number of NaN, number of ±inf) in ``t`` (0, 0 for integer/boolean tensors)."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return 0, 0
    return _exact_nonfinite(t)
