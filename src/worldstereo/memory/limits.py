"""Bounds of the memory settings, shared by the memory classes and the saved model configs.

:data:`MEMORY_CONFIG_LIMITS` bounds every numeric setting of :class:`GlobalGeometricMemory` and
:class:`SpatialStereoMemory` (and of the ``global_memory_config`` / ``spatial_memory_config`` of a
model): a few times what the reference uses, so that no setting can make the memories allocate or
work without bound (the renderer settings within :data:`worldstereo.geometry.render.RENDER_LIMITS`).
"""

from __future__ import annotations

__all__ = ["MEMORY_CONFIG_LIMITS"]

#: Inclusive bounds of the numeric memory settings (default in the comment).
MEMORY_CONFIG_LIMITS: dict[str, tuple[float, float]] = {
    "max_points": (1, 1_000_000_000),        # 2_000_000 (or null: no cap)
    "point_radius": (0.0, 0.5),              # 0.008 NDC units (exclusive lower bound)
    "points_per_pixel": (1, 64),             # 8
    "memory_size": (1, 65536),               # 256
    "max_references": (1, 64),               # 8
    "frames_per_update": (1, 4096),          # 8
    "num_correspondences": (1, 65536),       # 64
    "keyframes_per_update": (1, 4096),       # 8
    "min_overlap_pixels": (0, 1 << 30),      # 64
    "sobel_threshold": (0.0, 1e6),           # 0.35 (or None)
    "contract": (0.0, 1e12),                 # 8.0 (or None; exclusive lower bound)
}
