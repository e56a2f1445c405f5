"""Multi-view depth fusion into a point cloud, in PyTorch on the device of the inputs.

Pipeline: per-frame depth (given or estimated) -> per-frame scale alignment (to the first frame, or to
a reference point cloud) -> lifting with the known cameras -> voxel down-sampling -> statistical
outlier removal -> PCA normals oriented toward the observing cameras.

Frames are lifted in chunks (``_CHUNK_PIXELS`` pixels at a time, batched over the frames of a chunk)
and reduced into running per-voxel sums, so the memory beyond the inputs is bounded by the chunk and
the number of occupied voxels, not by the number of frames.

Conventions: cameras are world-to-camera 4x4 (OpenCV axes); depth is z-depth in scene units; frames
are float in [0, 1], shape (T,3,H,W); pixel (row r, column c) has its centre at image coordinates
``(c + 0.5, r + 0.5)`` (the library convention). Lifting, z-buffering, bilinear sampling and the
nearest-neighbour search are :mod:`worldstereo.geometry`'s; everything runs in float32 unless stated.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from worldstereo.geometry.lifting import unproject_depth
from worldstereo.geometry.neighbors import knn_points
from worldstereo.geometry.projection import zbuffer
from worldstereo.geometry.sampling import sample_bilinear

from ._common import CameraArrays, camera_arrays, frames_per_chunk, median, to_tensor

__all__ = [
    "FusedPoints",
    "align_depth_scales",
    "estimate_normals",
    "fuse_depth_maps",
    "statistical_outlier_removal",
    "voxel_down_sample",
]

logger = logging.getLogger(__name__)

_CHUNK_PIXELS = 1 << 22  # pixels lifted at once (a chunk holds at least one frame)
_SEARCH_BATCH = 16  # candidate overall scales evaluated together by align_depth_scales(anchor="cameras")


@dataclass
class FusedPoints:
    """Result of :func:`fuse_depth_maps` (tensors on the device of the inputs, world coordinates).

    Attributes:
        xyz: (N,3) float32 points. rgb: (N,3) float32 in [0,1]. normals: (N,3) float32 unit normals or None.
        view_dirs: (N,3) float32 unit vectors from the points toward the cameras that observed them.
        scales: (T,) float64 per-frame depth scale factors that were applied.
    """

    xyz: Tensor
    rgb: Tensor
    normals: Tensor | None
    view_dirs: Tensor
    scales: Tensor


def _depth_input(depths: Any, valid: Any, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """(T,H,W) float32 depth with 0 at invalid pixels, and the (T,H,W) bool validity (finite, > 0, mask)."""
    D = to_tensor(depths, device=device)
    if D.dim() != 3:
        raise ValueError(f"depths must have shape (T,H,W); got {tuple(D.shape)}")
    ok = torch.isfinite(D) & (D > 0)
    if valid is not None:
        ok &= to_tensor(valid, dtype=torch.bool, device=D.device)
    return torch.where(ok, D, torch.zeros_like(D)), ok


# ----------------------------------------------------------------------------------------------
# scale alignment
# ----------------------------------------------------------------------------------------------
class _ScaleFitter:
    """Per-frame depth-scale fits against world points (see :func:`align_depth_scales`)."""

    def __init__(self, depth: Tensor, ok: Tensor, cams: CameraArrays, min_overlap: int, max_points: int) -> None:
        self.depth, self.ok, self.cams, self.min_overlap = depth, ok, cams, min_overlap
        T, H, W = depth.shape
        self.centers = cams.centers.float()
        # a fixed random subset of every frame's valid pixels, lifted at scale 1; the points at scale s
        # are c + s (p - c) (c = camera centre), exactly the lifting of s x depth
        gen = torch.Generator().manual_seed(0)
        self.base: list[Tensor] = []
        for i in range(T):
            idx = ok[i].reshape(-1).nonzero().squeeze(1)
            if idx.numel() > max_points:
                idx = idx[torch.randperm(idx.numel(), generator=gen)[:max_points].to(idx.device)]
            self.base.append(unproject_depth(depth[i], cams.K[i], cams.w2c[i], pixels=idx))

    def lifted(self, i: int, scale: Tensor) -> Tensor:
        """(B,P,3) subset of frame ``i`` lifted at each of the (B,) scales."""
        c = self.centers[i]
        return c + scale.to(device=c.device, dtype=torch.float32)[:, None, None] * (self.base[i] - c)

    def fit(self, j: int, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scale of frame ``j`` against each of the (B,P,3) point sets ``ref``.

        The points are z-buffered into camera j (front-most point per pixel, which removes occluded
        points); the depth of frame j is sampled bilinearly at each winner's exact projection; the
        scale is the median of true-z / observed-depth, refined once after discarding ratios more than
        20 % from the first median.

        Returns:
            (B,) float64 scales, (B,) median relative residuals, (B,) bool "enough overlap".
        """
        B = ref.shape[0]
        H, W = self.depth.shape[1:]
        zb = zbuffer(ref, self.cams.w2c[j].expand(B, 4, 4), self.cams.K[j].expand(B, 3, 3), H, W)
        scale = torch.ones(B, dtype=torch.float64)
        resid = torch.full((B,), math.inf, dtype=torch.float64)
        good = torch.zeros(B, dtype=torch.bool)
        img, vmask = self.depth[j][None, None], self.ok[j][None]
        for b in range(B):
            win = zb.index[b][zb.index[b] >= 0]
            if win.numel() < self.min_overlap:
                continue
            d, inside = sample_bilinear(img, zb.u[b, win][None], zb.v[b, win][None], vmask)
            r = zb.z[b, win][inside[0]] / d[0, 0, inside[0]]
            r = r[torch.isfinite(r) & (r > 0)]
            if r.numel() < self.min_overlap:
                continue
            r = torch.sort(r).values
            m = median(r, is_sorted=True)
            r2 = r[(r / m - 1.0).abs() < 0.2]  # a contiguous, sorted range of r
            if r2.numel() >= self.min_overlap:
                m = median(r2, is_sorted=True)
            scale[b], resid[b], good[b] = float(m), _median_relative_deviation(r, float(m)), True
        return scale, resid, good

    def chain(self, s0: Tensor, count: int, warn: bool = True) -> tuple[Tensor, Tensor]:
        """Align frames 1..count-1 one after the other, each against the (up to 4) frames before it
        (against all earlier frames when those do not overlap it), for B starting scales ``s0`` of
        frame 0 at once.

        Returns:
            (B,count) float64 scales and (B,) mean residual of the fits (inf for a start that loses
            the overlap when ``warn`` is False, i.e. during the scale search).
        """
        B = s0.shape[0]
        scales = torch.ones(B, count, dtype=torch.float64)
        scales[:, 0] = s0
        total = torch.zeros(B, dtype=torch.float64)
        n_fit = torch.zeros(B, dtype=torch.int64)
        alive = torch.ones(B, dtype=torch.bool)
        for j in range(1, count):
            ref = torch.cat([self.lifted(i, scales[:, i]) for i in range(max(0, j - 4), j)], dim=1)
            m, res, good = self.fit(j, ref)
            if not bool(good.all()) and j > 4:
                ref = torch.cat([self.lifted(i, scales[:, i]) for i in range(j)], dim=1)
                m2, res2, good2 = self.fit(j, ref)
                m, res, good = torch.where(good, m, m2), torch.where(good, res, res2), good | good2
            if not bool(good.all()):
                if not warn:  # scale search: a candidate that loses the overlap is rejected
                    alive &= good
                else:
                    logger.warning("frame %d does not overlap earlier frames; its depth scale is left at 1", j)
            scales[:, j] = torch.where(good, m, torch.ones_like(m))
            total += torch.where(good, res, torch.zeros_like(res))
            n_fit += good.long()
        residual = torch.where(alive & (n_fit > 0), total / n_fit.clamp_min(1), torch.full_like(total, math.inf))
        return scales, residual


def _median_relative_deviation(r: Tensor, m: float) -> float:
    """Median of ``|r / m - 1|`` for sorted ``r``: the deviations below ``m`` (reversed) and above it
    are two sorted sequences, whose k-th smallest value a bisection finds without a sort."""
    split = int(torch.searchsorted(r, torch.tensor(m, dtype=r.dtype, device=r.device)))
    below = (1.0 - r[:split] / m).flip(0)  # increasing
    above = r[split:] / m - 1.0  # increasing
    n = r.numel()

    def kth(k: int) -> float:  # k-th smallest (1-based) of below + above
        lo, hi = max(0, k - above.numel()), min(k, below.numel())
        while lo < hi:  # the number i of values taken from ``below``
            i = (lo + hi) // 2
            if float(below[i]) < float(above[k - i - 1]):
                lo = i + 1
            else:
                hi = i
        cands = ([float(below[lo - 1])] if lo > 0 else []) + ([float(above[k - lo - 1])] if k - lo > 0 else [])
        return max(cands)

    return kth((n + 1) // 2) if n % 2 else 0.5 * (kth(n // 2) + kth(n // 2 + 1))


def align_depth_scales(depths: Any, cams: Any, valid: Any = None, *, reference_xyz: Any = None,
                       anchor: str = "first", min_overlap: int = 50, max_points_per_frame: int = 40000) -> Tensor:
    """Estimate one multiplicative scale per frame so that the depth maps agree in 3D.

    Relative fit: frame j is fitted against already-aligned frames — a fixed random subset (at most
    ``max_points_per_frame``) of their lifted points is z-buffered into camera j (front-most point
    per pixel, which removes occluded points), and the scale is the median of true-z /
    observed-depth over the overlapping pixels (depth sampled bilinearly at the exact projections),
    refined once after discarding ratios more than 20 % from the first median. Frames are aligned
    one after the other (each fit needs the previous scales); the lifting is batched over frames.

    Anchors (what fixes the overall scale):
        * ``reference_xyz`` given: every frame is fitted against these (M,3) world points together
          with the (up to 4) previous frames already aligned to them, which supply occluders and
          overlap where the reference has none.
        * ``anchor="first"``: frame 0 keeps scale 1 (its depth is in the trajectory's units).
        * ``anchor="cameras"``: the scale of frame 0 is also estimated, from the camera baselines —
          a log-scale search for the frame-0 scale that makes the chained fit of the next frames
          geometrically consistent (smallest median relative depth residual; the candidate scales
          of a search step are evaluated as one batch). Needs translation between cameras; falls
          back to ``"first"`` (with a warning) for pure rotations.

    Args:
        depths: (T,H,W) z-depth maps (<= 0 / non-finite = invalid), tensor (any device) or array.
        cams: cameras of the frames at the depth resolution (``CameraTrajectory`` or CameraArrays).
        valid: optional (T,H,W) bool masks.
        min_overlap: frames with fewer overlapping pixels keep their current scale (warning).

    Returns:
        (T,) float64 scale factors (multiply depth by them), on the CPU.
    """
    if anchor not in ("first", "cameras"):
        raise ValueError(f"anchor must be 'first' or 'cameras'; got {anchor!r}")
    D, ok = _depth_input(depths, valid)
    T, H, W = D.shape
    cams = camera_arrays(cams, num_frames=T, name="cams", device=D.device)
    fitter = _ScaleFitter(D, ok, cams, min_overlap, max_points_per_frame)

    if reference_xyz is not None:
        ref_xyz = to_tensor(reference_xyz.xyz if hasattr(reference_xyz, "xyz") else reference_xyz, device=D.device)
        scales = torch.ones(T, dtype=torch.float64)
        done: list[Tensor] = []
        for j in range(T):
            # the frames already aligned to the reference add the occluders the reference may lack
            m, _, good = fitter.fit(j, torch.cat([ref_xyz, *done[-4:]], dim=0)[None])
            if not bool(good[0]):
                logger.warning("frame %d does not overlap the reference points; its depth scale is left at 1", j)
            else:
                scales[j] = m[0]
                done.append(fitter.lifted(j, m)[0])
        return scales

    s0 = 1.0
    if anchor == "cameras" and T >= 2:
        centers = cams.centers
        baseline = float((centers - centers[0]).norm(dim=1).max())
        med_depth = float(median(D[ok])) if bool(ok.any()) else 0.0
        if baseline <= 1e-6 * max(med_depth, 1e-12):
            logger.warning("cameras have no baseline; the overall depth scale cannot be estimated (anchor='first')")
        else:
            count = min(T, 4)
            lo, hi, best = math.log(1e-2), math.log(1e2), 0.0
            for n_grid in (41, 15, 15):
                grid = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
                costs = torch.cat([fitter.chain(torch.exp(grid[b:b + _SEARCH_BATCH]), count, warn=False)[1]
                                   for b in range(0, n_grid, _SEARCH_BATCH)])
                k = int(torch.argmin(costs))
                best = float(grid[k])
                step = float(grid[1] - grid[0])
                lo, hi = best - step, best + step
            s0 = math.exp(best)
            logger.info("depth scale of frame 0 estimated from the camera baselines: %.4g", s0)
    return fitter.chain(torch.tensor([s0], dtype=torch.float64), T)[0][0]


# ----------------------------------------------------------------------------------------------
# voxel reduction
# ----------------------------------------------------------------------------------------------
_KEY_BITS = 21  # bits per axis of a packed voxel key (indices in [-2^20, 2^20))
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


class _VoxelSums:
    """Running per-voxel sums of points and attributes (voxels of edge ``voxel_size`` aligned to the
    world origin, index ``floor(xyz / voxel_size)``), fed chunk by chunk.

    A voxel is one int64 key (21 offset-binary bits per axis, lexicographic order = key order) while
    every index fits, else (a scene more than a million voxels across) a row of its 3 indices.
    Points are summed as offsets from their voxel's corner (in [0, voxel_size)), which keeps the
    float32 sums exact to the input precision wherever the scene lies. Neighbouring pixels of an
    image row mostly fall into the same voxel, so every chunk is first reduced run by run (no sort),
    then merged into the sorted running sums.
    """

    def __init__(self, voxel_size: float) -> None:
        self.voxel = float(voxel_size)
        self.packed = True
        self.keys: Tensor | None = None  # (V,) packed keys or (V,3) indices, sorted
        self.sums: Tensor | None = None  # (V,3+a)
        self.counts: Tensor | None = None  # (V,)

    @staticmethod
    def _unpack(key: Tensor) -> Tensor:
        mask = (1 << _KEY_BITS) - 1
        return torch.stack([key >> (2 * _KEY_BITS), (key >> _KEY_BITS) & mask, key & mask], 1) - _KEY_OFFSET

    def add(self, vals: Tensor, valid: Tensor | None = None) -> None:
        """Accumulate (n,3+a) rows — a point, then its a attributes — of which only those with
        ``valid`` (n,) count."""
        self.add_planar([vals.t()], None if valid is None else [valid])

    def add_planar(self, vals: list[Tensor], valid: list[Tensor] | None = None) -> None:
        """Accumulate blocks of (3+a, n_i) columns — a point, then its a attributes (``vals`` are
        overwritten) — of which only those with ``valid[i]`` (n_i,) count; runs of equal voxels
        within a block (e.g. along an image row) are reduced first, then all blocks are merged."""
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        for b, v in enumerate(vals):
            if v.shape[1]:
                parts.append(self._runs(v, None if valid is None else valid[b], parts))
        if not parts:
            return
        key = torch.cat([p[0] for p in parts] + ([self.keys] if self.keys is not None else []))
        sums = torch.cat([p[1] for p in parts] + ([self.sums] if self.sums is not None else []))
        cnt = torch.cat([p[2] for p in parts] + ([self.counts] if self.counts is not None else []))
        ukey, inv = torch.unique(key, sorted=True, return_inverse=True, dim=None if self.packed else 0)
        self.keys = ukey
        self.sums = torch.zeros(ukey.shape[0], sums.shape[1], dtype=sums.dtype, device=sums.device).index_add_(0, inv, sums)
        self.counts = torch.zeros(ukey.shape[0], dtype=torch.int64, device=cnt.device).index_add_(0, inv, cnt)

    def _runs(self, vals: Tensor, valid: Tensor | None,
              pending: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        """(keys, (R,3+a) sums, (R,) counts) of the runs of equal voxels of one block."""
        ijk_f = torch.floor(vals[:3] / self.voxel)
        finite_idx = ijk_f if valid is None else ijk_f[:, valid]
        if finite_idx.numel() and float(finite_idx.abs().max()) >= 2.0**62:
            raise ValueError(f"voxel_size: {self.voxel!r} is too small for points {float(vals[:3].abs().max()):.4g} "
                             f"away from the origin (voxel indices overflow 64-bit integers)")
        vals[:3].sub_(ijk_f * self.voxel)  # offset from the voxel corner
        ijk = ijk_f.long()
        del ijk_f
        if valid is not None and bool(valid.all()):
            valid = None
        if self.packed and bool(((ijk < -_KEY_OFFSET) | (ijk >= _KEY_OFFSET)).any()):
            if valid is not None:
                ijk = torch.where(valid, ijk, torch.zeros_like(ijk))
            if bool(((ijk < -_KEY_OFFSET) | (ijk >= _KEY_OFFSET)).any()):
                self._to_rows()
                pending[:] = [(self._unpack(k), v, c) for k, v, c in pending]
        if not self.packed:
            if valid is not None:
                ijk, vals = ijk[:, valid], vals[:, valid]
            return ijk.t(), vals.t(), torch.ones(ijk.shape[1], dtype=torch.int64, device=ijk.device)
        r = ijk + _KEY_OFFSET
        key = (r[0] << (2 * _KEY_BITS)) | (r[1] << _KEY_BITS) | r[2]
        del ijk, r
        if valid is not None:  # invalid columns get their own key (-1), dropped after the reduction
            key.masked_fill_(~valid, -1)
        key, inv, cnt = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
        sums = torch.zeros(vals.shape[0], key.shape[0], dtype=vals.dtype, device=vals.device).index_add_(1, inv, vals)
        sums = sums.t()
        if valid is not None:
            keep = key >= 0
            key, cnt, sums = key[keep], cnt[keep], sums[keep]
        return key, sums, cnt

    def _to_rows(self) -> None:
        self.packed = False
        if self.keys is not None:
            self.keys = self._unpack(self.keys)

    def means(self) -> tuple[Tensor, Tensor, Tensor]:
        """(V,3) mean points, (V,a) mean attributes, (V,) counts."""
        assert self.keys is not None and self.sums is not None and self.counts is not None
        ijk = self._unpack(self.keys) if self.packed else self.keys
        mean = self.sums / self.counts[:, None].to(self.sums.dtype)
        xyz = (ijk.double() * self.voxel + mean[:, :3].double()).to(self.sums.dtype)
        return xyz, mean[:, 3:], self.counts


def voxel_down_sample(xyz: Any, voxel_size: float, *attributes: Any) -> tuple[Tensor, ...]:
    """Average points (and per-point attributes) falling into the same voxel of edge ``voxel_size``
    (voxels aligned to the world origin).

    Args:
        xyz: (N,3) points; attributes: (N,a) arrays (tensors on the device of ``xyz``, or arrays).

    Returns:
        ``(xyz, *attributes)`` float32 tensors, down-sampled, voxels in lexicographic order of their
        (x, y, z) index.
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0; got {voxel_size}")
    X = to_tensor(xyz)
    A = [to_tensor(a, device=X.device).reshape(X.shape[0], -1) for a in attributes]
    if X.shape[0] == 0:
        return (X, *A)
    sums = _VoxelSums(voxel_size)
    sums.add(torch.cat([X, *A], 1))
    out_xyz, out_attrs, _ = sums.means()
    widths = [a.shape[1] for a in A]
    return (out_xyz, *torch.split(out_attrs, widths, dim=1)) if A else (out_xyz,)


# ----------------------------------------------------------------------------------------------
# outliers and normals
# ----------------------------------------------------------------------------------------------
def statistical_outlier_removal(xyz: Any, k: int = 16, std_ratio: float = 2.0, spacing: Any = None) -> Tensor:
    """Boolean keep-mask: drop points whose mean distance to their ``k`` nearest neighbours exceeds
    ``mean + std_ratio * std`` of that statistic over the cloud.

    ``spacing`` (N,) optionally gives each point's expected sampling distance (e.g. the pixel
    footprint ``depth / f``, at least the voxel size); the statistic is then divided by it so that
    sparse but regular far-away surfaces are not mistaken for outliers.

    Returns:
        (N,) bool tensor on the device of ``xyz`` (CPU for arrays).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}")
    if not math.isfinite(std_ratio):
        raise ValueError(f"std_ratio must be a finite number; got {std_ratio!r}")
    X = to_tensor(xyz)
    n = X.shape[0]
    if n <= k:
        return torch.ones(n, dtype=torch.bool, device=X.device)
    d, _ = knn_points(X, X, k + 1)  # the first neighbour is the point itself
    return _outlier_keep(d[:, 1:], std_ratio, None if spacing is None else to_tensor(spacing, device=X.device))


def _outlier_keep(dist: Tensor, std_ratio: float, spacing: Tensor | None) -> Tensor:
    """The keep-mask of :func:`statistical_outlier_removal` from the (N,k) neighbour distances."""
    md = dist.mean(dim=1)
    if spacing is not None:
        md = md / spacing.reshape(-1).clamp_min(1e-12)
    md = md.double()  # the threshold statistics over N values: float64 sums
    return md <= md.mean() + std_ratio * md.std(unbiased=False)


def estimate_normals(xyz: Any, k: int = 16, toward: Any = None) -> Tensor:
    """PCA normals: eigenvector of the smallest eigenvalue of the k-NN covariance of each point.

    Args:
        xyz: (N,3) points. k: neighbourhood size.
        toward: optional (N,3) vectors; normals are flipped so that ``dot(n, toward) >= 0`` (e.g.
            directions from the points to their cameras).

    Returns:
        (N,3) float32 unit normals (zeros for clouds with fewer than 3 points), on the device of ``xyz``.
    """
    X = to_tensor(xyz)
    n = X.shape[0]
    if n < 3:
        return torch.zeros(n, 3, device=X.device)
    _, idx = knn_points(X, X, min(k, n))
    return _pca_normals(X, idx, None if toward is None else to_tensor(toward, device=X.device))


def _pca_normals(X: Tensor, idx: Tensor, toward: Tensor | None) -> Tensor:
    """:func:`estimate_normals` from the (N,k) neighbour indices of every point."""
    n = X.shape[0]
    normals = torch.empty(n, 3, device=X.device)
    for s in range(0, n, 1 << 18):
        nb = X[idx[s:s + (1 << 18)]]
        nb = nb - nb.mean(dim=1, keepdim=True)
        cov = nb.transpose(1, 2) @ nb
        normals[s:s + (1 << 18)] = torch.linalg.eigh(cov)[1][:, :, 0]
    if toward is not None:
        flip = (normals * toward).sum(1) < 0
        normals[flip] *= -1
    return normals


def _outliers_and_normals(xyz: Tensor, spacing: Tensor, toward: Tensor, outlier_k: int, std_ratio: float,
                          normals_k: int) -> tuple[Tensor, Tensor]:
    """:func:`statistical_outlier_removal` followed by :func:`estimate_normals` of the kept points,
    from one neighbour search: a kept point whose ``normals_k`` nearest kept points are all among
    its ``max(outlier_k + 1, normals_k)`` nearest points overall (all but the few next to removed
    outliers) takes them from it; only the others are searched again among the kept points.

    Returns:
        (N,) keep-mask and (kept,3) normals.
    """
    kk = max(outlier_k + 1, normals_k)
    d, nb = knn_points(xyz, xyz, kk)  # the first neighbour is the point itself
    keep = _outlier_keep(d[:, 1:outlier_k + 1], std_ratio, spacing)
    xyz_k = xyz[keep]
    new_index = torch.cumsum(keep, 0) - 1
    nb = nb[keep]
    kept = keep[nb]  # (n_kept,kk): which neighbours survived, in distance order
    pos = torch.cumsum(kept, 1) - 1  # rank of a surviving neighbour among the survivors
    use = kept & (pos < normals_k)
    idx = torch.zeros(nb.shape[0], normals_k, dtype=torch.int64, device=xyz.device)
    r, c = use.nonzero(as_tuple=True)
    idx[r, pos[r, c]] = new_index[nb[r, c]]
    short = pos[:, -1] + 1 < normals_k
    if bool(short.any()):
        idx[short] = knn_points(xyz_k[short], xyz_k, normals_k)[1]
    return keep, _pca_normals(xyz_k, idx, toward[keep])


# ----------------------------------------------------------------------------------------------
# fusion
# ----------------------------------------------------------------------------------------------
def _order_statistics(x: Tensor, ranks: list[int]) -> list[Tensor]:
    """The ``ranks``-th smallest values (1-based) of a 1-D tensor, by one histogram pass and a
    selection inside the bin of each rank (linear time; no sort of the whole tensor)."""
    lo, hi = x.min(), x.max()
    if not bool(hi > lo):
        return [lo for _ in ranks]
    n_bins = 1 << 16
    b = ((x - lo) * (n_bins / (hi - lo))).long().clamp_(0, n_bins - 1)  # monotone in x
    cum = torch.cumsum(torch.bincount(b, minlength=n_bins), 0)
    out = []
    for k in ranks:
        kb = int(torch.searchsorted(cum, torch.tensor(k, device=cum.device)))  # first bin with cum >= k
        before = int(cum[kb - 1]) if kb > 0 else 0
        out.append(torch.kthvalue(x[b == kb], k - before).values)
    return out


def _percentiles(x: Tensor, qs: tuple[float, ...]) -> list[Tensor]:
    """NumPy's default (linear) percentiles of a 1-D tensor."""
    n = x.numel()
    pos = [q / 100.0 * (n - 1) for q in qs]
    ranks = sorted({int(math.floor(p)) + 1 for p in pos} | {min(int(math.floor(p)) + 2, n) for p in pos})
    val = dict(zip(ranks, _order_statistics(x, ranks)))
    out = []
    for p in pos:
        a = val[int(math.floor(p)) + 1]
        b = val[min(int(math.floor(p)) + 2, n)]
        out.append(a + (b - a) * (p - math.floor(p)))
    return out


def fuse_depth_maps(frames: Any, depths: Any, cams: Any, valid: Any = None, *, align: bool = True,
                    anchor: str = "first", reference_xyz: Any = None, voxel_size: float | None = None,
                    outlier_k: int = 16, outlier_std_ratio: float = 2.0, normals_k: int = 16,
                    compute_normals: bool = True) -> FusedPoints:
    """Fuse per-frame depth maps into one coloured point cloud.

    Args:
        frames: (T,3,H,W) float colours in [0,1] (tensor on any device, or array).
        depths: (T,H,W) z-depth at the frame resolution (scene units; <= 0 invalid).
        cams: cameras (w2c OpenCV, K of the H x W frames).
        valid: optional (T,H,W) bool masks.
        align: estimate per-frame depth scales (see :func:`align_depth_scales`).
        anchor: ``"first"`` or ``"cameras"`` (see :func:`align_depth_scales`).
        reference_xyz: optional (M,3) points that fix the scale.
        voxel_size: voxel edge for down-sampling; ``None`` = 0.25 % of the diagonal of the box
            between the 1st and 99th percentiles of the lifted points (those of every 4th pixel of
            every 4th row).
        outlier_k / outlier_std_ratio: statistical outlier removal (``outlier_k=0`` disables it).

    Returns:
        :class:`FusedPoints` on the device of ``depths``.
    """
    D, ok = _depth_input(depths, valid)
    dev = D.device
    F = to_tensor(frames, device=dev)
    T, H, W = D.shape
    if F.shape != (T, 3, H, W):
        raise ValueError(f"frames must have shape (T,3,H,W) = ({T},3,{H},{W}); got {tuple(F.shape)}")
    cams = camera_arrays(cams, num_frames=T, name="cams", device=dev)
    scales = (align_depth_scales(D, cams, ok, reference_xyz=reference_xyz, anchor=anchor) if align
              else torch.ones(T, dtype=torch.float64))
    scales_dev = scales.to(device=dev, dtype=torch.float32)
    centers = cams.centers.float()
    f_mean = (0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1])).float()
    step = frames_per_chunk(H, W, _CHUNK_PIXELS)
    n_raw = int(ok.sum())
    if n_raw == 0:
        raise ValueError("no valid depth in any frame; nothing to fuse")

    if voxel_size is None:
        # percentiles of the points lifted at every 4th pixel of every 4th row
        grid = (torch.arange(0, H, 4, device=dev)[:, None] * W + torch.arange(0, W, 4, device=dev)).reshape(-1)
        sample = []
        for c0 in range(0, T, step * 16):
            sl = slice(c0, c0 + step * 16)
            d = D[sl] * scales_dev[sl, None, None]
            pts = unproject_depth(d, cams.K[sl], cams.w2c[sl], pixels=grid)
            sample.append(pts[ok[sl].reshape(d.shape[0], -1)[:, grid]])
        s = torch.cat(sample)
        if s.shape[0] == 0:
            s = torch.zeros(1, 3, device=dev)
        ext = [hi_q - lo_q for lo_q, hi_q in (_percentiles(s[:, a].contiguous(), (1, 99)) for a in range(3))]
        voxel_size = max(float(torch.linalg.vector_norm(torch.stack(ext))) * 0.0025, 1e-9)
        del s, sample
    # per-voxel means of points, colours, view directions and pixel footprints, chunk by chunk
    sums = _VoxelSums(voxel_size)
    for c0 in range(0, T, step):
        sl = slice(c0, c0 + step)
        d = D[sl] * scales_dev[sl, None, None]
        c = d.shape[0]
        pts = unproject_depth(d, cams.K[sl], cams.w2c[sl]).transpose(1, 2)  # (c,3,HW), rows contiguous
        # per pixel (planar): point, colour, unit direction to the camera, pixel footprint (scene units)
        to_cam = centers[sl, :, None] - pts
        to_cam /= to_cam.square().sum(1, keepdim=True).sqrt_().clamp_min_(1e-12)
        foot = (d.reshape(c, 1, -1) / f_mean[sl, None, None])
        blocks = [torch.cat([pts[i], F[c0 + i].reshape(3, -1), to_cam[i], foot[i]]) for i in range(c)]
        del pts, to_cam, foot
        sums.add_planar(blocks, list(ok[sl].reshape(c, -1)))
        del blocks
    xyz, attrs, _ = sums.means()
    rgb, vdir, foot = attrs[:, :3], attrs[:, 3:6], attrs[:, 6]
    vdir = vdir / vdir.square().sum(1, keepdim=True).sqrt().clamp_min(1e-12)
    spacing = foot.clamp_min(voxel_size)
    if outlier_k > 0 and compute_normals and xyz.shape[0] > max(outlier_k + 1, normals_k):
        keep, normals = _outliers_and_normals(xyz, spacing, vdir, outlier_k, outlier_std_ratio, normals_k)
        xyz, rgb, vdir = xyz[keep], rgb[keep], vdir[keep]
    else:
        if outlier_k > 0:
            keep = statistical_outlier_removal(xyz, outlier_k, outlier_std_ratio, spacing=spacing)
            xyz, rgb, vdir = xyz[keep], rgb[keep], vdir[keep]
        normals = estimate_normals(xyz, normals_k, toward=vdir) if compute_normals else None
    logger.info("fused %d depth samples from %d frames into %d points (voxel %.4g)", n_raw, T, xyz.shape[0],
                voxel_size)
    return FusedPoints(xyz=xyz, rgb=rgb.clamp(0.0, 1.0), normals=normals, view_dirs=vdir, scales=scales)
