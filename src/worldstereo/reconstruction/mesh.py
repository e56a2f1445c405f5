"""Triangle meshes from posed depth maps: TSDF fusion + marching cubes (optional Open3D Poisson).

TSDF integration runs in float32 PyTorch on the device of the inputs, batched over frames (every
frame adds weight 1, so the running weighted average is the mean over the frames that observe a
voxel, summed chunk by chunk); marching cubes and the mesh itself are CPU (scikit-image, trimesh).

Conventions: cameras w2c OpenCV 4x4, K in pixels of the (H,W) depth maps; depth is z-depth in scene
units; colours (T,3,H,W) in [0,1]; pixel (row r, column c) has its centre at image coordinates
``(c + 0.5, r + 0.5)`` (the library convention), so a voxel projecting to ``(u, v)`` reads pixel
(``floor(v)``, ``floor(u)``) (projection: :func:`worldstereo.geometry.projection.project_points`).
Meshes are ``trimesh.Trimesh`` with uint8 RGBA vertex colours.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldstereo.geometry.projection import project_points

from ._common import camera_arrays, to_numpy, to_tensor
from .fusion import _depth_input

__all__ = ["TSDFVolume", "mesh_from_tsdf", "poisson_mesh", "tsdf_fusion"]

logger = logging.getLogger(__name__)

_CHUNK_ELEMS = 1 << 22  # (frame, voxel) pairs integrated at once


@dataclass
class TSDFVolume:
    """A dense truncated-signed-distance volume (tensors on the device it was integrated on).

    Attributes:
        tsdf: (X,Y,Z) float32 normalised TSDF in [-1,1] (positive in front of surfaces; 1 where unobserved).
        weight: (X,Y,Z) float32 accumulated weights (number of observing frames; 0 = never observed).
        color: (X,Y,Z,3) float32 weighted mean colour in [0,1].
        origin: (3,) float64 world position of voxel (0,0,0)'s centre. voxel_size: edge length.
        trunc: truncation distance in scene units.
    """

    tsdf: Tensor
    weight: Tensor
    color: Tensor
    origin: Tensor
    voxel_size: float
    trunc: float


def _dilate(occ: Tensor, iterations: int) -> Tensor:
    """Binary dilation with the 6-neighbour cross, ``iterations`` times (an L1 ball; outside = empty),
    like ``scipy.ndimage.binary_dilation(occ, iterations=iterations)``."""
    for _ in range(iterations):
        out = occ.clone()
        for ax in range(3):
            n = occ.shape[ax]
            out.narrow(ax, 1, n - 1).logical_or_(occ.narrow(ax, 0, n - 1))
            out.narrow(ax, 0, n - 1).logical_or_(occ.narrow(ax, 1, n - 1))
        occ = out
    return occ


def tsdf_fusion(frames: Any, depths: Any, cams: Any, *, voxel_size: float, bounds: tuple[Any, Any],
                trunc_voxels: float = 3.0, max_voxels: int = 24_000_000, surface_points: Any = None) -> TSDFVolume:
    """Integrate depth maps into a TSDF volume (projective distance, running weighted average).

    Args:
        frames: (T,3,H,W) colours in [0,1]. depths: (T,H,W) z-depth (<= 0 invalid); tensors (any
            device) or arrays — the volume lives on the device of ``depths``.
        cams: cameras of the frames.
        voxel_size: voxel edge (scene units); enlarged (with a warning) if the grid would exceed
            ``max_voxels``.
        bounds: (min_xyz, max_xyz) region to reconstruct.
        trunc_voxels: truncation distance in voxels.
        surface_points: optional (M,3) points near the surface (e.g. the fused cloud); only voxels
            within the truncation band of them are integrated (much faster; the rest stays
            unobserved, which marching cubes ignores).
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0; got {voxel_size}")
    D, _ = _depth_input(depths, None)
    dev = D.device
    T, H, W = D.shape
    Fr = to_tensor(frames, device=dev)
    if Fr.shape != (T, 3, H, W):
        raise ValueError(f"frames must have shape (T,3,H,W) = ({T},3,{H},{W}); got {tuple(Fr.shape)}")
    cams = camera_arrays(cams, num_frames=T, name="cams", device=dev)
    lo = to_numpy(bounds[0]).reshape(3)
    hi = to_numpy(bounds[1]).reshape(3)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (hi < lo).any():
        raise ValueError(f"bounds: expected finite (min_xyz, max_xyz) with min <= max; got {lo}, {hi}")

    def cells(v: float) -> np.ndarray:  # in float64: never an integer overflow, whatever the voxel size
        return np.maximum(np.ceil((hi - lo) / v) + 1, 2)

    requested = voxel_size
    while float(np.prod(cells(voxel_size))) > max_voxels:
        voxel_size = float(voxel_size * max(1.01, (float(np.prod(cells(voxel_size))) / max_voxels) ** (1 / 3) * 1.01))
    if voxel_size != requested:
        logger.warning("TSDF grid of voxel %.4g exceeds %d voxels; voxel size raised to %.4g", requested,
                       max_voxels, voxel_size)
    dims = cells(voxel_size).astype(np.int64)
    trunc = trunc_voxels * voxel_size
    shape = tuple(int(x) for x in dims)
    n = int(np.prod(dims))
    lo_t = torch.as_tensor(lo, dtype=torch.float64, device=dev)
    active = None
    if surface_points is not None and len(surface_points):
        occ = torch.zeros(shape, dtype=torch.bool, device=dev)
        sp = to_tensor(surface_points, dtype=torch.float64, device=dev).reshape(-1, 3)
        ijk = torch.round((sp - lo_t) / voxel_size).long()
        ijk = ijk[((ijk >= 0) & (ijk < torch.as_tensor(dims, device=dev))).all(dim=1)]
        occ[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
        occ = _dilate(occ, int(math.ceil(trunc_voxels)) + 1)
        active = occ.reshape(-1).nonzero().squeeze(1)
        del occ
        ijk = torch.stack(torch.unravel_index(active, shape), -1)
    else:
        ijk = torch.stack(torch.meshgrid(*[torch.arange(s, device=dev) for s in shape], indexing="ij"), -1)
        ijk = ijk.reshape(-1, 3)
    P = ijk.float() * voxel_size + lo_t.float()  # voxel centres
    del ijk
    m = P.shape[0]
    tsdf_sum = torch.zeros(m, device=dev)
    weight = torch.zeros(m, device=dev)
    color_sum = torch.zeros(3, m, device=dev)
    step = max(1, min(T, _CHUNK_ELEMS // max(m, 1)))
    for f0 in range(0, T, step):
        c = min(step, T - f0)
        u, v, z = project_points(P, cams.w2c[f0:f0 + c], cams.K[f0:f0 + c], near=1e-6)  # (c,M)
        # the voxel reads the pixel that contains its projection: column floor(u), row floor(v)
        col, row = torch.floor(u), torch.floor(v)
        seen = (z > 1e-6) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        pix = torch.where(seen, row * W + col, torch.zeros_like(col)).long()
        d = torch.gather(D[f0:f0 + c].reshape(c, -1), 1, pix)
        sdf = d - z
        upd = seen & (d > 0) & (sdf > -trunc)
        tsdf_sum += torch.where(upd, (sdf / trunc).clamp(max=1.0), torch.zeros_like(sdf)).sum(0)
        weight += upd.sum(0)
        rgb = torch.gather(Fr[f0:f0 + c].reshape(c, 3, -1), 2, pix[:, None].expand(c, 3, m))
        color_sum += (rgb * upd[:, None]).sum(0)
    seen_any = weight > 0
    tsdf = torch.where(seen_any, tsdf_sum / weight.clamp_min(1.0), torch.ones_like(tsdf_sum))
    color = (color_sum / weight.clamp_min(1.0)).t()
    if active is not None:
        full_t, full_w, full_c = (torch.ones(n, device=dev), torch.zeros(n, device=dev),
                                  torch.zeros(n, 3, device=dev))
        full_t[active], full_w[active], full_c[active] = tsdf, weight, color
        tsdf, weight, color = full_t, full_w, full_c
    return TSDFVolume(tsdf.reshape(shape), weight.reshape(shape), color.reshape(*shape, 3), lo_t, float(voxel_size),
                      float(trunc))


def mesh_from_tsdf(volume: TSDFVolume):
    """Marching cubes (``skimage.measure.marching_cubes``) on the observed part of a TSDF volume.

    Returns:
        ``trimesh.Trimesh`` in world coordinates with RGBA uint8 vertex colours (trilinear colour
        lookup). Faces wind so that normals point toward the observed free space.
    """
    import trimesh
    from scipy.ndimage import map_coordinates
    from skimage.measure import marching_cubes

    tsdf_v, weight_v, color_v = to_numpy(volume.tsdf, np.float32), to_numpy(volume.weight, np.float32), \
        to_numpy(volume.color, np.float32)
    observed = weight_v > 0
    # a zero crossing between a truncated (|tsdf| ~ 1) voxel and its neighbour is an artefact of the
    # truncation band, not a surface: true crossings have |tsdf| <= sqrt(3) voxel / trunc on both sides
    good = observed & (np.abs(tsdf_v) < 0.95)
    if not observed.any() or tsdf_v[observed].min() > 0 or tsdf_v[observed].max() < 0:
        raise ValueError("the TSDF volume contains no surface (no zero crossing in observed voxels)")
    verts, faces, _, _ = marching_cubes(tsdf_v, level=0.0, spacing=(volume.voxel_size,) * 3, mask=observed,
                                        allow_degenerate=False)
    idx = verts / volume.voxel_size
    # every vertex lies on a grid edge; keep faces whose vertices' edge end-voxels are all "good"
    # (marching_cubes returns float32 vertices: snap the on-grid coordinates before floor / ceil)
    near = np.rint(idx)
    snapped = np.where(np.abs(idx - near) < 1e-3, near, idx)
    lo_i = np.clip(np.floor(snapped).astype(np.int64), 0, np.array(good.shape) - 1)
    hi_i = np.clip(np.ceil(snapped).astype(np.int64), 0, np.array(good.shape) - 1)
    v_ok = good[tuple(lo_i.T)] & good[tuple(hi_i.T)]
    faces = faces[v_ok[faces].all(axis=1)]
    if faces.shape[0] == 0:
        raise ValueError("the TSDF volume contains no reliable surface")
    cols = np.stack([map_coordinates(color_v[..., c], idx.T, order=1, mode="nearest") for c in range(3)], 1)
    rgba = np.concatenate([np.clip(cols * 255 + 0.5, 0, 255), np.full((len(verts), 1), 255)], 1).astype(np.uint8)
    # skimage's default ("descent") winding makes trimesh normals point toward tsdf > 0 (free space)
    mesh = trimesh.Trimesh(vertices=verts + to_numpy(volume.origin), faces=faces, vertex_colors=rgba, process=False)
    mesh.remove_unreferenced_vertices()
    return mesh


def poisson_mesh(xyz: Any, rgb: Any, normals: Any, depth: int = 9):
    """Screened Poisson surface reconstruction via Open3D (optional dependency).

    Raises:
        ImportError: Open3D is not installed (``pip install open3d``).
    """
    try:
        import open3d as o3d
    except ImportError as exc:  # pragma: no cover - optional
        raise ImportError("mesh_method='poisson' needs Open3D (pip install open3d); use 'tsdf' instead") from exc
    import trimesh

    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(to_numpy(xyz))
    pcd.colors = o3d.utility.Vector3dVector(to_numpy(rgb))
    pcd.normals = o3d.utility.Vector3dVector(to_numpy(normals))
    m, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    dens = np.asarray(dens)
    m.remove_vertices_by_mask(dens < np.quantile(dens, 0.02))
    cols = (np.clip(np.asarray(m.vertex_colors), 0, 1) * 255).astype(np.uint8)
    return trimesh.Trimesh(np.asarray(m.vertices), np.asarray(m.triangles), vertex_colors=cols, process=False)
