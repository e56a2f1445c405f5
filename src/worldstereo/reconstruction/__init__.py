"""3D reconstruction from posed frames: depth fusion, TSDF meshing, a 3D-Gaussian neural field,
quality metrics, standard exports and a static HTML viewer.

Entry point: :func:`reconstruct` -> :class:`Reconstruction` (also a read-only mapping with the keys
``reconstruct_3d`` documents). Conventions: cameras are ``CameraTrajectory`` (w2c OpenCV 4x4, K in
pixels of the frames), frames (T,3,H,W) float in [0,1], depth z-depth in scene units; pixel (row r,
column c) has its centre at image coordinates ``(c + 0.5, r + 0.5)`` like everywhere in the library
(and in COLMAP / nerfstudio exports, which therefore store ``K`` unshifted).

Everything runs in float32 PyTorch on the device of the inputs (NumPy inputs are accepted and run on
the CPU), on top of :mod:`worldstereo.geometry` (lifting, projection, z-buffer, bilinear sampling,
k-nearest neighbours, the point renderer); frames are streamed in chunks, so memory beyond the
inputs does not grow with their number. Marching cubes and the file exports run on the CPU
(scikit-image, trimesh).
"""

from .api import METHODS, Reconstruction, reconstruct
from .export import (
    EXPORT_FORMATS,
    read_colmap_text,
    read_transforms_json,
    read_worldmirror_cameras,
    save_reconstruction,
    write_colmap_text,
    write_gaussians_ply,
    write_mesh,
    write_points_ply,
    write_transforms_json,
    write_worldmirror,
)
from .fusion import (
    align_depth_scales,
    estimate_normals,
    fuse_depth_maps,
    statistical_outlier_removal,
)
from .mesh import mesh_from_tsdf, tsdf_fusion
from .metrics import (
    camera_pose_errors,
    icp_align,
    masked_psnr,
    masked_ssim,
    point_cloud_scores,
    reprojection_psnr,
    umeyama_alignment,
    warp_frame,
)
from .neural_field import GaussianField, rasterize_gaussians
from .viewer import viewer_html, write_viewer

__all__ = [
    "EXPORT_FORMATS",
    "METHODS",
    "GaussianField",
    "Reconstruction",
    "align_depth_scales",
    "camera_pose_errors",
    "estimate_normals",
    "fuse_depth_maps",
    "icp_align",
    "masked_psnr",
    "masked_ssim",
    "mesh_from_tsdf",
    "point_cloud_scores",
    "rasterize_gaussians",
    "read_colmap_text",
    "read_transforms_json",
    "read_worldmirror_cameras",
    "reconstruct",
    "reprojection_psnr",
    "save_reconstruction",
    "statistical_outlier_removal",
    "tsdf_fusion",
    "umeyama_alignment",
    "viewer_html",
    "warp_frame",
    "write_colmap_text",
    "write_gaussians_ply",
    "write_mesh",
    "write_points_ply",
    "write_transforms_json",
    "write_viewer",
    "write_worldmirror",
]
