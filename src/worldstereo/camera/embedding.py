"""Camera conditioning of the reference implementation (reference-implementation.md §3.3-3.5).

Everything here reproduces the reference numerically (float32, conformance case
``camera_embedding``), including its quirks: the legacy left-multiplication of
``camera_center_normalization(is_w2c=False)``, the asymmetric Plücker pixel grid
(x = column - 0.5, y = row + 0.5) and the lower median of :func:`torch.median`.

All poses are world-to-camera 4x4 in OpenCV axes; intrinsics are 3x3 in pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rotations import matrix_to_quaternion

__all__ = [
    "camera_center_normalization",
    "plucker_embedding",
    "unified_camera_normalization",
    "camera_qt_tokens",
    "pose_tokens",
]


def _check_poses(w2c: Tensor, name: str) -> Tensor:
    if not isinstance(w2c, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, 4, 4), got {type(w2c).__name__}")
    if w2c.ndim != 3 or w2c.shape[-2:] != (4, 4) or w2c.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (N, 4, 4) with N >= 1, got {tuple(w2c.shape)}")
    return w2c.float()


def _robust_center_offset(centers: Tensor) -> Tensor:
    """Mean of the centres within ``min(10 * quantile_0.97(d), 1e6)`` of the (lower) median centre."""
    med = centers.median(dim=0).values
    d = torch.norm(centers - med, dim=-1)
    thresh = torch.clamp(torch.quantile(d, 0.97) * 10.0, max=1e6)
    valid = d <= thresh
    return centers[valid].mean(dim=0)


def _scale_factor(center0: Tensor, camera_scale: float) -> Tensor | float:
    norm0 = torch.norm(center0)
    if torch.allclose(norm0, torch.zeros_like(norm0), atol=1e-5):
        return camera_scale
    return camera_scale / norm0


def camera_center_normalization(w2c: Tensor, nframe: int, camera_scale: float = 2.0, is_w2c: bool = False) -> Tensor:
    """SEVA-style normalisation of camera poses (reference §3.3), float32.

    1. ``c0 = inverse(w2c[::nframe])`` (first pose of each ``nframe``-long clip, repeated per clip);
       ``is_w2c=True``: ``w2c @ c0`` (first pose becomes the identity); ``is_w2c=False``:
       ``c0 @ w2c`` (the reference's legacy order, kept for compatibility).
    2. Camera centres are shifted by minus the mean of the centres whose distance to the
       coordinate-wise (lower) median is ``<= min(10 * quantile(d, 0.97), 1e6)``.
    3. Translations are scaled by ``camera_scale / |centre_0|`` (``camera_scale`` when the first
       centre is within 1e-5 of the origin).

    Args:
        w2c: (N, 4, 4) world-to-camera poses, N a multiple of ``nframe`` (one or more clips).
        nframe: clip length.
        camera_scale: target distance of the first camera from the robust centre.
        is_w2c: multiplication order of step 1 (see above).

    Returns:
        (N, 4, 4) float32 normalised world-to-camera poses.

    Raises:
        ValueError: bad shape or ``N`` not a multiple of ``nframe``.
    """
    w2c = _check_poses(w2c, "w2c")
    if isinstance(nframe, bool) or not isinstance(nframe, int) or nframe < 1 or w2c.shape[0] % nframe:
        raise ValueError(f"nframe: expected a positive int dividing the {w2c.shape[0]} poses, got {nframe!r}")
    c2w0 = torch.inverse(w2c[::nframe]).repeat_interleave(nframe, dim=0)
    w2c = w2c @ c2w0 if is_w2c else c2w0 @ w2c
    c2w = torch.inverse(w2c)
    c2w[:, :3, 3] = c2w[:, :3, 3] - _robust_center_offset(c2w[:, :3, 3])
    w2c = torch.inverse(c2w)
    s = _scale_factor(c2w[0, :3, 3], camera_scale)
    w2c[:, :3, 3] = w2c[:, :3, 3] * s
    return w2c


def plucker_embedding(K: Tensor, w2c: Tensor, height: int, width: int, normalize: bool = True) -> Tensor:
    """Full-resolution Plücker ray map (reference ``get_camera_embedding``, §3.4).

    Pixel (row r, column c) uses ``x = c - 0.5``, ``y = r + 0.5`` (the reference's asymmetric grid);
    ``d = normalise(R_c2w K^-1 (x, y, 1))``, ``o`` = camera centre; channels ``[d, o x d]``.
    With ``normalize=True`` the poses are first normalised by
    ``camera_center_normalization(w2c, F, camera_scale=2.0, is_w2c=True)``.

    Args:
        K: (F, 3, 3) pixel intrinsics of the ``height`` x ``width`` image (or (3, 3), broadcast).
        w2c: (F, 4, 4) world-to-camera poses, OpenCV axes.
        height, width: map size in pixels.
        normalize: apply the reference normalisation first.

    Returns:
        (1, 6, F, height, width) float32; all zeros if any value is non-finite (as the reference).
    """
    w2c = _check_poses(w2c, "w2c")
    f = w2c.shape[0]
    if not isinstance(K, Tensor):
        raise TypeError(f"K: expected a torch.Tensor of shape (F, 3, 3), got {type(K).__name__}")
    K = K.float()
    if K.ndim == 2:
        K = K.expand(f, 3, 3)
    if K.shape != (f, 3, 3):
        raise ValueError(f"K: expected shape ({f}, 3, 3) matching w2c, got {tuple(K.shape)}")
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if normalize:
        w2c = camera_center_normalization(w2c, f, camera_scale=2.0, is_w2c=True)
    c2w = torch.inverse(w2c)
    device = w2c.device
    x = torch.arange(width, dtype=torch.float32, device=device) - 0.5
    y = torch.arange(height, dtype=torch.float32, device=device) + 0.5
    gx, gy = torch.meshgrid(x, y, indexing="ij")  # (W, H)
    gx = gx.transpose(0, 1).reshape(-1)  # row-major (h, w)
    gy = gy.transpose(0, 1).reshape(-1)
    pix = torch.stack([gx, gy, torch.ones_like(gx)], dim=0)  # (3, H*W)
    rays_cam = torch.inverse(K) @ pix  # (F, 3, H*W)
    rays = c2w[:, :3, :3] @ rays_cam
    d = rays / torch.norm(rays, dim=1, keepdim=True)
    o = c2w[:, :3, 3:].expand_as(d)
    m = torch.cross(o, d, dim=1)
    emb = torch.cat([d, m], dim=1).reshape(f, 6, height, width).permute(1, 0, 2, 3).unsqueeze(0)
    if not torch.isfinite(emb).all():
        emb = torch.zeros_like(emb)
    return emb.contiguous()


def unified_camera_normalization(w2c_target: Tensor, w2c_ref: Tensor, camera_scale: float = 2.0
                                 ) -> tuple[Tensor, Tensor]:
    """Joint normalisation of target and reference cameras for the SSM camera tokens (§3.5).

    ``all = cat(target, ref) @ inverse(target[0])`` (the first target becomes the identity); the
    robust centre (lower median / 0.97-quantile rule) is computed from the target centres only and
    subtracted from all centres; all translations are scaled by ``camera_scale / |target centre 0|``.

    Args:
        w2c_target: (F, 4, 4) target world-to-camera poses.
        w2c_ref: (R, 4, 4) reference (memory) world-to-camera poses, same world frame.

    Returns:
        (target (F, 4, 4), ref (R, 4, 4)) float32 normalised w2c.
    """
    tgt = _check_poses(w2c_target, "w2c_target")
    ref = _check_poses(w2c_ref, "w2c_ref")
    f = tgt.shape[0]
    combined = torch.cat([tgt, ref], dim=0)
    combined = combined @ torch.inverse(tgt[0:1])
    c2w = torch.inverse(combined)
    c2w[:, :3, 3] = c2w[:, :3, 3] - _robust_center_offset(c2w[:f, :3, 3])
    combined = torch.inverse(c2w)
    s = _scale_factor(c2w[0, :3, 3], camera_scale)
    combined[:, :3, 3] = combined[:, :3, 3] * s
    return combined[:f], combined[f:]


def pose_tokens(w2c: Tensor) -> Tensor:
    """(N, 4, 4) w2c -> (N, 7) ``[q_w, q_x, q_y, q_z, t_x, t_y, t_z]`` (quaternion of the w2c rotation,
    real part first with ``q_w >= 0``, then the w2c translation)."""
    w2c = _check_poses(w2c, "w2c")
    return torch.cat([matrix_to_quaternion(w2c[:, :3, :3]), w2c[:, :3, 3]], dim=-1)


def camera_qt_tokens(w2c_target: Tensor, w2c_ref: Tensor, camera_scale: float = 2.0) -> tuple[Tensor, Tensor]:
    """Camera tokens ``camera_qt`` (1, F, 7) and ``camera_qt_ref`` (1, R, 7) of the memory model.

    :func:`unified_camera_normalization` followed by :func:`pose_tokens`. For single-image memory
    inference pass ``w2c_ref = w2c_target[0:1]``.
    """
    tgt, ref = unified_camera_normalization(w2c_target, w2c_ref, camera_scale)
    return pose_tokens(tgt).unsqueeze(0), pose_tokens(ref).unsqueeze(0)
