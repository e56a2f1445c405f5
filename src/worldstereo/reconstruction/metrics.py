"""Reconstruction quality metrics (PyTorch, on the device of the inputs).

* Geometry (Tanks-and-Temples definitions): for a predicted cloud P and a reference cloud G,
  precision(tau) = fraction of P within tau of G, recall(tau) = fraction of G within tau of P,
  F1 = 2PR/(P+R); accuracy = mean distance P->G, completeness = mean distance G->P; AUC = mean F1
  over a uniform grid of thresholds in (0, tau_max] (normalised area under the F1(tau) curve).
  Optional alignment first: Umeyama Sim(3) on corresponding camera centres, then optional ICP.
  Nearest neighbours: :func:`worldstereo.geometry.neighbors.knn_points` (exact).
* Cameras: RotErr (mean geodesic angle between corresponding camera rotations, degrees),
  TransErr (mean distance between camera centres), ATE (RMSE of camera centres), all after an
  optional Sim(3) alignment of the predicted centres onto the reference ones.
* Images: masked PSNR / SSIM, and the re-projection PSNR of a frame warped into another with depth
  (batched over frame pairs).

Conventions: w2c OpenCV 4x4; K pixels; images (3,H,W) float [0,1]; pixel (row r, column c) has its
centre at image coordinates ``(c + 0.5, r + 0.5)`` (the library convention) — warps lift pixel
centres (:func:`worldstereo.geometry.lifting.unproject_depth`), project them
(:func:`worldstereo.geometry.projection.project_points`) and sample bilinearly with
``align_corners=False`` semantics (:func:`worldstereo.geometry.sampling.sample_bilinear`). Images
and point distances are float32; similarity fits (3x3 SVDs of sums over all points) and camera
errors are float64 (tiny, and the fits are checked to 1e-10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.geometry.lifting import unproject_depth
from worldstereo.geometry.neighbors import knn_points
from worldstereo.geometry.projection import project_points
from worldstereo.geometry.sampling import sample_bilinear

from ._common import camera_arrays, frames_per_chunk, to_tensor

__all__ = [
    "PointCloudScores",
    "apply_sim3",
    "camera_pose_errors",
    "icp_align",
    "masked_psnr",
    "masked_ssim",
    "point_cloud_scores",
    "reprojection_psnr",
    "umeyama_alignment",
    "warp_frame",
]

METRIC_CHUNK_PIXELS = 1 << 21  # pixels of the frames rendered / warped / compared at once


def _points(x: Any, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    if hasattr(x, "xyz"):
        x = x.xyz
    a = to_tensor(x, dtype=dtype)
    if a.dim() != 2 or a.shape[1] != 3 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N,3) point array or PointCloud; got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name} contains non-finite coordinates")
    return a


def umeyama_alignment(src: Any, dst: Any, *, with_scale: bool = True) -> tuple[float, Tensor, Tensor]:
    """Least-squares similarity (Umeyama 1991) with ``dst ≈ s * R @ src + t`` (float64).

    Args:
        src, dst: (N,3) corresponding points, N >= 3 (N >= 2 gives a degenerate but valid fit).
        with_scale: False fixes s = 1 (rigid).

    Returns:
        (s, R (3,3) proper rotation, t (3,)); R and t float64 on the device of ``src``.
    """
    X = _points(src, "src", torch.float64)
    Y = _points(dst, "dst", torch.float64).to(X.device)
    if X.shape != Y.shape:
        raise ValueError(f"src and dst must have the same shape; got {tuple(X.shape)} and {tuple(Y.shape)}")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    cov = Yc.T @ Xc / X.shape[0]
    U, D, Vt = torch.linalg.svd(cov)
    S = torch.eye(3, dtype=torch.float64, device=X.device)
    if float(torch.linalg.det(U) * torch.linalg.det(Vt)) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_x = float((Xc**2).sum()) / X.shape[0]
    s = float((D * torch.diagonal(S)).sum() / var_x) if with_scale and var_x > 0 else 1.0
    t = my - s * R @ mx
    return s, R, t


def apply_sim3(points: Tensor, s: float, R: Tensor, t: Tensor) -> Tensor:
    """Apply ``x -> s R x + t`` to (N,3) points (dtype and device of ``points``)."""
    return s * points @ R.to(points).T + t.to(points)


def icp_align(src: Any, dst: Any, *, iterations: int = 30, max_distance: float | None = None,
              with_scale: bool = False, tol: float = 1e-7) -> tuple[float, Tensor, Tensor]:
    """Point-to-point ICP of ``src`` onto ``dst`` (nearest neighbours + Umeyama each iteration).

    Returns the accumulated (s, R, t) (float64) with ``dst ≈ s R src + t``. ``max_distance`` rejects
    pairs that are farther apart (None = keep all).
    """
    X = _points(src, "src", torch.float64)
    Y = _points(dst, "dst", torch.float64).to(X.device)
    Y32 = Y.float()
    s, R, t = 1.0, torch.eye(3, dtype=torch.float64, device=X.device), torch.zeros(3, dtype=torch.float64,
                                                                                  device=X.device)
    prev = math.inf
    for _ in range(iterations):
        cur = apply_sim3(X, s, R, t)
        d, j = knn_points(cur.float(), Y32, 1)
        d, j = d[:, 0].double(), j[:, 0]
        keep = d <= max_distance if max_distance is not None else torch.ones_like(d, dtype=torch.bool)
        if int(keep.sum()) < 3:
            break
        ds, dR, dt = umeyama_alignment(cur[keep], Y[j[keep]], with_scale=with_scale)
        s, R, t = ds * s, dR @ R, ds * dR @ t + dt
        err = float((d[keep] ** 2).mean())
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
        sim3: (s, R (3,3), t (3,)) alignment applied to the prediction (float64 tensors).
    """

    tau: float
    precision: float
    recall: float
    f1: float
    accuracy: float
    completeness: float
    auc: float
    sim3: tuple[float, Tensor, Tensor]

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics as a plain dict."""
        return {"tau": self.tau, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "accuracy": self.accuracy, "completeness": self.completeness, "auc": self.auc}


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _fraction_below(d_sorted: Tensor, thresholds: Tensor) -> Tensor:
    """Fraction of the (sorted, float64) distances strictly below each threshold."""
    return torch.searchsorted(d_sorted, thresholds, side="left").double() / d_sorted.numel()


def point_cloud_scores(pred: Any, reference: Any, *, tau: float | None = None, tau_fraction: float = 0.01,
                       auc_max: float | None = None, auc_steps: int = 50, pred_cameras: Any = None,
                       reference_cameras: Any = None, icp: bool = False,
                       icp_max_distance: float | None = None) -> PointCloudScores:
    """Accuracy / completeness / precision / recall / F1 / AUC of ``pred`` against ``reference``.

    Args:
        pred, reference: (N,3) arrays / tensors or objects with ``.xyz`` (PointCloud); the scores are
            computed on the device of ``pred``.
        tau: distance threshold; default ``tau_fraction`` x the reference bounding-box diagonal.
        auc_max: largest threshold of the AUC grid (default 2 tau).
        pred_cameras, reference_cameras: optional corresponding trajectories; when both are given
            the prediction is first aligned by Umeyama Sim(3) on the camera centres.
        icp: refine the alignment with rigid point-to-point ICP (pairs within ``icp_max_distance``,
            default 2 tau).
    """
    P = _points(pred, "pred")
    G = _points(reference, "reference").to(P.device)
    if tau is None:
        tau = tau_fraction * float(torch.linalg.vector_norm((G.max(0).values - G.min(0).values).double()))
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    dev = P.device
    s, R, t = 1.0, torch.eye(3, dtype=torch.float64, device=dev), torch.zeros(3, dtype=torch.float64, device=dev)
    if (pred_cameras is None) != (reference_cameras is None):
        raise ValueError("give both pred_cameras and reference_cameras (or neither)")
    if pred_cameras is not None:
        cp = camera_arrays(pred_cameras, name="pred_cameras", device=dev).centers
        cg = camera_arrays(reference_cameras, name="reference_cameras", device=dev).centers
        if cp.shape != cg.shape:
            raise ValueError(f"pred_cameras ({len(cp)}) and reference_cameras ({len(cg)}) must correspond")
        s, R, t = umeyama_alignment(cp, cg)
    P = apply_sim3(P, s, R, t)
    if icp:
        s2, R2, t2 = icp_align(P, G, max_distance=icp_max_distance if icp_max_distance is not None else 2 * tau)
        P = apply_sim3(P, s2, R2, t2)
        s, R, t = s2 * s, R2 @ R, s2 * R2 @ t + t2
    d_pg = knn_points(P, G, 1)[0][:, 0].double().sort().values
    d_gp = knn_points(G, P, 1)[0][:, 0].double().sort().values
    amax = auc_max if auc_max is not None else 2 * tau
    ts = torch.linspace(amax / auc_steps, amax, auc_steps, dtype=torch.float64, device=dev)
    ps, rs = _fraction_below(d_pg, ts), _fraction_below(d_gp, ts)
    f1s = [_f1(float(p), float(r)) for p, r in zip(ps, rs)]
    at_tau = torch.tensor([tau], dtype=torch.float64, device=dev)
    prec, rec = float(_fraction_below(d_pg, at_tau)), float(_fraction_below(d_gp, at_tau))
    return PointCloudScores(tau=float(tau), precision=prec, recall=rec, f1=_f1(prec, rec),
                            accuracy=float(d_pg.mean()), completeness=float(d_gp.mean()), auc=sum(f1s) / len(f1s),
                            sim3=(s, R, t))


def _rotation_angle_deg(Ra: Tensor, Rb: Tensor) -> Tensor:
    rel = Ra @ Rb.transpose(1, 2)
    cos = (torch.diagonal(rel, dim1=1, dim2=2).sum(1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


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
    wp = to_tensor(pred.w2c if hasattr(pred, "w2c") else pred, dtype=torch.float64)
    wg = to_tensor(reference.w2c if hasattr(reference, "w2c") else reference, dtype=torch.float64, device=wp.device)
    if wp.dim() != 3 or wp.shape[1:] != (4, 4) or wp.shape != wg.shape:
        raise ValueError(f"pred and reference must be (N,4,4) w2c of the same N; got {tuple(wp.shape)} and "
                         f"{tuple(wg.shape)}")
    cp, cg = torch.linalg.inv(wp), torch.linalg.inv(wg)
    Rp, Rg = cp[:, :3, :3], cg[:, :3, :3]
    Cp, Cg = cp[:, :3, 3], cg[:, :3, 3]
    s, R, t = 1.0, torch.eye(3, dtype=torch.float64, device=wp.device), torch.zeros(3, dtype=torch.float64,
                                                                                   device=wp.device)
    if align != "none" and len(Cp) >= 2:
        s, R, t = umeyama_alignment(Cp, Cg, with_scale=(align == "sim3"))
    elif align != "none":  # one camera: align its pose exactly (errors are then 0 by definition)
        R = Rg[0] @ Rp[0].T
        t = Cg[0] - R @ Cp[0]
    Cp2 = apply_sim3(Cp, s, R, t)
    Rp2 = R @ Rp
    dist = torch.linalg.vector_norm(Cp2 - Cg, dim=1)
    return {"rot_err_deg": float(_rotation_angle_deg(Rp2, Rg).mean()), "trans_err": float(dist.mean()),
            "ate": float(torch.sqrt((dist**2).mean())), "scale": float(s)}


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------
def _img(x: Any, name: str, device: torch.device | None = None) -> Tensor:
    a = to_tensor(x, device=device)
    if a.dim() != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"{name} must be (C,H,W) with C in (1,3); got shape {tuple(a.shape)}")
    return a


def _mask(mask: Any, shape: tuple[int, ...], device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return to_tensor(mask, dtype=torch.bool, device=device).reshape(shape)


def psnr_batch(pred: Tensor, target: Tensor, mask: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR (dB) of (B,C,H,W) images over the pixels of (B,H,W) ``mask``: (B,) float64, ``inf`` for
    identical pixels and ``nan`` for an empty mask."""
    count = mask.sum((1, 2)).double() * pred.shape[1]
    se = ((pred - target) ** 2).sum(1).masked_fill(~mask, 0.0).sum((1, 2), dtype=torch.float64)
    mse = se / count
    psnr = 10 * torch.log10(data_range**2 / mse)
    return torch.where(count > 0, psnr, torch.full_like(psnr, math.nan))


def _blur_radius(sigma: float) -> int:
    return int(4.0 * sigma + 0.5)  # scipy.ndimage's truncate=4


def _reflect_margins(buf: Tensor, r: int) -> None:
    """Fill the ``r``-wide margins of a (B,C,H+2r,W+2r) buffer from its interior like
    ``scipy.ndimage``'s ``"reflect"`` mode (d c b a | a b c d | d c b a), rows after columns (the
    corners are then reflected twice, as a separable filter sees them)."""
    H, W = buf.shape[2] - 2 * r, buf.shape[3] - 2 * r
    if r > min(H, W):  # tiny images: reflect repeatedly through an index map
        inner = buf[:, :, r:r + H, r:r + W]
        for dim, n in ((3, W), (2, H)):
            i = torch.arange(-r, n + r, device=buf.device) % (2 * n)
            inner = inner.index_select(dim, torch.where(i >= n, 2 * n - 1 - i, i))
        buf.copy_(inner)
        return
    rows = slice(r, r + H)
    buf[:, :, rows, :r] = buf[:, :, rows, r:2 * r].flip(3)
    buf[:, :, rows, r + W:] = buf[:, :, rows, W:W + r].flip(3)
    buf[:, :, :r] = buf[:, :, r:2 * r].flip(2)
    buf[:, :, r + H:] = buf[:, :, H:H + r].flip(2)


def _gaussian_blur_padded(buf: Tensor, sigma: float) -> Tensor:
    """``scipy.ndimage.gaussian_filter`` (truncate 4, mode "reflect") of every plane of a (B,C,H,W)
    image held in the interior of a (B,C,H+2r,W+2r) buffer (margins filled here): two depthwise 1-D
    convolutions, in channels-last layout (the fast layout of depthwise convolutions on the CPU).
    A separable filter commutes with the reflection of the other axis, so the planes are extended on
    all sides at once."""
    r = _blur_radius(sigma)
    _reflect_margins(buf, r)
    k = torch.arange(-r, r + 1, dtype=torch.float64, device=buf.device)
    w = torch.exp(-0.5 / sigma**2 * k * k)
    w = (w / w.sum()).to(buf.dtype)
    C = buf.shape[1]
    x = F.conv2d(buf, w.view(1, 1, 1, -1).expand(C, 1, 1, 2 * r + 1), groups=C)
    return F.conv2d(x, w.view(1, 1, -1, 1).expand(C, 1, 2 * r + 1, 1), groups=C)


def _erode(mask: Tensor, iterations: int) -> Tensor:
    """Binary erosion of (B,H,W) masks with the 4-neighbour cross, outside = True
    (``scipy.ndimage.binary_erosion(m, iterations=n, border_value=1)``)."""
    for _ in range(iterations):
        out = mask.clone()
        out[:, 1:] &= mask[:, :-1]
        out[:, :-1] &= mask[:, 1:]
        out[:, :, 1:] &= mask[:, :, :-1]
        out[:, :, :-1] &= mask[:, :, 1:]
        mask = out
    return mask


def ssim_batch(pred: Tensor, target: Tensor, mask: Tensor, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Masked mean SSIM of (B,C,H,W) images (see :func:`masked_ssim`): (B,) float64, ``nan`` for an
    empty mask. Computed image by image (the blurred statistics of one image stay in cache)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    C, H, W = pred.shape[1:]
    out = torch.full((pred.shape[0],), math.nan, dtype=torch.float64, device=pred.device)
    for b in range(pred.shape[0]):
        x, y = pred[b:b + 1], target[b:b + 1]
        # the local statistics' inputs, written straight into the padded blur buffer; SSIM needs
        # E[x^2] and E[y^2] only as their sum, so x^2 + y^2 is blurred once
        r = _blur_radius(sigma)
        buf = torch.empty(1, 4 * C, H + 2 * r, W + 2 * r, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        inner = buf[:, :, r:r + H, r:r + W]
        inner[:, :C] = x
        inner[:, C:2 * C] = y
        torch.mul(x, x, out=inner[:, 2 * C:3 * C]).addcmul_(y, y)
        torch.mul(x, y, out=inner[:, 3 * C:])
        mx, my, exx_eyy, exy = _gaussian_blur_padded(buf, sigma).contiguous().split(C, dim=1)
        mxy = mx * my
        m2 = mx.square_().add_(my.square_())  # mx^2 + my^2
        num = (2 * mxy + c1).mul_(exy.sub_(mxy).mul_(2).add_(c2))
        den = (m2 + c1).mul_(exx_eyy.sub_(m2).add_(c2))  # (mx^2 + my^2 + c1)(sxx + syy + c2)
        smap = num.div_(den).mean(1)[0]
        m = mask[b:b + 1]
        eroded = _erode(m, int(math.ceil(3 * sigma)))
        use = (eroded if bool(eroded.any()) else m)[0]
        n = int(use.sum())
        if n:
            out[b] = smap[use].double().sum() / n
    return out


def masked_psnr(pred: Any, target: Any, mask: Any = None, *, data_range: float = 1.0) -> float:
    """PSNR (dB) over the pixels where ``mask`` (H,W) is true (all pixels when None).

    Images (C,H,W) in [0, data_range]. Returns ``inf`` for identical images and ``nan`` for an
    empty mask.
    """
    a = _img(pred, "pred")
    b = _img(target, "target", a.device)
    if a.shape != b.shape:
        raise ValueError(f"pred {tuple(a.shape)} and target {tuple(b.shape)} must have the same shape")
    m = _mask(mask, tuple(a.shape[1:]), a.device)
    return float(psnr_batch(a[None], b[None], m[None], data_range)[0])


def masked_ssim(pred: Any, target: Any, mask: Any = None, *, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5, truncated at 4 sigma, mirrored borders; Wang et al. 2004
    constants) over masked pixels.

    The SSIM map is computed on the full images and averaged over ``mask`` eroded by the window
    radius (``ceil(3 sigma)`` steps of the 4-neighbour cross, so that windows do not straddle the
    mask border); the plain mask is used if erosion empties it.
    """
    a = _img(pred, "pred")
    b = _img(target, "target", a.device)
    if a.shape != b.shape:
        raise ValueError(f"pred {tuple(a.shape)} and target {tuple(b.shape)} must have the same shape")
    m = _mask(mask, tuple(a.shape[1:]), a.device)
    return float(ssim_batch(a[None], b[None], m[None], sigma, data_range)[0])


def warp_frames(src_image: Tensor, src_depth: Tensor, dst_depth: Tensor, K_src: Tensor, w2c_src: Tensor,
                K_dst: Tensor, w2c_dst: Tensor, rel_tol: float = 0.05) -> tuple[Tensor, Tensor]:
    """Batched :func:`warp_frame`: (B,C,Hs,Ws) images, (B,Hs,Ws) / (B,H,W) depths, (B,3,3) / (B,4,4)
    cameras -> warped (B,C,H,W) and valid (B,H,W)."""
    B, C = src_image.shape[:2]
    H, W = dst_depth.shape[1:]
    dst_ok = (torch.isfinite(dst_depth) & (dst_depth > 0)).reshape(B, -1)
    dd = torch.where(dst_ok.view(B, H, W), dst_depth, torch.ones_like(dst_depth))
    pts = unproject_depth(dd, K_dst, w2c_dst)  # (B,HW,3)
    u, v, z = project_points(pts, w2c_src, K_src, near=1e-12)
    src_ok = torch.isfinite(src_depth) & (src_depth > 0)
    stack = torch.cat([src_image, torch.where(src_ok, src_depth, torch.zeros_like(src_depth))[:, None]], dim=1)
    vals, inside = sample_bilinear(stack, u, v, src_ok)
    dsrc = vals[:, C]
    valid = dst_ok & (z > 0) & inside & ((dsrc - z).abs() <= rel_tol * z)
    warped = vals[:, :C] * valid[:, None]
    return warped.reshape(B, C, H, W), valid.reshape(B, H, W)


def warp_frame(src_image: Any, src_depth: Any, dst_depth: Any, K_src: Any, w2c_src: Any, K_dst: Any, w2c_dst: Any,
               *, rel_tol: float = 0.05) -> tuple[Tensor, Tensor]:
    """Warp a source frame into a destination view using the destination depth (backward warp).

    Every destination pixel is lifted with ``dst_depth``, projected into the source camera and the
    source image is sampled bilinearly there. A pixel is valid when it lands inside the source
    image and the source depth there agrees within ``rel_tol`` (relative) — i.e. it is not occluded.

    Args:
        src_image: (3,Hs,Ws) [0,1]; src_depth: (Hs,Ws) z-depth; dst_depth: (H,W) z-depth.
        K_*: (3,3) pixel intrinsics; w2c_*: (4,4) OpenCV world-to-camera.

    Returns:
        (warped (3,H,W) float32, valid (H,W) bool), on the device of ``src_image``.
    """
    img = _img(src_image, "src_image")
    dev = img.device
    ds = to_tensor(src_depth, device=dev)
    dd = to_tensor(dst_depth, device=dev)
    mats = [to_tensor(m, dtype=torch.float64, device=dev)[None] for m in (K_src, w2c_src, K_dst, w2c_dst)]
    warped, valid = warp_frames(img[None], ds[None], dd[None], *mats, rel_tol=rel_tol)
    return warped[0], valid[0]


def reprojection_psnr(frames: Any, depths: Any, cameras: Any, *, pairs: list[tuple[int, int]] | None = None,
                      rel_tol: float = 0.05, ssim: bool = True) -> dict[str, float]:
    """Masked re-projection PSNR/SSIM: warp frame j into frame i (with the depths) and compare.

    Args:
        frames: (T,3,H,W) [0,1]; depths: (T,H,W) z-depth; cameras: CameraTrajectory-like of T views.
        pairs: (i, j) pairs; default consecutive pairs (t+1 -> t). Pairs are warped in batches.
        ssim: also compute the SSIM (``reprojection_ssim`` is NaN when False).

    Returns:
        ``{"reprojection_psnr", "reprojection_ssim", "reprojection_valid_fraction"}`` averaged over pairs
        (PSNR averaged in dB over the pairs with valid pixels).
    """
    Fr = to_tensor(frames)
    D = to_tensor(depths, device=Fr.device)
    if Fr.dim() != 4 or D.dim() != 3 or Fr.shape[0] != D.shape[0] or Fr.shape[2:] != D.shape[1:]:
        raise ValueError(f"frames (T,3,H,W) and depths (T,H,W) must match; got {tuple(Fr.shape)} and "
                         f"{tuple(D.shape)}")
    T, _, H, W = Fr.shape
    cams = camera_arrays(cameras, num_frames=T, height=H, width=W, name="cameras", device=Fr.device)
    if pairs is None:
        pairs = [(t, t + 1) for t in range(T - 1)]
    psnrs, ssims, fracs = [], [], []
    step = frames_per_chunk(H, W, METRIC_CHUNK_PIXELS)
    for p0 in range(0, len(pairs), step):
        i = torch.tensor([p[0] for p in pairs[p0:p0 + step]], device=Fr.device)
        j = torch.tensor([p[1] for p in pairs[p0:p0 + step]], device=Fr.device)
        warped, valid = warp_frames(Fr[j], D[j], D[i], cams.K[j], cams.w2c[j], cams.K[i], cams.w2c[i], rel_tol)
        fracs += valid.float().mean((1, 2)).tolist()
        enough = valid.sum((1, 2)) >= 16
        if bool(enough.any()):
            psnrs += psnr_batch(warped[enough], Fr[i][enough], valid[enough]).tolist()
            if ssim:
                ssims += ssim_batch(warped[enough], Fr[i][enough], valid[enough]).tolist()
    finite = [p for p in psnrs if math.isfinite(p)]
    return {"reprojection_psnr": sum(finite) / len(finite) if finite else float("inf") if psnrs else float("nan"),
            "reprojection_ssim": sum(ssims) / len(ssims) if ssims else float("nan"),
            "reprojection_valid_fraction": sum(fracs) / len(fracs) if fracs else 0.0}
