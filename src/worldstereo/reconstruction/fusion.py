"""Multi-view depth fusion into a point cloud.

Pipeline: per-frame depth (given or estimated) -> per-frame scale alignment (to the first frame, or to
a reference point cloud) -> lifting with the known cameras -> voxel down-sampling -> statistical
outlier removal -> PCA normals oriented toward the observing cameras.

Conventions: cameras are world-to-camera 4x4 (OpenCV axes); depth is z-depth in scene units; frames
are float in [0, 1], shape (T,3,H,W); pixel (row r, column c) has its centre at image coordinates
``(c + 0.5, r + 0.5)`` (the library convention).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._common import CameraArrays, project, unproject, zbuffer_splat

__all__ = [
    "FusedPoints",
    "align_depth_scales",
    "estimate_normals",
    "fuse_depth_maps",
    "statistical_outlier_removal",
    "voxel_down_sample",
]

logger = logging.getLogger(__name__)


@dataclass
class FusedPoints:
    """Result of :func:`fuse_depth_maps` (NumPy, world coordinates).

    Attributes:
        xyz: (N,3) float64 points. rgb: (N,3) float64 in [0,1]. normals: (N,3) unit normals or None.
        view_dirs: (N,3) unit vectors from the points toward the cameras that observed them.
        scales: (T,) per-frame depth scale factors that were applied.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    normals: np.ndarray | None
    view_dirs: np.ndarray
    scales: np.ndarray


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of (H,W) ``img`` at image coordinates (u along columns, v along rows); 0 outside.

    Pixel (r, c) holds the value at its centre ``(c + 0.5, r + 0.5)`` (``align_corners=False``
    semantics), so the four neighbours of ``(u, v)`` are those around ``(u - 0.5, v - 0.5)`` in index
    space. Samples touching an invalid (<= 0) texel return 0 so that depth edges do not blend.
    """
    H, W = img.shape
    u = np.asarray(u, dtype=np.float64) - 0.5
    v = np.asarray(v, dtype=np.float64) - 0.5
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    ok = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < W) & (v0 + 1 < H)
    out = np.zeros(u.shape)
    if not ok.any():
        return out
    u0, v0, fu, fv = u0[ok], v0[ok], u[ok] - u0[ok], v[ok] - v0[ok]
    a, b = img[v0, u0], img[v0, u0 + 1]
    c, d = img[v0 + 1, u0], img[v0 + 1, u0 + 1]
    val = (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv
    bad = (np.minimum(np.minimum(a, b), np.minimum(c, d)) <= 0)
    out[ok] = np.where(bad, 0.0, val)
    return out


def _ratio_against(points_world: np.ndarray, depth_j: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Ratios true_z / observed_depth for reference points that are front-most in camera j.

    Occlusion is resolved with a 1-pixel z-buffer; the observed depth is sampled bilinearly at each
    winning point's exact projection (no rounding bias).
    """
    H, W = depth_j.shape
    _, owner = zbuffer_splat(points_world, K, w2c, H, W)
    sel = owner[owner >= 0]
    if sel.size == 0:
        return np.zeros(0)
    u, v, z = project(points_world[sel], K, w2c)
    d = _bilinear(np.where(np.isfinite(depth_j), depth_j, 0.0), u, v)
    ok = d > 0
    return z[ok] / d[ok]


def align_depth_scales(depths: np.ndarray, cams: CameraArrays, valid: np.ndarray | None = None, *,
                       reference_xyz: np.ndarray | None = None, anchor: str = "first", min_overlap: int = 50,
                       max_points_per_frame: int = 40000) -> np.ndarray:
    """Estimate one multiplicative scale per frame so that the depth maps agree in 3D.

    Relative fit: frame j is fitted against already-aligned frames — their lifted points are
    z-buffered into camera j (front-most point per pixel, which removes occluded points), and the
    scale is the median of true-z / observed-depth over the overlapping pixels, refined once after
    discarding ratios more than 20 % from the first median.

    Anchors (what fixes the overall scale):
        * ``reference_xyz`` given: every frame is fitted against these (M,3) world points together
          with the (up to 4) previous frames already aligned to them, which supply occluders and
          overlap where the reference has none.
        * ``anchor="first"``: frame 0 keeps scale 1 (its depth is in the trajectory's units).
        * ``anchor="cameras"``: the scale of frame 0 is also estimated, from the camera baselines —
          a log-scale search for the frame-0 scale that makes the chained fit of the next frames
          geometrically consistent (smallest median relative depth residual). Needs translation
          between cameras; falls back to ``"first"`` (with a warning) for pure rotations.

    Args:
        depths: (T,H,W) z-depth maps (<= 0 / non-finite = invalid).
        cams: cameras of the frames at the depth resolution.
        valid: optional (T,H,W) bool masks.
        min_overlap: frames with fewer overlapping pixels keep their current scale (warning).

    Returns:
        (T,) float64 scale factors (multiply depth by them).
    """
    if anchor not in ("first", "cameras"):
        raise ValueError(f"anchor must be 'first' or 'cameras'; got {anchor!r}")
    T = depths.shape[0]
    rng = np.random.default_rng(0)
    masked = depths if valid is None else np.where(valid, depths, 0.0)

    def lifted(i: int, scale: float) -> np.ndarray:
        pts, _ = unproject(masked[i] * scale, cams.K[i], cams.w2c[i])
        if pts.shape[0] > max_points_per_frame:
            pts = pts[rng.choice(pts.shape[0], max_points_per_frame, replace=False)]
        return pts

    def fit(j: int, ref: np.ndarray) -> tuple[float, float] | None:
        """(scale, median relative residual) of frame j against ``ref`` points, or None."""
        r = _ratio_against(ref, masked[j], cams.K[j], cams.w2c[j])
        r = r[np.isfinite(r) & (r > 0)]
        if r.size < min_overlap:
            return None
        m = float(np.median(r))
        r2 = r[np.abs(r / m - 1.0) < 0.2]
        if r2.size >= min_overlap:
            m = float(np.median(r2))
        return m, float(np.median(np.abs(r / m - 1.0)))

    if reference_xyz is not None:
        scales = np.ones(T)
        done: list[np.ndarray] = []
        for j in range(T):
            # the frames already aligned to the reference add the occluders the reference may lack
            res = fit(j, np.concatenate([reference_xyz, *done[-4:]], axis=0))
            if res is None:
                logger.warning("frame %d does not overlap the reference points; its depth scale is left at 1", j)
            else:
                scales[j] = res[0]
                done.append(lifted(j, scales[j]))
        return scales

    def chain(s0: float, count: int, warn: bool = True) -> tuple[np.ndarray, float]:
        scales = np.ones(count)
        scales[0] = s0
        aligned = [lifted(0, s0)]
        residual, n_res = 0.0, 0
        for j in range(1, count):
            res = fit(j, np.concatenate(aligned[-4:], axis=0))
            if res is None and len(aligned) > 4:
                res = fit(j, np.concatenate(aligned, axis=0))
            if res is None:
                if not warn:  # scale search: a candidate that loses the overlap is rejected
                    return scales, np.inf
                logger.warning("frame %d does not overlap earlier frames; its depth scale is left at 1", j)
            else:
                scales[j] = res[0]
                residual += res[1]
                n_res += 1
            aligned.append(lifted(j, scales[j]))
        return scales, (residual / n_res if n_res else np.inf)

    s0 = 1.0
    if anchor == "cameras" and T >= 2:
        centers = cams.centers
        baseline = float(np.max(np.linalg.norm(centers - centers[0], axis=1)))
        med_depth = float(np.median(masked[masked > 0])) if np.any(masked > 0) else 0.0
        if baseline <= 1e-6 * max(med_depth, 1e-12):
            logger.warning("cameras have no baseline; the overall depth scale cannot be estimated (anchor='first')")
        else:
            count = min(T, 4)
            lo, hi, best = np.log(1e-2), np.log(1e2), 0.0
            for n_grid in (41, 15, 15):
                grid = np.linspace(lo, hi, n_grid)
                costs = [chain(float(np.exp(g)), count, warn=False)[1] for g in grid]
                k = int(np.argmin(costs))
                best = grid[k]
                step = grid[1] - grid[0]
                lo, hi = best - step, best + step
            s0 = float(np.exp(best))
            logger.info("depth scale of frame 0 estimated from the camera baselines: %.4g", s0)
    return chain(s0, T)[0]


def voxel_down_sample(xyz: np.ndarray, voxel_size: float, *attributes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Average points (and per-point attributes) falling into the same voxel of edge ``voxel_size``.

    Returns ``(xyz, *attributes)`` down-sampled, voxels in lexicographic order of their index.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0; got {voxel_size}")
    if xyz.shape[0] == 0:
        return (xyz, *attributes)
    keys = np.floor(xyz / voxel_size).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    out = []
    for a in (xyz, *attributes):
        acc = np.zeros((counts.shape[0], a.shape[1]))
        np.add.at(acc, inv, a)
        out.append(acc / counts[:, None])
    return tuple(out)


def statistical_outlier_removal(xyz: np.ndarray, k: int = 16, std_ratio: float = 2.0,
                                spacing: np.ndarray | None = None) -> np.ndarray:
    """Boolean keep-mask: drop points whose mean distance to their ``k`` nearest neighbours exceeds
    ``mean + std_ratio * std`` of that statistic over the cloud.

    ``spacing`` (N,) optionally gives each point's expected sampling distance (e.g. the pixel
    footprint ``depth / f``, at least the voxel size); the statistic is then divided by it so that
    sparse but regular far-away surfaces are not mistaken for outliers.
    """
    n = xyz.shape[0]
    if n <= k:
        return np.ones(n, dtype=bool)
    d, _ = cKDTree(xyz).query(xyz, k=k + 1)
    md = d[:, 1:].mean(axis=1)
    if spacing is not None:
        md = md / np.maximum(spacing, 1e-12)
    return md <= md.mean() + std_ratio * md.std()


def estimate_normals(xyz: np.ndarray, k: int = 16, toward: np.ndarray | None = None) -> np.ndarray:
    """PCA normals: eigenvector of the smallest eigenvalue of the k-NN covariance of each point.

    Args:
        xyz: (N,3) points. k: neighbourhood size.
        toward: optional (N,3) vectors; normals are flipped so that ``dot(n, toward) >= 0`` (e.g.
            directions from the points to their cameras).

    Returns:
        (N,3) unit normals (zeros for clouds with fewer than 3 points).
    """
    n = xyz.shape[0]
    if n < 3:
        return np.zeros((n, 3))
    k = min(k, n)
    _, idx = cKDTree(xyz).query(xyz, k=k)
    normals = np.empty((n, 3))
    for s in range(0, n, 65536):
        nb = xyz[idx[s:s + 65536]]
        nb = nb - nb.mean(axis=1, keepdims=True)
        cov = np.einsum("nki,nkj->nij", nb, nb)
        _, vec = np.linalg.eigh(cov)
        normals[s:s + 65536] = vec[:, :, 0]
    if toward is not None:
        flip = np.einsum("ni,ni->n", normals, toward) < 0
        normals[flip] *= -1
    return normals


def fuse_depth_maps(frames: np.ndarray, depths: np.ndarray, cams: CameraArrays,
                    valid: np.ndarray | None = None, *, align: bool = True, anchor: str = "first",
                    reference_xyz: np.ndarray | None = None, voxel_size: float | None = None,
                    outlier_k: int = 16, outlier_std_ratio: float = 2.0, normals_k: int = 16,
                    compute_normals: bool = True) -> FusedPoints:
    """Fuse per-frame depth maps into one coloured point cloud.

    Args:
        frames: (T,3,H,W) float colours in [0,1].
        depths: (T,H,W) z-depth at the frame resolution (scene units; <= 0 invalid).
        cams: cameras (w2c OpenCV, K of the H x W frames).
        valid: optional (T,H,W) bool masks.
        align: estimate per-frame depth scales (see :func:`align_depth_scales`).
        anchor: ``"first"`` or ``"cameras"`` (see :func:`align_depth_scales`).
        reference_xyz: optional (M,3) points that fix the scale.
        voxel_size: voxel edge for down-sampling; ``None`` = 0.25 % of the bounding-box diagonal.
        outlier_k / outlier_std_ratio: statistical outlier removal (``outlier_k=0`` disables it).

    Returns:
        :class:`FusedPoints`.
    """
    T = depths.shape[0]
    scales = (align_depth_scales(depths, cams, valid, reference_xyz=reference_xyz, anchor=anchor) if align
              else np.ones(T))
    centers = cams.centers
    xs, cs, vs, fs = [], [], [], []
    for i in range(T):
        m = None if valid is None else valid[i]
        d_i = depths[i] * scales[i]
        pts, idx = unproject(d_i, cams.K[i], cams.w2c[i], m)
        xs.append(pts)
        cs.append(frames[i].reshape(3, -1).T[idx])
        fs.append(d_i.ravel()[idx, None] / (0.5 * (cams.K[i, 0, 0] + cams.K[i, 1, 1])))  # pixel footprint
        d = centers[i] - pts
        vs.append(d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12))
    xyz = np.concatenate(xs)
    rgb = np.concatenate(cs)
    vdir = np.concatenate(vs)
    foot = np.concatenate(fs)
    if xyz.shape[0] == 0:
        raise ValueError("no valid depth in any frame; nothing to fuse")
    if voxel_size is None:
        diag = float(np.linalg.norm(np.percentile(xyz, 99, axis=0) - np.percentile(xyz, 1, axis=0)))
        voxel_size = max(diag * 0.0025, 1e-9)
    n_raw = xyz.shape[0]
    xyz, rgb, vdir, foot = voxel_down_sample(xyz, voxel_size, rgb, vdir, foot)
    vdir /= np.maximum(np.linalg.norm(vdir, axis=1, keepdims=True), 1e-12)
    if outlier_k > 0:
        keep = statistical_outlier_removal(xyz, outlier_k, outlier_std_ratio,
                                           spacing=np.maximum(foot[:, 0], voxel_size))
        xyz, rgb, vdir = xyz[keep], rgb[keep], vdir[keep]
    normals = estimate_normals(xyz, normals_k, toward=vdir) if compute_normals else None
    logger.info("fused %d depth samples from %d frames into %d points (voxel %.4g)", n_raw, T, xyz.shape[0],
                voxel_size)
    return FusedPoints(xyz=xyz, rgb=np.clip(rgb, 0.0, 1.0), normals=normals, view_dirs=vdir, scales=scales)

