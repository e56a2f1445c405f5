"""The numpy reconstruction implementation as it was before the port to PyTorch (issue 13): the baseline of
``benchmarks/reconstruction.py`` and the reference of the regression tests in ``tests/reconstruction``.

A verbatim copy (float64 NumPy + SciPy) of ``worldstereo.reconstruction`` at commit 8f1c926 — the
modules ``_common`` (lifting / projection / z-buffer), ``fusion``, ``mesh`` (TSDF + marching cubes),
``metrics`` and ``api.reconstruct`` (point cloud and TSDF mesh; the neural field and Open3D Poisson
paths are left out). It is kept here, outside the package, only to be measured against; do not import
it from the library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from worldstereo.geometry.lifting import unproject_depth

logger = logging.getLogger(__name__)


def as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """Convert a tensor / array-like to a NumPy array of ``dtype`` (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


@dataclass(frozen=True)
class CameraArrays:
    """Plain NumPy view of a camera trajectory.

    Attributes:
        w2c: (N,4,4) float64 world-to-camera, OpenCV axes.
        K: (N,3,3) float64 pixel intrinsics of an image of size ``height`` x ``width``.
        height, width: image size ``K`` refers to.
    """

    w2c: np.ndarray
    K: np.ndarray
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def c2w(self) -> np.ndarray:
        """(N,4,4) camera-to-world."""
        return np.linalg.inv(self.w2c)

    @property
    def centers(self) -> np.ndarray:
        """(N,3) camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    def resized(self, height: int, width: int) -> CameraArrays:
        """Rescale K rows 0 / 1 to a ``height`` x ``width`` image."""
        K = self.K.copy()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return CameraArrays(self.w2c, K, int(height), int(width))


def camera_arrays(trajectory: Any, *, num_frames: int | None = None, height: int | None = None,
                  width: int | None = None, name: str = "trajectory") -> CameraArrays:
    """Extract (w2c, K, height, width) from a ``CameraTrajectory`` (or any object with ``w2c``/``K``/
    ``height``/``width`` attributes, or a :class:`CameraArrays`).

    When ``height``/``width`` are given and differ from the trajectory's image size, ``K`` is rescaled
    to that size. Raises ``ValueError``/``TypeError`` naming ``name`` on bad input.
    """
    if isinstance(trajectory, CameraArrays):
        cams = trajectory
    else:
        if not hasattr(trajectory, "w2c"):
            raise TypeError(f"{name} must be a CameraTrajectory (with w2c, K, height, width); "
                            f"got {type(trajectory).__name__}")
        w2c = as_numpy(trajectory.w2c)
        if w2c.ndim == 2:
            w2c = w2c[None]
        if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
            raise ValueError(f"{name}.w2c must have shape (N,4,4); got {tuple(w2c.shape)}")
        K_raw = getattr(trajectory, "K", None)
        th = getattr(trajectory, "height", None)
        tw = getattr(trajectory, "width", None)
        if K_raw is None:
            raise ValueError(f"{name} has no intrinsics; call trajectory.with_intrinsics(...) first")
        K = as_numpy(K_raw)
        if K.ndim == 2:
            K = np.broadcast_to(K, (w2c.shape[0], 3, 3)).copy()
        if K.shape != (w2c.shape[0], 3, 3):
            raise ValueError(f"{name}.K must have shape (N,3,3) or (3,3) with N={w2c.shape[0]}; "
                             f"got {tuple(K.shape)}")
        if th is None or tw is None:
            if height is None or width is None:
                raise ValueError(f"{name} has no image size (height/width); cannot interpret K")
            th, tw = height, width
        cams = CameraArrays(w2c, K, int(th), int(tw))
    if not np.all(np.isfinite(cams.w2c)) or not np.all(np.isfinite(cams.K)):
        raise ValueError(f"{name} contains non-finite camera values")
    if num_frames is not None and len(cams) != num_frames:
        raise ValueError(f"{name} has {len(cams)} cameras but there are {num_frames} frames")
    if height is not None and width is not None and (height, width) != (cams.height, cams.width):
        cams = cams.resized(height, width)
    return cams


def unproject(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lift a z-depth map to world points (pixel (r, c) is lifted at its centre ``(c + 0.5, r + 0.5)``).

    Same points as ``worldstereo.geometry.lifting.unproject_depth`` (which it calls, in float64).

    Args:
        depth: (H,W) z-depth (distance along the optical axis); <= 0 or non-finite = invalid.
        K: (3,3) pixel intrinsics; w2c: (4,4) world-to-camera (OpenCV).
        mask: optional (H,W) bool, True = use the pixel.

    Returns:
        (points (M,3) world float64, flat pixel indices (M,) into the H*W raster).
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H,W); got {tuple(depth.shape)}")
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask.astype(bool)
    idx = np.flatnonzero(valid.ravel())
    if idx.size == 0:
        return np.zeros((0, 3)), idx
    # the library's lifting (pixel centres at (c + 0.5, r + 0.5)), in float64, on the valid pixels only
    d = torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float64))
    pts = unproject_depth(d, torch.from_numpy(np.asarray(K, np.float64)), torch.from_numpy(np.asarray(w2c, np.float64)))
    return pts.numpy()[idx], idx


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points (M,3) into a pinhole camera; returns (u (M,), v (M,), z (M,))."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = cam @ K.T
        u = pix[:, 0] / pix[:, 2]
        v = pix[:, 1] / pix[:, 2]
    return u, v, z


def zbuffer_splat(points: np.ndarray, K: np.ndarray, w2c: np.ndarray, height: int, width: int,
                  *, near: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-point z-buffer of points projected to the pixel that contains them (1-pixel splats).

    A point projecting to ``(u, v)`` lands in pixel (row ``floor(v)``, column ``floor(u)``), i.e. the
    pixel whose centre ``(c + 0.5, r + 0.5)`` is nearest; a point lifted from a pixel centre with
    :func:`unproject` therefore lands back in its own pixel.

    Returns:
        (zbuf (H,W) float64 with +inf where no point lands, owner (H,W) int64 index of the winning
        point or -1).
    """
    u, v, z = project(points, K, w2c)
    with np.errstate(invalid="ignore"):
        ui = np.floor(u)
        vi = np.floor(v)
    ok = (z > near) & np.isfinite(ui) & np.isfinite(vi) & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
    flat = (vi[ok] * width + ui[ok]).astype(np.int64)
    zs = z[ok]
    zbuf = np.full(height * width, np.inf)
    np.minimum.at(zbuf, flat, zs)
    owner = np.full(height * width, -1, dtype=np.int64)
    win = zs <= zbuf[flat]
    owner[flat[win]] = np.flatnonzero(ok)[win]
    return zbuf.reshape(height, width), owner.reshape(height, width)


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


def _points(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "xyz"):
        x = x.xyz
    a = as_numpy(x)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N,3) point array or PointCloud; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite coordinates")
    return a


def umeyama_alignment(src: Any, dst: Any, *, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991) with ``dst ≈ s * R @ src + t``.

    Args:
        src, dst: (N,3) corresponding points, N >= 3 (N >= 2 gives a degenerate but valid fit).
        with_scale: False fixes s = 1 (rigid).

    Returns:
        (s, R (3,3) proper rotation, t (3,)).
    """
    X = _points(src, "src")
    Y = _points(dst, "dst")
    if X.shape != Y.shape:
        raise ValueError(f"src and dst must have the same shape; got {X.shape} and {Y.shape}")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    cov = Yc.T @ Xc / X.shape[0]
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_x = (Xc**2).sum() / X.shape[0]
    s = float(np.trace(np.diag(D) @ S) / var_x) if with_scale and var_x > 0 else 1.0
    t = my - s * R @ mx
    return s, R, t


def apply_sim3(points: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply ``x -> s R x + t`` to (N,3) points."""
    return s * points @ R.T + t


def icp_align(src: Any, dst: Any, *, iterations: int = 30, max_distance: float | None = None,
              with_scale: bool = False, tol: float = 1e-7) -> tuple[float, np.ndarray, np.ndarray]:
    """Point-to-point ICP of ``src`` onto ``dst`` (nearest neighbours + Umeyama each iteration).

    Returns the accumulated (s, R, t) with ``dst ≈ s R src + t``. ``max_distance`` rejects pairs that
    are farther apart (None = keep all).
    """
    X = _points(src, "src")
    Y = _points(dst, "dst")
    tree = cKDTree(Y)
    s, R, t = 1.0, np.eye(3), np.zeros(3)
    prev = np.inf
    for _ in range(iterations):
        cur = apply_sim3(X, s, R, t)
        d, j = tree.query(cur)
        keep = d <= max_distance if max_distance is not None else np.ones_like(d, bool)
        if keep.sum() < 3:
            break
        ds, dR, dt = umeyama_alignment(cur[keep], Y[j[keep]], with_scale=with_scale)
        s, R, t = ds * s, dR @ R, ds * dR @ t + dt
        err = float(np.mean(d[keep] ** 2))
        if abs(prev - err) < tol * max(err, 1e-30):
            break
        prev = err
    return s, R, t


@dataclass(frozen=True)
class PointCloudScores:
    """Tanks-and-Temples style scores of a predicted cloud against a reference cloud.

    Attributes:
        tau: threshold (scene units of the reference). precision, recall, f1 at ``tau`` (in [0,1]).
        accuracy: mean distance prediction -> reference. completeness: mean distance reference -> prediction.
        auc: normalised area under F1(t) for t in (0, auc_max] (in [0,1]).
        sim3: (s, R, t) alignment applied to the prediction.
    """

    tau: float
    precision: float
    recall: float
    f1: float
    accuracy: float
    completeness: float
    auc: float
    sim3: tuple[float, np.ndarray, np.ndarray]

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics as a plain dict."""
        return {"tau": self.tau, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "accuracy": self.accuracy, "completeness": self.completeness, "auc": self.auc}


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def point_cloud_scores(pred: Any, reference: Any, *, tau: float | None = None, tau_fraction: float = 0.01,
                       auc_max: float | None = None, auc_steps: int = 50, pred_cameras: Any = None,
                       reference_cameras: Any = None, icp: bool = False,
                       icp_max_distance: float | None = None) -> PointCloudScores:
    """Accuracy / completeness / precision / recall / F1 / AUC of ``pred`` against ``reference``.

    Args:
        pred, reference: (N,3) arrays / tensors or objects with ``.xyz`` (PointCloud).
        tau: distance threshold; default ``tau_fraction`` x the reference bounding-box diagonal.
        auc_max: largest threshold of the AUC grid (default 2 tau).
        pred_cameras, reference_cameras: optional corresponding trajectories; when both are given
            the prediction is first aligned by Umeyama Sim(3) on the camera centres.
        icp: refine the alignment with rigid point-to-point ICP (pairs within ``icp_max_distance``,
            default 2 tau).
    """
    P = _points(pred, "pred")
    G = _points(reference, "reference")
    if tau is None:
        tau = tau_fraction * float(np.linalg.norm(G.max(0) - G.min(0)))
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    s, R, t = 1.0, np.eye(3), np.zeros(3)
    if (pred_cameras is None) != (reference_cameras is None):
        raise ValueError("give both pred_cameras and reference_cameras (or neither)")
    if pred_cameras is not None:
        cp = camera_arrays(pred_cameras, name="pred_cameras").centers
        cg = camera_arrays(reference_cameras, name="reference_cameras", num_frames=None).centers
        if cp.shape != cg.shape:
            raise ValueError(f"pred_cameras ({len(cp)}) and reference_cameras ({len(cg)}) must correspond")
        s, R, t = umeyama_alignment(cp, cg)
    P = apply_sim3(P, s, R, t)
    if icp:
        s2, R2, t2 = icp_align(P, G, max_distance=icp_max_distance if icp_max_distance is not None else 2 * tau)
        P = apply_sim3(P, s2, R2, t2)
        s, R, t = s2 * s, R2 @ R, s2 * R2 @ t + t2
    d_pg, _ = cKDTree(G).query(P)
    d_gp, _ = cKDTree(P).query(G)
    prec = float(np.mean(d_pg < tau))
    rec = float(np.mean(d_gp < tau))
    amax = auc_max if auc_max is not None else 2 * tau
    ts = np.linspace(amax / auc_steps, amax, auc_steps)
    f1s = [_f1(float(np.mean(d_pg < x)), float(np.mean(d_gp < x))) for x in ts]
    return PointCloudScores(tau=float(tau), precision=prec, recall=rec, f1=_f1(prec, rec),
                            accuracy=float(d_pg.mean()), completeness=float(d_gp.mean()), auc=float(np.mean(f1s)),
                            sim3=(s, R, t))


def _rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    rel = np.einsum("nij,nkj->nik", Ra, Rb)  # Ra Rb^T
    cos = (np.trace(rel, axis1=1, axis2=2) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def camera_pose_errors(pred: Any, reference: Any, *, align: str = "sim3") -> dict[str, float]:
    """Pose errors between two corresponding trajectories.

    Args:
        pred, reference: CameraTrajectory-like (w2c (N,4,4) OpenCV); intrinsics are not needed.
        align: ``"sim3"`` (Umeyama similarity on camera centres, also rotating the predicted
            orientations), ``"se3"`` (rigid) or ``"none"``.

    Returns:
        dict with ``rot_err_deg`` (mean geodesic angle between c2w rotations, degrees),
        ``trans_err`` (mean centre distance), ``ate`` (RMSE of centre distances), ``scale`` (applied).
    """
    if align not in ("sim3", "se3", "none"):
        raise ValueError(f"align must be 'sim3', 'se3' or 'none'; got {align!r}")
    wp = as_numpy(pred.w2c if hasattr(pred, "w2c") else pred)
    wg = as_numpy(reference.w2c if hasattr(reference, "w2c") else reference)
    if wp.ndim != 3 or wp.shape[1:] != (4, 4) or wp.shape != wg.shape:
        raise ValueError(f"pred and reference must be (N,4,4) w2c of the same N; got {wp.shape} and {wg.shape}")
    cp, cg = np.linalg.inv(wp), np.linalg.inv(wg)
    Rp, Rg = cp[:, :3, :3], cg[:, :3, :3]
    Cp, Cg = cp[:, :3, 3], cg[:, :3, 3]
    s, R, t = 1.0, np.eye(3), np.zeros(3)
    if align != "none" and len(Cp) >= 2:
        s, R, t = umeyama_alignment(Cp, Cg, with_scale=(align == "sim3"))
    elif align != "none":  # one camera: align its pose exactly (errors are then 0 by definition)
        R = Rg[0] @ Rp[0].T
        t = Cg[0] - R @ Cp[0]
    Cp2 = apply_sim3(Cp, s, R, t)
    Rp2 = np.einsum("ij,njk->nik", R, Rp)
    dist = np.linalg.norm(Cp2 - Cg, axis=1)
    return {"rot_err_deg": float(_rotation_angle_deg(Rp2, Rg).mean()), "trans_err": float(dist.mean()),
            "ate": float(np.sqrt(np.mean(dist**2))), "scale": float(s)}


def _img(x: Any, name: str) -> np.ndarray:
    a = as_numpy(x)
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"{name} must be (C,H,W) with C in (1,3); got shape {a.shape}")
    return a


def masked_psnr(pred: Any, target: Any, mask: Any = None, *, data_range: float = 1.0) -> float:
    """PSNR (dB) over the pixels where ``mask`` (H,W) is true (all pixels when None).

    Images (C,H,W) in [0, data_range]. Returns ``inf`` for identical images and ``nan`` for an
    empty mask.
    """
    a, b = _img(pred, "pred"), _img(target, "target")
    if a.shape != b.shape:
        raise ValueError(f"pred {a.shape} and target {b.shape} must have the same shape")
    m = np.ones(a.shape[1:], bool) if mask is None else as_numpy(mask, bool).reshape(a.shape[1:])
    if not m.any():
        return float("nan")
    mse = float(np.mean((a[:, m] - b[:, m]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def masked_ssim(pred: Any, target: Any, mask: Any = None, *, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5; Wang et al. 2004 constants) over masked pixels.

    The SSIM map is computed on the full images and averaged over ``mask`` eroded by the window
    radius (so that windows do not straddle the mask border); the plain mask is used if erosion
    empties it.
    """
    from scipy.ndimage import binary_erosion

    a, b = _img(pred, "pred"), _img(target, "target")
    if a.shape != b.shape:
        raise ValueError(f"pred {a.shape} and target {b.shape} must have the same shape")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    maps = []
    for x, y in zip(a, b):
        mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
        sxx = gaussian_filter(x * x, sigma) - mx * mx
        syy = gaussian_filter(y * y, sigma) - my * my
        sxy = gaussian_filter(x * y, sigma) - mx * my
        maps.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))
    smap = np.mean(maps, axis=0)
    m = np.ones(a.shape[1:], bool) if mask is None else as_numpy(mask, bool).reshape(a.shape[1:])
    me = binary_erosion(m, iterations=int(np.ceil(3 * sigma)), border_value=1)
    if me.any():
        m = me
    return float(smap[m].mean()) if m.any() else float("nan")


def warp_frame(src_image: Any, src_depth: Any, dst_depth: Any, K_src: Any, w2c_src: Any, K_dst: Any, w2c_dst: Any,
               *, rel_tol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Warp a source frame into a destination view using the destination depth (backward warp).

    Every destination pixel is lifted with ``dst_depth``, projected into the source camera and the
    source image is sampled bilinearly there. A pixel is valid when it lands inside the source
    image and the source depth there agrees within ``rel_tol`` (relative) — i.e. it is not occluded.

    Args:
        src_image: (3,Hs,Ws) [0,1]; src_depth: (Hs,Ws) z-depth; dst_depth: (H,W) z-depth.
        K_*: (3,3) pixel intrinsics; w2c_*: (4,4) OpenCV world-to-camera.

    Returns:
        (warped (3,H,W), valid (H,W) bool).
    """
    img = _img(src_image, "src_image")
    ds = as_numpy(src_depth)
    dd = as_numpy(dst_depth)
    H, W = dd.shape
    pts, idx = unproject(dd, as_numpy(K_dst), as_numpy(w2c_dst))
    u, v, z = project(pts, as_numpy(K_src), as_numpy(w2c_src))
    good = np.isfinite(u) & np.isfinite(v) & (z > 0)
    u = np.where(good, u, -10.0)
    v = np.where(good, v, -10.0)
    dsrc = _bilinear(np.where(np.isfinite(ds), ds, 0.0), u, v)
    ok = good & (dsrc > 0) & (np.abs(dsrc - z) <= rel_tol * z)
    warped = np.zeros((img.shape[0], H * W))
    for c in range(img.shape[0]):
        warped[c, idx] = _bilinear(img[c] + 1.0, u, v) - 1.0  # +1 keeps zero-valued colours "valid"
    valid = np.zeros(H * W, bool)
    valid[idx[ok]] = True
    warped[:, ~valid] = 0.0
    return warped.reshape(-1, H, W), valid.reshape(H, W)


def reprojection_psnr(frames: Any, depths: Any, cameras: Any, *, pairs: list[tuple[int, int]] | None = None,
                      rel_tol: float = 0.05) -> dict[str, float]:
    """Masked re-projection PSNR/SSIM: warp frame j into frame i (with the depths) and compare.

    Args:
        frames: (T,3,H,W) [0,1]; depths: (T,H,W) z-depth; cameras: CameraTrajectory-like of T views.
        pairs: (i, j) pairs; default consecutive pairs (t+1 -> t).

    Returns:
        ``{"reprojection_psnr", "reprojection_ssim", "reprojection_valid_fraction"}`` averaged over pairs
        (PSNR averaged in dB over the pairs with valid pixels).
    """
    F = as_numpy(frames)
    D = as_numpy(depths)
    if F.ndim != 4 or D.ndim != 3 or F.shape[0] != D.shape[0] or F.shape[2:] != D.shape[1:]:
        raise ValueError(f"frames (T,3,H,W) and depths (T,H,W) must match; got {F.shape} and {D.shape}")
    T, _, H, W = F.shape
    cams = camera_arrays(cameras, num_frames=T, height=H, width=W, name="cameras")
    if pairs is None:
        pairs = [(t, t + 1) for t in range(T - 1)]
    psnrs, ssims, fracs = [], [], []
    for i, j in pairs:
        warped, valid = warp_frame(F[j], D[j], D[i], cams.K[j], cams.w2c[j], cams.K[i], cams.w2c[i], rel_tol=rel_tol)
        fracs.append(float(valid.mean()))
        if valid.sum() >= 16:
            psnrs.append(masked_psnr(warped, F[i], valid))
            ssims.append(masked_ssim(warped, F[i], valid))
    finite = [p for p in psnrs if np.isfinite(p)]
    return {"reprojection_psnr": float(np.mean(finite)) if finite else float("inf") if psnrs else float("nan"),
            "reprojection_ssim": float(np.mean(ssims)) if ssims else float("nan"),
            "reprojection_valid_fraction": float(np.mean(fracs)) if fracs else 0.0}


def _check_frames(frames: Any) -> np.ndarray:
    if isinstance(frames, (list, tuple)):
        frames = torch.stack([torch.as_tensor(f) for f in frames])
    if not isinstance(frames, (torch.Tensor, np.ndarray)):
        raise TypeError(f"frames must be a (T,3,H,W) tensor/array in [0,1]; got {type(frames).__name__}")
    f = as_numpy(frames)
    if f.ndim != 4 or f.shape[1] != 3:
        raise ValueError(f"frames must have shape (T,3,H,W); got {tuple(f.shape)}")
    if f.shape[0] < 1 or f.shape[2] < 2 or f.shape[3] < 2:
        raise ValueError(f"frames must contain at least one frame of at least 2x2 pixels; got {tuple(f.shape)}")
    if not np.all(np.isfinite(f)):
        raise ValueError("frames contain non-finite values")
    if f.min() < -1e-3 or f.max() > 1 + 1e-3:
        raise ValueError(f"frames must be float in [0,1]; got range [{f.min():.3g}, {f.max():.3g}]")
    return np.clip(f, 0.0, 1.0)


def _resolve_depth(depth: Any, frames: np.ndarray, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Depth maps (T,H,W) + valid masks from an array or a DepthEstimator (resized to the frames)."""
    T, _, H, W = frames.shape
    if depth is None:
        raise ValueError("depth is required: pass (T,H,W) depth maps or a DepthEstimator "
                         "(e.g. from worldstereo.depth)")
    if isinstance(depth, (torch.Tensor, np.ndarray, list, tuple)):
        d = as_numpy(torch.stack([torch.as_tensor(x) for x in depth]) if isinstance(depth, (list, tuple)) else depth)
        if d.ndim == 4 and d.shape[1] == 1:
            d = d[:, 0]
        if d.ndim != 3 or d.shape[0] != T:
            raise ValueError(f"depth must have shape (T,H,W) with T={T}; got {tuple(d.shape)}")
        valid = np.isfinite(d) & (d > 0)
    elif callable(depth):
        from tqdm.auto import tqdm

        ds, vs = [], []
        for t in tqdm(range(T), desc="depth", disable=not progress):
            pred = depth(torch.from_numpy(frames[t]).float())
            if not hasattr(pred, "depth"):
                raise TypeError("depth estimator must return a DepthPrediction (with .depth and .valid_mask)")
            ds.append(as_numpy(pred.depth))
            vs.append(as_numpy(getattr(pred, "valid_mask", pred.depth > 0), bool))
        d, valid = np.stack(ds), np.stack(vs)
    else:
        raise TypeError(f"depth must be a (T,H,W) tensor/array or a DepthEstimator; got {type(depth).__name__}")
    if d.shape[1:] != (H, W):
        t_d = torch.from_numpy(np.where(valid, d, 0.0))[:, None].float()
        t_v = torch.from_numpy(valid.astype(np.float32))[:, None]
        d = torch.nn.functional.interpolate(t_d, size=(H, W), mode="nearest-exact")[:, 0].double().numpy()
        valid = torch.nn.functional.interpolate(t_v, size=(H, W), mode="nearest-exact")[:, 0].numpy() > 0.5
    return np.where(valid, d, 0.0), valid & (d > 0)


def _splat_psnr(xyz: np.ndarray, rgb: np.ndarray, frames: np.ndarray, cams: CameraArrays,
                depths: np.ndarray, rel_tol: float = 0.03) -> tuple[float, float]:
    """Mean masked PSNR/SSIM of 1-pixel z-buffer renders of coloured points against the frames.

    Only pixels whose front-most point lies on the frame's (aligned) depth surface (within
    ``rel_tol``) are compared, so that points seen through gaps between splats do not count.
    """
    T, _, H, W = frames.shape
    ps, ss = [], []
    for t in range(T):
        zbuf, owner = zbuffer_splat(xyz, cams.K[t], cams.w2c[t], H, W)
        m = (owner >= 0) & (depths[t] > 0) & (np.abs(zbuf - depths[t]) <= rel_tol * depths[t])
        if m.sum() < 16:
            continue
        img = np.zeros((3, H, W))
        img[:, m] = rgb[owner[m]].T
        p = masked_psnr(img, frames[t], m)
        if np.isfinite(p):
            ps.append(p)
        ss.append(masked_ssim(img, frames[t], m))
    return (float(np.mean(ps)) if ps else float("nan")), (float(np.mean(ss)) if ss else float("nan"))


def reconstruct(frames: Any, trajectory: Any, method: str = "point_cloud", depth: Any = None, *,
                reference_points: Any = None, voxel_size: float | None = None, align_depth: bool = True,
                scale_anchor: str = "first", outlier_std_ratio: float = 2.0, mesh_voxel_size: float | None = None,
                compute_metrics: bool = True, progress: bool = False) -> dict[str, Any]:
    """``worldstereo.reconstruction.reconstruct`` before the port, for ``method`` "point_cloud" or "mesh"
    (TSDF). Returns a dict with the keys of ``Reconstruction`` (NumPy arrays)."""
    if method not in ("point_cloud", "mesh"):
        raise ValueError(f"method must be 'point_cloud' or 'mesh'; got {method!r}")
    F = _check_frames(frames)
    T, _, H, W = F.shape
    cams = camera_arrays(trajectory, num_frames=T, height=H, width=W, name="trajectory")
    ref_xyz = None
    if reference_points is not None:
        ref_xyz = as_numpy(reference_points.xyz if hasattr(reference_points, "xyz") else reference_points)
    D, valid = _resolve_depth(depth, F, progress)

    fused = fuse_depth_maps(F, D, cams, valid, align=align_depth, anchor=scale_anchor, reference_xyz=ref_xyz,
                            voxel_size=voxel_size, outlier_std_ratio=outlier_std_ratio)
    D_al = D * fused.scales[:, None, None]
    xyz, rgb, normals = fused.xyz, fused.rgb, fused.normals
    mesh = None
    metrics: dict[str, float] = {}
    if method == "mesh":
        fv = voxel_size if voxel_size is not None else float(
            np.linalg.norm(xyz.max(0) - xyz.min(0)) * 0.0025)
        mv = mesh_voxel_size if mesh_voxel_size is not None else 2.0 * fv
        margin = 4 * mv
        vol = tsdf_fusion(F, D_al, cams, voxel_size=mv, bounds=(xyz.min(0) - margin, xyz.max(0) + margin),
                          surface_points=xyz)
        mesh = mesh_from_tsdf(vol)
        metrics["num_vertices"] = float(len(mesh.vertices))
        metrics["num_faces"] = float(len(mesh.faces))
    if compute_metrics:
        metrics["num_points"] = float(xyz.shape[0])
        if method == "mesh":
            vx = np.asarray(mesh.vertices, dtype=np.float64)
            vc = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
            p, s = _splat_psnr(vx, vc, F, cams, D_al)
        else:
            p, s = _splat_psnr(xyz, rgb, F, cams, D_al)
        metrics["reprojection_psnr"] = p
        metrics["reprojection_ssim"] = s
        if T > 1:
            cons = reprojection_psnr(F, D_al, cams)
            metrics["frame_consistency_psnr"] = cons["reprojection_psnr"]
            metrics["frame_consistency_valid_fraction"] = cons["reprojection_valid_fraction"]
    return {"points": xyz, "colors": rgb, "normals": normals, "mesh": mesh, "depths": D_al,
            "depth_scales": fused.scales, "quality_metrics": metrics, "method": method}
