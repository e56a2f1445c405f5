"""Triangle meshes from posed depth maps: TSDF fusion + marching cubes (optional Open3D Poisson).

Conventions: cameras w2c OpenCV 4x4, K in pixels of the (H,W) depth maps; depth is z-depth in scene
units; colours (T,3,H,W) in [0,1]; pixel (row r, column c) has its centre at image coordinates
``(c + 0.5, r + 0.5)`` (the library convention), so a voxel projecting to ``(u, v)`` reads pixel
(``floor(v)``, ``floor(u)``). Meshes are ``trimesh.Trimesh`` with uint8 RGBA vertex colours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ._common import CameraArrays

__all__ = ["TSDFVolume", "mesh_from_tsdf", "poisson_mesh", "tsdf_fusion"]

logger = logging.getLogger(__name__)


@dataclass
class TSDFVolume:
    """A dense truncated-signed-distance volume.

    Attributes:
        tsdf: (X,Y,Z) float32 normalised TSDF in [-1,1] (positive in front of surfaces).
        weight: (X,Y,Z) float32 accumulated weights (0 = never observed).
        color: (X,Y,Z,3) float32 weighted mean colour in [0,1].
        origin: (3,) world position of voxel (0,0,0)'s centre. voxel_size: edge length.
        trunc: truncation distance in scene units.
    """

    tsdf: np.ndarray
    weight: np.ndarray
    color: np.ndarray
    origin: np.ndarray
    voxel_size: float
    trunc: float


def tsdf_fusion(frames: np.ndarray, depths: np.ndarray, cams: CameraArrays, *, voxel_size: float,
                bounds: tuple[np.ndarray, np.ndarray], trunc_voxels: float = 3.0,
                max_voxels: int = 24_000_000, surface_points: np.ndarray | None = None) -> TSDFVolume:
    """Integrate depth maps into a TSDF volume (projective distance, running weighted average).

    Args:
        frames: (T,3,H,W) colours in [0,1]. depths: (T,H,W) z-depth (<= 0 invalid).
        cams: cameras of the frames.
        voxel_size: voxel edge (scene units); enlarged (with a warning) if the grid would exceed
            ``max_voxels``.
        bounds: (min_xyz, max_xyz) region to reconstruct.
        trunc_voxels: truncation distance in voxels.
        surface_points: optional (M,3) points near the surface (e.g. the fused cloud); only voxels
            within the truncation band of them are integrated (much faster; the rest stays
            unobserved, which marching cubes ignores).
    """
    lo = np.asarray(bounds[0], dtype=np.float64)
    hi = np.asarray(bounds[1], dtype=np.float64)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0; got {voxel_size}")
    dims = np.maximum(np.ceil((hi - lo) / voxel_size).astype(np.int64) + 1, 2)
    if int(np.prod(dims)) > max_voxels:
        new = voxel_size * (np.prod(dims) / max_voxels) ** (1 / 3) * 1.01
        logger.warning("TSDF grid %s exceeds %d voxels; voxel size raised from %.4g to %.4g", tuple(dims),
                       max_voxels, voxel_size, new)
        voxel_size = float(new)
        dims = np.maximum(np.ceil((hi - lo) / voxel_size).astype(np.int64) + 1, 2)
    trunc = trunc_voxels * voxel_size
    n = int(np.prod(dims))
    # float32 torch on CPU: one vectorised pass per frame over all voxel centres
    active = None
    if surface_points is not None and len(surface_points):
        from scipy.ndimage import binary_dilation

        occ = np.zeros(tuple(int(x) for x in dims), bool)
        ijk = np.rint((np.asarray(surface_points) - lo) / voxel_size).astype(np.int64)
        ijk = ijk[np.all((ijk >= 0) & (ijk < dims), axis=1)]
        occ[tuple(ijk.T)] = True
        occ = binary_dilation(occ, iterations=int(np.ceil(trunc_voxels)) + 1)
        active = torch.from_numpy(np.flatnonzero(occ.ravel()))
        ijk_t = torch.stack(torch.unravel_index(active, tuple(int(x) for x in dims)), -1)
    else:
        ijk_t = torch.stack(torch.meshgrid(*[torch.arange(int(x)) for x in dims], indexing="ij"), -1).reshape(-1, 3)
    P = ijk_t.float() * voxel_size + torch.from_numpy(lo).float()
    del ijk_t
    m = P.shape[0]
    tsdf = torch.ones(m)
    weight = torch.zeros(m)
    color = torch.zeros(m, 3)
    T, H, W = depths.shape
    for i in range(T):
        R = torch.from_numpy(cams.w2c[i, :3, :3]).float()
        t = torch.from_numpy(cams.w2c[i, :3, 3]).float()
        K = cams.K[i]
        d_i = torch.from_numpy(np.where(np.isfinite(depths[i]), depths[i], 0.0)).float().reshape(-1)
        img = torch.from_numpy(np.ascontiguousarray(frames[i].reshape(3, -1).T)).float()
        cam = torch.addmm(t, P, R.T)
        z = cam[:, 2]
        zs = z.clamp_min(1e-6)
        # the voxel projects into the pixel that contains it: column floor(u), row floor(v)
        u = torch.floor((float(K[0, 0]) * cam[:, 0] + float(K[0, 1]) * cam[:, 1]) / zs + float(K[0, 2]))
        v = torch.floor(float(K[1, 1]) * cam[:, 1] / zs + float(K[1, 2]))
        ok = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        sel = ok.nonzero().squeeze(1)
        pix = (v[sel] * W + u[sel]).long()
        d = d_i[pix]
        sdf = d - z[sel]
        upd = (d > 0) & (sdf > -trunc)
        sel, pix = sel[upd], pix[upd]
        val = (sdf[upd] / trunc).clamp(max=1.0)
        w_old = weight[sel]
        w_new = w_old + 1.0
        tsdf[sel] = (tsdf[sel] * w_old + val) / w_new
        color[sel] = (color[sel] * w_old[:, None] + img[pix]) / w_new[:, None]
        weight[sel] = w_new
    if active is not None:
        full_t, full_w, full_c = torch.ones(n), torch.zeros(n), torch.zeros(n, 3)
        full_t[active], full_w[active], full_c[active] = tsdf, weight, color
        tsdf, weight, color = full_t, full_w, full_c
    tsdf, weight, color = tsdf.numpy(), weight.numpy(), color.numpy()
    shape = tuple(int(s) for s in dims)
    return TSDFVolume(tsdf.reshape(shape), weight.reshape(shape), color.reshape(*shape, 3), lo, float(voxel_size),
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

    observed = volume.weight > 0
    # a zero crossing between a truncated (|tsdf| ~ 1) voxel and its neighbour is an artefact of the
    # truncation band, not a surface: true crossings have |tsdf| <= sqrt(3) voxel / trunc on both sides
    good = observed & (np.abs(volume.tsdf) < 0.95)
    if not observed.any() or volume.tsdf[observed].min() > 0 or volume.tsdf[observed].max() < 0:
        raise ValueError("the TSDF volume contains no surface (no zero crossing in observed voxels)")
    verts, faces, _, _ = marching_cubes(volume.tsdf, level=0.0, spacing=(volume.voxel_size,) * 3, mask=observed,
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
    cols = np.stack([map_coordinates(volume.color[..., c], idx.T, order=1, mode="nearest") for c in range(3)], 1)
    rgba = np.concatenate([np.clip(cols * 255 + 0.5, 0, 255), np.full((len(verts), 1), 255)], 1).astype(np.uint8)
    # skimage's default ("descent") winding makes trimesh normals point toward tsdf > 0 (free space)
    mesh = trimesh.Trimesh(vertices=verts + volume.origin, faces=faces, vertex_colors=rgba, process=False)
    mesh.remove_unreferenced_vertices()
    return mesh


def poisson_mesh(xyz: np.ndarray, rgb: np.ndarray, normals: np.ndarray, depth: int = 9):
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
    pcd.points = o3d.utility.Vector3dVector(xyz)
    pcd.colors = o3d.utility.Vector3dVector(rgb)
    pcd.normals = o3d.utility.Vector3dVector(normals)
    m, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    dens = np.asarray(dens)
    m.remove_vertices_by_mask(dens < np.quantile(dens, 0.02))
    cols = (np.clip(np.asarray(m.vertex_colors), 0, 1) * 255).astype(np.uint8)
    return trimesh.Trimesh(np.asarray(m.vertices), np.asarray(m.triangles), vertex_colors=cols, process=False)
