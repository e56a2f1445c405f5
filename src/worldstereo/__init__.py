"""worldstereo: camera-guided multi-view-consistent video generation (WorldStereo) and 3D reconstruction."""

__version__ = "0.1.0"
