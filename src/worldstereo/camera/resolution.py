"""Generation resolution chosen from the input aspect ratio (reference ``assign_scale``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_SCALE_MAP", "assign_scale"]

#: (height, width) generation sizes of the reference when its config has ``scale_map: null``
DEFAULT_SCALE_MAP: tuple[tuple[int, int], ...] = (
    (480, 768), (512, 720), (576, 640), (608, 608), (640, 576), (720, 512), (768, 480),
)


def assign_scale(height: int, width: int, scale_map: Sequence[Sequence[int]] | None = None) -> tuple[int, int]:
    """Generation size (h, w) for an input image of ``height`` x ``width`` pixels.

    Picks the ``scale_map`` entry whose ``h / w`` ratio is closest to ``height / width`` (the first one
    on ties), as the reference. ``scale_map=None`` uses :data:`DEFAULT_SCALE_MAP`.

    Raises:
        ValueError: non-positive sizes or an empty / malformed ``scale_map``.
    """
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{name}: expected a positive number of pixels, got {v!r}")
    entries = DEFAULT_SCALE_MAP if scale_map is None else scale_map
    if len(entries) == 0:
        raise ValueError("scale_map: expected at least one [height, width] entry")
    ratio = height / width
    best: tuple[int, int] | None = None
    best_err = float("inf")
    for i, e in enumerate(entries):
        if len(e) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in e):
            raise ValueError(f"scale_map: entry {i} must be [height, width] positive ints, got {e!r}")
        err = abs(e[0] / e[1] - ratio)
        if err < best_err:
            best, best_err = (int(e[0]), int(e[1])), err
    assert best is not None
    return best
