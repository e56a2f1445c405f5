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

from ._common import CameraArrays, camera_arrays, median, to_tensor

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
_PERCENTILE_SAMPLES = 1 << 24  # points the default voxel size is computed from (a uniform stride beyond)
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


def frames_per_chunk(height: int, width: int) -> int:
    """Frames lifted / integrated together at this image size."""
    return max(1, _CHUNK_PIXELS // (height * width))


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
        step = frames_per_chunk(H, W)
        for c0 in range(0, T, step):
            pts = unproject_depth(depth[c0:c0 + step], cams.K[c0:c0 + step], cams.w2c[c0:c0 + step])
            for i in range(pts.shape[0]):
                idx = ok[c0 + i].reshape(-1).nonzero().squeeze(1)
                if idx.numel() > max_points:
                    idx = idx[torch.randperm(idx.numel(), generator=gen)[:max_points].to(idx.device)]
                self.base.append(pts[i, idx])

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
            m = median(r)
            r2 = r[(r / m - 1.0).abs() < 0.2]
            if r2.numel() >= self.min_overlap:
                m = median(r2)
            scale[b], resid[b], good[b] = float(m), float(median((r / m - 1.0).abs())), True
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
class _VoxelSums:
    """Running per-voxel sums of points and attributes (voxels of edge ``voxel_size`` aligned to the
    world origin, index ``floor(xyz / voxel_size)``), fed chunk by chunk.

    Points are stored as offsets from their voxel's corner (in [0, voxel_size)), which keeps the
    float32 sums exact to the input precision wherever the scene lies. Voxels are kept in
    lexicographic order of their (x, y, z) index.
    """

    def __init__(self, voxel_size: float, lo: Tensor, hi: Tensor) -> None:
        self.voxel = float(voxel_size)
        self.i0 = torch.floor(lo.double() / self.voxel).long()
        self.ext = torch.floor(hi.double() / self.voxel).long() - self.i0 + 1
        # one int64 key per voxel when the index box allows it (else unique rows, slower)
        self.packed = float(self.ext.double().prod()) < 2.0**62
        self.keys: Tensor | None = None
        self.sums: Tensor | None = None
        self.counts: Tensor | None = None

    def _key(self, ijk: Tensor) -> Tensor:
        r = ijk - self.i0.to(ijk.device)
        e = self.ext.to(ijk.device)
        return (r[:, 0] * e[1] + r[:, 1]) * e[2] + r[:, 2]

    def add(self, xyz: Tensor, attrs: Tensor) -> None:
        """Accumulate (n,3) points with (n,a) attributes."""
        if xyz.shape[0] == 0:
            return
        ijk = torch.floor(xyz / self.voxel)
        vals = torch.cat([xyz - ijk * self.voxel, attrs], dim=1)
        ijk = ijk.long()
        if self.packed:
            key = self._key(ijk)
            # neighbouring pixels of a row mostly share a voxel: reduce runs before sorting
            key, inv, cnt = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
            vals = torch.zeros(key.shape[0], vals.shape[1], dtype=vals.dtype, device=vals.device).index_add_(0, inv, vals)
        else:
            key, cnt = ijk, torch.ones(ijk.shape[0], dtype=torch.int64, device=ijk.device)
        if self.keys is not None:
            key = torch.cat([self.keys, key])
            vals = torch.cat([self.sums, vals])  # type: ignore[list-item]
            cnt = torch.cat([self.counts, cnt])  # type: ignore[list-item]
        ukey, inv = torch.unique(key, sorted=True, return_inverse=True, dim=None if self.packed else 0)
        self.keys = ukey
        self.sums = torch.zeros(ukey.shape[0], vals.shape[1], dtype=vals.dtype, device=vals.device).index_add_(0, inv, vals)
        self.counts = torch.zeros(ukey.shape[0], dtype=torch.int64, device=cnt.device).index_add_(0, inv, cnt)

    def means(self) -> tuple[Tensor, Tensor, Tensor]:
        """(V,3) mean points, (V,a) mean attributes, (V,) counts."""
        assert self.keys is not None and self.sums is not None and self.counts is not None
        if self.packed:
            e = self.ext.to(self.keys.device)
            ijk = torch.stack([self.keys // (e[1] * e[2]), (self.keys // e[2]) % e[1], self.keys % e[2]], 1)
            ijk = ijk + self.i0.to(self.keys.device)
        else:
            ijk = self.keys
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
    sums = _VoxelSums(voxel_size, X.min(0).values, X.max(0).values)
    sums.add(X, torch.cat(A, 1) if A else X[:, :0])
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
    md = d[:, 1:].mean(dim=1)
    if spacing is not None:
        md = md / to_tensor(spacing, device=X.device).reshape(n).clamp_min(1e-12)
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
    normals = torch.empty(n, 3, device=X.device)
    for s in range(0, n, 1 << 18):
        nb = X[idx[s:s + (1 << 18)]]
        nb = nb - nb.mean(dim=1, keepdim=True)
        cov = nb.transpose(1, 2) @ nb
        normals[s:s + (1 << 18)] = torch.linalg.eigh(cov)[1][:, :, 0]
    if toward is not None:
        flip = (normals * to_tensor(toward, device=X.device)).sum(1) < 0
        normals[flip] *= -1
    return normals


# ----------------------------------------------------------------------------------------------
# fusion
# ----------------------------------------------------------------------------------------------
def _percentile(x: Tensor, q: float) -> Tensor:
    """NumPy's default (linear) percentile of a 1-D tensor, by selection (no full sort)."""
    n = x.numel()
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    a = torch.kthvalue(x, lo + 1).values
    if pos == lo:
        return a
    b = torch.kthvalue(x, lo + 2).values
    return a + (b - a) * (pos - lo)


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
            between the 1st and 99th percentiles of the lifted points (computed on a uniform
            stride of at most 2^24 points).
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
    step = frames_per_chunk(H, W)
    n_raw = int(ok.sum())
    if n_raw == 0:
        raise ValueError("no valid depth in any frame; nothing to fuse")

    def chunks() -> Any:
        """(first frame, lifted (c,HW,3), valid (c,HW), scaled depth (c,HW)) per chunk of frames."""
        for c0 in range(0, T, step):
            d = D[c0:c0 + step] * scales_dev[c0:c0 + step, None, None]
            pts = unproject_depth(d, cams.K[c0:c0 + step], cams.w2c[c0:c0 + step])
            yield c0, pts, ok[c0:c0 + step].reshape(d.shape[0], -1), d.reshape(d.shape[0], -1)

    # pass 1: bounding box (and the percentiles of the default voxel size)
    stride = max(1, math.ceil(n_raw / _PERCENTILE_SAMPLES))
    lo = torch.full((3,), math.inf, device=dev)
    hi = torch.full((3,), -math.inf, device=dev)
    sample: list[Tensor] = []
    for _, pts, m, _ in chunks():
        p = pts[m]
        lo, hi = torch.minimum(lo, p.min(0).values), torch.maximum(hi, p.max(0).values)
        if voxel_size is None:
            sample.append(p[::stride])
    if voxel_size is None:
        s = torch.cat(sample)
        diag = float(torch.linalg.vector_norm(torch.stack([_percentile(s[:, a], 99) - _percentile(s[:, a], 1)
                                                           for a in range(3)])))
        voxel_size = max(diag * 0.0025, 1e-9)
        del s, sample
    # pass 2: per-voxel means of points, colours, view directions and pixel footprints
    sums = _VoxelSums(voxel_size, lo, hi)
    for c0, pts, m, d in chunks():
        c = pts.shape[0]
        rgb = F[c0:c0 + c].reshape(c, 3, -1).transpose(1, 2)
        to_cam = centers[c0:c0 + c, None, :] - pts
        vdir = to_cam / torch.linalg.vector_norm(to_cam, dim=2, keepdim=True).clamp_min(1e-12)
        foot = d / f_mean[c0:c0 + c, None]  # pixel footprint in scene units
        sums.add(pts[m], torch.cat([rgb[m], vdir[m], foot[m][:, None]], dim=1))
    xyz, attrs, _ = sums.means()
    rgb, vdir, foot = attrs[:, :3], attrs[:, 3:6], attrs[:, 6]
    vdir = vdir / torch.linalg.vector_norm(vdir, dim=1, keepdim=True).clamp_min(1e-12)
    if outlier_k > 0:
        keep = statistical_outlier_removal(xyz, outlier_k, outlier_std_ratio, spacing=foot.clamp_min(voxel_size))
        xyz, rgb, vdir = xyz[keep], rgb[keep], vdir[keep]
    normals = estimate_normals(xyz, normals_k, toward=vdir) if compute_normals else None
    logger.info("fused %d depth samples from %d frames into %d points (voxel %.4g)", n_raw, T, xyz.shape[0],
                voxel_size)
    return FusedPoints(xyz=xyz, rgb=rgb.clamp(0.0, 1.0), normals=normals, view_dirs=vdir, scales=scales)
