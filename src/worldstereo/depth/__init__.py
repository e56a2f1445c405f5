"""Depth estimation: protocol, transformers and MoGe backends, user-supplied depth, scale alignment.

Depth is z-depth (along the camera's +z axis, OpenCV axes) in scene units: metres for metric sources,
median-normalised (median valid depth = 1.0) for relative ones. 0 marks invalid pixels.
"""

from worldstereo.depth.align import align_depth_scale
from worldstereo.depth.base import DepthEstimator, DepthPrediction, normalize_median_depth
from worldstereo.depth.factory import DepthSource, estimate_depth, get_depth_estimator
from worldstereo.depth.moge_backend import DEFAULT_MOGE_MODEL, MoGeDepthEstimator
from worldstereo.depth.transformers_backend import DEFAULT_DEPTH_MODEL, TransformersDepthEstimator
from worldstereo.depth.user import UserDepth, load_depth, save_depth_png16, validate_depth

__all__ = [
    "DEFAULT_DEPTH_MODEL",
    "DEFAULT_MOGE_MODEL",
    "DepthEstimator",
    "DepthPrediction",
    "DepthSource",
    "MoGeDepthEstimator",
    "TransformersDepthEstimator",
    "UserDepth",
    "align_depth_scale",
    "estimate_depth",
    "get_depth_estimator",
    "load_depth",
    "normalize_median_depth",
    "save_depth_png16",
    "validate_depth",
]
