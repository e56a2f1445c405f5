"""Reconstruction quality metrics.

* Geometry (Tanks-and-Temples definitions): for a predicted cloud P and a reference cloud G,
  precision(tau) = fraction of P within tau of G, recall(tau) = fraction of G within tau of P,
  F1 = 2PR/(P+R); accuracy = mean distance P->G, completeness = mean distance G->P; AUC = mean F1
  over a uniform grid of thresholds in (0, tau_max] (normalised area under the F1(tau) curve).
  Optional alignment first: Umeyama Sim(3) on corresponding camera centres, then optional ICP.
* Cameras: RotErr (mean geodesic angle between corresponding camera rotations, degrees),
  TransErr (mean distance between camera centres), ATE (RMSE of camera centres), all after an
  optional Sim(3) alignment of the predicted centres onto the reference ones.
* Images: masked PSNR / SSIM, and the re-projection PSNR of a frame warped into another with depth.

Conventions: w2c OpenCV 4x4; K pixels; images (3,H,W) float [0,1]; pixel (row r, column c) has its
centre at image coordinates ``(c + 0.5, r + 0.5)`` (the library convention) — warps lift pixel
centres and sample bilinearly with ``align_corners=False`` semantics; all arrays float64 NumPy inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from ._common import as_numpy, camera_arrays, project, unproject

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
    from .fusion import _bilinear

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
