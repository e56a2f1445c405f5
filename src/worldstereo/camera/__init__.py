"""Cameras: :class:`CameraTrajectory` (w2c OpenCV poses + pixel intrinsics), presets, pose-format
converters, and the reference's camera conditioning (Plücker maps, camera tokens, normalisations).

Conventions: world-to-camera 4x4 poses in OpenCV axes (x right, y down, z forward); intrinsics 3x3 in
pixels of the image they describe. See ``docs/cameras.md``.
"""

from .embedding import (
    camera_center_normalization,
    camera_qt_tokens,
    plucker_embedding,
    pose_tokens,
    unified_camera_normalization,
)
from .fit import DEFAULT_MIN_COVERAGE, TrajectoryFit, fit_trajectory, scene_median_depth
from .keyframes import sample_align_nframe, trajectory_subsample_linspace
from .presets import PRESET_NAMES, look_at_w2c
from .resolution import DEFAULT_SCALE_MAP, assign_scale
from .rotations import matrix_to_quaternion, quaternion_slerp, quaternion_to_matrix
from .trajectory import POSE_CONVENTIONS, TRAJECTORY_UNITS, CameraTrajectory, intrinsics_from_fov

__all__ = [
    "CameraTrajectory",
    "PRESET_NAMES",
    "POSE_CONVENTIONS",
    "TRAJECTORY_UNITS",
    "DEFAULT_MIN_COVERAGE",
    "TrajectoryFit",
    "fit_trajectory",
    "scene_median_depth",
    "intrinsics_from_fov",
    "look_at_w2c",
    "camera_center_normalization",
    "plucker_embedding",
    "unified_camera_normalization",
    "camera_qt_tokens",
    "pose_tokens",
    "trajectory_subsample_linspace",
    "sample_align_nframe",
    "assign_scale",
    "DEFAULT_SCALE_MAP",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "quaternion_slerp",
]
