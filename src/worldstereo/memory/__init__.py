"""Memories of WorldStereo.

* :class:`GlobalGeometricMemory` — incremental, capped point cloud rendered along target
  trajectories (render video + hole mask for the ControlNet branch).
* :class:`SpatialStereoMemory` — bank of frames with cameras; frustum-overlap (or correspondence)
  retrieval of reference views with the reference's quality-aware camera selection.

Conventions: ``w2c`` world-to-camera 4x4, OpenCV axes; ``K`` 3x3 pixel intrinsics; images float
in [0, 1]; hole masks 1 = not covered by the point cloud.
"""

from .geometric import GeometricRender, GlobalGeometricMemory
from .retrieval import (
    CameraSelector,
    RetrievalResult,
    aabb_iou,
    angle_penalty,
    build_reference_list,
    correspondence_scores,
    find_closest_camera,
    fov_overlap_scores,
    frustum_corners,
    retrieve,
    view_angle_deg,
)
from .spatial import MemoryEntry, References, SpatialStereoMemory

__all__ = [
    "GlobalGeometricMemory",
    "GeometricRender",
    "SpatialStereoMemory",
    "References",
    "MemoryEntry",
    "CameraSelector",
    "RetrievalResult",
    "retrieve",
    "frustum_corners",
    "aabb_iou",
    "view_angle_deg",
    "angle_penalty",
    "fov_overlap_scores",
    "correspondence_scores",
    "find_closest_camera",
    "build_reference_list",
]
