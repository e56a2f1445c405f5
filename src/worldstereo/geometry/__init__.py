"""Geometry: point clouds, depth lifting, projection and z-buffering, bilinear sampling, k-nearest
neighbours, point rendering (pinhole and equirectangular), panoramas.

Conventions: world-to-camera ``w2c`` 4x4 with OpenCV camera axes (x right, y down, z forward),
pixel intrinsics ``K`` 3x3 (pixel (row r, col c) has its centre at (c + 0.5, r + 0.5)), images
float in [0,1], hole masks 1 = not covered by the point cloud. Equirectangular images: longitude
``atan2(x, z)`` increases to the right with 0 at the image centre, latitude ``asin(−y/|p|)``
increases upwards (see :func:`~worldstereo.geometry.render.equirect_project`).
"""

from .coverage import LOW_COVERAGE_THRESHOLD, render_coverage, warn_low_coverage
from .lifting import get_points3d_and_colors, lift_depth, unproject_depth, unproject_points
from .neighbors import knn_points
from .panorama import (
    equirect_to_perspective,
    lift_equirect_depth,
    perspective_from_equirect,
    perspective_to_equirect,
)
from .pointcloud import PointCloud
from .projection import ZBuffer, project_points, zbuffer
from .render import RenderOutput, render_point_cloud, render_point_cloud_equirect
from .sampling import sample_bilinear

__all__ = [
    "LOW_COVERAGE_THRESHOLD",
    "PointCloud",
    "RenderOutput",
    "ZBuffer",
    "equirect_to_perspective",
    "get_points3d_and_colors",
    "knn_points",
    "lift_depth",
    "lift_equirect_depth",
    "perspective_from_equirect",
    "perspective_to_equirect",
    "project_points",
    "render_point_cloud",
    "render_point_cloud_equirect",
    "render_coverage",
    "sample_bilinear",
    "unproject_depth",
    "unproject_points",
    "warn_low_coverage",
    "zbuffer",
]
