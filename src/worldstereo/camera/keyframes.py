"""Frame-index selection rules of the reference implementation."""

from __future__ import annotations

import numpy as np

__all__ = ["trajectory_subsample_linspace", "sample_align_nframe"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def trajectory_subsample_linspace(n: int, nframe: int) -> list[int]:
    """Indices that subsample an ``n``-pose trajectory (or video) to ``nframe`` keyframes.

    Exactly the reference rule ``np.linspace(0, n - 1, nframe, dtype=int)`` (values truncated
    towards zero), e.g. ``(81, 21) -> [0, 4, 8, ..., 80]``. The first and last frames are kept.

    Raises:
        ValueError: ``n`` or ``nframe`` < 1.
    """
    n = _positive_int(n, "n")
    nframe = _positive_int(nframe, "nframe")
    return [int(i) for i in np.linspace(0, n - 1, nframe, dtype=int)]


def sample_align_nframe(num_frames: int, n: int) -> list[int]:
    """Indices of the ``n`` frames of a ``num_frames``-frame clip that are added to the memory bank.

    Frame 0 (the condition view) is never chosen, the last frame always is, and the ``num_frames - 1``
    steps are split into ``n`` gaps as evenly as possible with the larger gaps first, e.g.
    ``(21, 8) -> [3, 6, 9, 12, 14, 16, 18, 20]`` (the reference's update rule).

    Raises:
        ValueError: ``n`` > ``num_frames - 1`` or non-positive arguments.
    """
    num_frames = _positive_int(num_frames, "num_frames")
    n = _positive_int(n, "n")
    total = num_frames - 1
    if n > total:
        raise ValueError(f"n: cannot pick {n} frames from the {total} non-condition frames of a "
                         f"{num_frames}-frame clip (need n <= num_frames - 1)")
    base, rem = divmod(total, n)
    out, pos = [], 0
    for k in range(n):
        pos += base + (1 if k < rem else 0)
        out.append(pos)
    return out
