"""worldstereo: camera-guided, multi-view-consistent video generation from one image (WorldStereo)
and 3D reconstruction from the videos.

Public API (imported lazily, so ``import worldstereo`` stays fast)::

    from worldstereo import WorldStereo, generate_video, CameraTrajectory

Conventions: cameras are world-to-camera 4x4 matrices in OpenCV axes (x right, y down, z forward)
with 3x3 intrinsics in pixels of the image they describe; images are float tensors in [0, 1];
hole masks are 1 where the point cloud does not cover a pixel.
"""

from __future__ import annotations

from worldstereo._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "WorldStereo": "worldstereo.models.worldstereo",
    "WorldStereoPipeline": "worldstereo.pipeline",
    "generate_video": "worldstereo.pipeline",
    "generate_videos": "worldstereo.pipeline",
    "generate_multi_view": "worldstereo.pipeline",
    "reconstruct_3d": "worldstereo.pipeline",
    "SceneMemory": "worldstereo.pipeline",
    "CameraTrajectory": "worldstereo.camera",
    "PointCloud": "worldstereo.geometry",
    "GlobalGeometricMemory": "worldstereo.memory",
    "SpatialStereoMemory": "worldstereo.memory",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
