"""Memory-bank retrieval: frustum-overlap scoring, reference-list construction, camera selection.

Re-implements the reference retrieval of WorldStereo (``SimpleMemoryBank.retrieval`` with
``find_closest_camera_in_view(method="fov_overlap", near=0.1, far=10.0, angle_penalty=True)``
and ``CameraSelector``; reference-implementation.md §5.3) plus a ``"correspondence"`` method.

Conventions: extrinsics are world-to-camera (``w2c``) 4x4 matrices in OpenCV axes (x right,
y down, z forward); ``c2w`` is their inverse. Intrinsics ``K`` are 3x3 in pixels of the image of
size ``(height, width)`` they describe. Images are float tensors in [0, 1] of shape (N, 3, H, W),
or uint8 arrays (N, H, W, 3) where stated.

Frame numbering follows the reference: target frame 0 is the condition view and is not retrieved;
target frames ``i = 1 .. F-1`` each pick one bank entry, and the reference list gives every
*distinct* chosen entry the slot ``i - 1`` of its first use (``ref_index``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

__all__ = [
    "RetrievalResult",
    "CameraSelector",
    "frustum_corners",
    "aabb_iou",
    "view_angle_deg",
    "angle_penalty",
    "fov_overlap_scores",
    "correspondence_scores",
    "find_closest_camera",
    "shortcut_candidates",
    "build_reference_list",
    "retrieve",
    "grey_opencv_bgr2gray",
    "image_quality_score",
]

logger = logging.getLogger(__name__)

#: The reference's frustum near/far distances (along the ray, not depth).
DEFAULT_NEAR = 0.1
DEFAULT_FAR = 10.0

SizeLike = Union[int, float, Sequence[float], torch.Tensor]
ImageFeatureFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# input checks


def _as_pose_batch(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected a (N,4,4) or (4,4) world-to-camera matrix, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains non-finite values")
    return t.to(torch.float64)


def _as_K_batch(x: torch.Tensor | np.ndarray, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected (N,3,3) or (3,3) pixel intrinsics, got shape {tuple(t.shape)}")
    if t.shape[0] == 1 and n != 1:
        t = t.expand(n, 3, 3)
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} intrinsics matrices (one per pose), got {t.shape[0]}")
    return t.to(torch.float64)


def _as_size(x: SizeLike, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name}: expected a scalar or {n} values, got {t.numel()}")
    if (t <= 0).any():
        raise ValueError(f"{name}: image sizes must be positive, got {t.tolist()}")
    return t


# --------------------------------------------------------------------------------------------
# frustum-overlap scoring


def frustum_corners(
    w2c: torch.Tensor,
    K: torch.Tensor,
    width: SizeLike,
    height: SizeLike,
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
) -> torch.Tensor:
    """The 8 world-space corner points of each camera's truncated viewing frustum.

    The image corners ``(0,0), (W,0), (W,H), (0,H)`` are back-projected with ``K^-1``, the rays
    normalised to unit length, and points taken at *distance* ``near`` and ``far`` along them (not
    at depth), then mapped to world coordinates with ``c2w = inverse(w2c)``.

    Args:
        w2c: (N,4,4) or (4,4) world-to-camera, OpenCV axes.
        K: (N,3,3) or (3,3) pixel intrinsics of an image of size ``width`` x ``height``.
        width, height: image size in pixels (scalar or one per camera).
        near, far: distances along the rays; ``0 <= near < far``.

    Returns:
        (N,8,3) float64 world points: 4 near corners then 4 far corners.
    """
    if not (0.0 <= near < far):
        raise ValueError(f"near/far: expected 0 <= near < far, got near={near}, far={far}")
    w2c = _as_pose_batch(w2c, "w2c")
    n = w2c.shape[0]
    K = _as_K_batch(K, n, "K")
    W = _as_size(width, n, "width")
    H = _as_size(height, n, "height")
    zeros = torch.zeros_like(W)
    u = torch.stack([zeros, W, W, zeros], dim=1)  # (N,4)
    v = torch.stack([zeros, zeros, H, H], dim=1)
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (N,4,3)
    rays = pix @ torch.linalg.inv(K).transpose(-1, -2)
    rays = rays / rays.norm(dim=-1, keepdim=True)
    pts_cam = torch.cat([rays * near, rays * far], dim=1)  # (N,8,3)
    c2w = torch.linalg.inv(w2c)
    return pts_cam @ c2w[:, :3, :3].transpose(-1, -2) + c2w[:, None, :3, 3]


def aabb_iou(points_a: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """IoU of the axis-aligned bounding boxes of two point sets (broadcast over leading dims).

    ``inter = prod(clamp(min(max_a, max_b) - max(min_a, min_b), 0))``,
    ``IoU = inter / (vol_a + vol_b - inter + 1e-8)``; 0 when the boxes do not intersect on every axis.

    Args:
        points_a: (..., P, 3) points.
        points_b: (..., Q, 3) points, leading dims broadcastable with ``points_a``'s.

    Returns:
        (...) IoU in [0, 1].
    """
    if points_a.shape[-1] != 3 or points_b.shape[-1] != 3:
        raise ValueError(
            f"points_a/points_b: expected (..., P, 3) point sets, got {tuple(points_a.shape)} and {tuple(points_b.shape)}"
        )
    min_a, max_a = points_a.amin(dim=-2), points_a.amax(dim=-2)
    min_b, max_b = points_b.amin(dim=-2), points_b.amax(dim=-2)
    extent = torch.minimum(max_a, max_b) - torch.maximum(min_a, min_b)
    inter = extent.clamp(min=0).prod(dim=-1)
    vol_a = (max_a - min_a).prod(dim=-1)
    vol_b = (max_b - min_b).prod(dim=-1)
    iou = inter / (vol_a + vol_b - inter + 1e-8)
    return torch.where((extent > 0).all(dim=-1), iou, torch.zeros_like(iou))


def view_angle_deg(w2c_a: torch.Tensor, w2c_b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between the viewing directions (+z axes of c2w) of two camera sets.

    Args:
        w2c_a: (A,4,4) world-to-camera.
        w2c_b: (B,4,4) world-to-camera.

    Returns:
        (A,B) float64 angles in [0, 180].
    """
    za = torch.linalg.inv(_as_pose_batch(w2c_a, "w2c_a"))[:, :3, 2]
    zb = torch.linalg.inv(_as_pose_batch(w2c_b, "w2c_b"))[:, :3, 2]
    return torch.rad2deg(torch.arccos((za @ zb.T).clamp(-1.0, 1.0)))


def angle_penalty(angle_deg: torch.Tensor | float) -> torch.Tensor:
    """Reference angle penalty factor ``clip(exp(5 * (90 - angle) / 180), 0, 1)``.

    It is 1 for angles up to 90 degrees and decays to ``exp(-2.5)`` at 180 degrees.
    """
    a = torch.as_tensor(angle_deg, dtype=torch.float64)
    return torch.exp(5.0 * (90.0 - a) / 180.0).clamp(0.0, 1.0)


@dataclass
class PairwiseScores:
    """Pairwise target x bank scores.

    Attributes:
        overlap: (F,N) raw score (frustum AABB IoU, or visible fraction for correspondences).
        angle_deg: (F,N) angle between viewing directions, degrees.
        score: (F,N) score after the optional angle penalty (no shortcut).
    """

    overlap: torch.Tensor
    angle_deg: torch.Tensor
    score: torch.Tensor


def fov_overlap_scores(
    target_w2c: torch.Tensor,
    target_K: torch.Tensor,
    bank_w2c: torch.Tensor,
    bank_K: torch.Tensor,
    target_size: tuple[SizeLike, SizeLike],
    bank_size: tuple[SizeLike, SizeLike],
    *,
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
    use_angle_penalty: bool = True,
) -> PairwiseScores:
    """Frustum-overlap scores of every target camera against every bank camera.

    Args:
        target_w2c: (F,4,4) world-to-camera; target_K: (F,3,3) or (3,3) pixel intrinsics.
        bank_w2c: (N,4,4) world-to-camera; bank_K: (N,3,3) or (3,3).
        target_size, bank_size: ``(width, height)`` of the images the intrinsics refer to
            (scalars or one per camera). The reference uses one shared size for both.
        near, far: frustum distances along the rays.
        use_angle_penalty: multiply by :func:`angle_penalty` of the viewing-direction angle.

    Returns:
        :class:`PairwiseScores` with (F,N) float64 tensors.
    """
    tw2c = _as_pose_batch(target_w2c, "target_w2c")
    bw2c = _as_pose_batch(bank_w2c, "bank_w2c")
    ft = frustum_corners(tw2c, target_K, target_size[0], target_size[1], near, far)
    fb = frustum_corners(bw2c, bank_K, bank_size[0], bank_size[1], near, far)
    overlap = aabb_iou(ft[:, None], fb[None, :])
    angle = view_angle_deg(tw2c, bw2c)
    score = overlap * angle_penalty(angle) if use_angle_penalty else overlap.clone()
    return PairwiseScores(overlap, angle, score)


def correspondence_scores(
    target_w2c: torch.Tensor,
    target_K: torch.Tensor,
    target_depth: torch.Tensor,
    bank_w2c: torch.Tensor,
    bank_K: torch.Tensor,
    bank_size: tuple[SizeLike, SizeLike],
    *,
    num_correspondences: int = 256,
    generator: torch.Generator | None = None,
) -> PairwiseScores:
    """Correspondence-visibility scores (the library's ``retrieval="correspondence"`` method).

    For every target view, ``num_correspondences`` pixels with positive depth are sampled
    (uniformly at random, without replacement, from ``generator``), lifted to world points with
    the target depth (z-depth, pixel centres ``(x+0.5, y+0.5)``), and projected into every bank
    view; the score of a bank view is the fraction of those points that land in front of it
    (z > 0) and inside its image. There is no occlusion test (bank views carry no depth). A target
    view without valid depth scores 0 everywhere.

    Args:
        target_w2c: (F,4,4); target_K: (F,3,3) or (3,3) for images of the depth's size.
        target_depth: (F,H,W) or (F,1,H,W) z-depth, 0 = unknown (e.g. a point-cloud render).
        bank_w2c: (N,4,4); bank_K: (N,3,3) or (3,3); bank_size: ``(width, height)`` per bank view.
        num_correspondences: pixels per target view (>= 1).

    Returns:
        :class:`PairwiseScores`; ``overlap == score`` (visible fraction in [0, 1]).
    """
    if num_correspondences < 1:
        raise ValueError(f"num_correspondences: expected >= 1, got {num_correspondences}")
    tw2c = _as_pose_batch(target_w2c, "target_w2c")
    bw2c = _as_pose_batch(bank_w2c, "bank_w2c")
    F_, N = tw2c.shape[0], bw2c.shape[0]
    depth = torch.as_tensor(target_depth)
    if depth.ndim == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    if depth.ndim != 3 or depth.shape[0] != F_:
        raise ValueError(f"target_depth: expected ({F_},H,W) depth maps, got shape {tuple(depth.shape)}")
    depth = depth.to(torch.float64)
    tK = _as_K_batch(target_K, F_, "target_K")
    bK = _as_K_batch(bank_K, N, "bank_K")
    bW = _as_size(bank_size[0], N, "bank width")
    bH = _as_size(bank_size[1], N, "bank height")
    H, W = depth.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([xs + 0.5, ys + 0.5, torch.ones_like(xs)], dim=-1).reshape(-1, 3)
    c2w = torch.linalg.inv(tw2c)
    score = torch.zeros(F_, N, dtype=torch.float64)
    for f in range(F_):
        d = depth[f].reshape(-1)
        valid = torch.nonzero(d > 0).squeeze(1)
        if valid.numel() == 0:
            continue
        m = min(num_correspondences, valid.numel())
        pick = valid[torch.randperm(valid.numel(), generator=generator)[:m]]
        cam = (pix[pick] @ torch.linalg.inv(tK[f]).T) * d[pick, None]
        world = cam @ c2w[f, :3, :3].T + c2w[f, :3, 3]
        pb = torch.einsum("nij,mj->nmi", bw2c[:, :3, :3], world) + bw2c[:, None, :3, 3]  # (N,m,3)
        z = pb[..., 2]
        proj = torch.einsum("nij,nmj->nmi", bK, pb)
        zs = torch.where(z > 1e-9, z, torch.ones_like(z))
        u, v = proj[..., 0] / zs, proj[..., 1] / zs
        vis = (z > 1e-9) & (u >= 0) & (u < bW[:, None]) & (v >= 0) & (v < bH[:, None])
        score[f] = vis.to(torch.float64).mean(dim=1)
    angle = view_angle_deg(tw2c, bw2c)
    return PairwiseScores(score, angle, score.clone())


def find_closest_camera(
    target_w2c: torch.Tensor,
    target_K: torch.Tensor,
    bank_w2c: torch.Tensor,
    bank_K: torch.Tensor,
    width: SizeLike,
    height: SizeLike,
    *,
    shortcut_index: int | None = None,
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
    use_angle_penalty: bool = True,
) -> tuple[int, float, float]:
    """Best bank camera for one target camera (reference ``find_closest_camera_in_view``).

    Args:
        target_w2c: (4,4) world-to-camera; target_K: (3,3).
        bank_w2c: (N,4,4); bank_K: (N,3,3) or (3,3).
        width, height: shared frustum image size for target and bank (reference behaviour).
        shortcut_index: bank index that gets ``+1.0`` added to its score (forced choice).

    Returns:
        ``(index, score, angle_deg)`` of the first argmax.
    """
    bw2c = _as_pose_batch(bank_w2c, "bank_w2c")
    n = bw2c.shape[0]
    if n == 0:
        raise ValueError("bank_w2c: the bank is empty")
    if shortcut_index is not None and not (0 <= shortcut_index < n):
        raise ValueError(f"shortcut_index: expected an index in [0, {n}), got {shortcut_index}")
    s = fov_overlap_scores(
        target_w2c, target_K, bw2c, bank_K, (width, height), (width, height),
        near=near, far=far, use_angle_penalty=use_angle_penalty,
    )
    score = s.score[0].clone()
    if shortcut_index is not None:
        score[shortcut_index] += 1.0
    best = int(torch.argmax(score))
    return best, float(score[best]), float(s.angle_deg[0, best])


# --------------------------------------------------------------------------------------------
# shortcuts and reference list


def shortcut_candidates(bank_names: Sequence[str], view_id: str | None, traj_id: str | None) -> tuple[list[int], str | None]:
    """Reference shortcut rules for panorama scenes (§5.3), driven by bank names.

    * ``'view'`` in ``view_id`` and ``traj_id`` in {traj0, traj1} (``"regular"``): candidates are
      the bank entries named ``<view_id>/traj2*``; for traj1 only their first half; then ``[3::2]``.
    * ``'wonder'`` or ``'target'`` in ``view_id`` and ``traj_id > 'traj0'`` (string comparison,
      ``"aerial"``): entries named ``<view_id>/traj0*``, ``[3::2]``.

    Returns:
        ``(candidate bank indices, mode)`` with mode ``"regular"``, ``"aerial"`` or ``None``.
    """
    if not view_id or not traj_id:
        return [], None
    if "view" in view_id and traj_id in ("traj0", "traj1"):
        cands = [j for j, n in enumerate(bank_names) if n.startswith(f"{view_id}/traj2")]
        if traj_id == "traj1":
            cands = cands[: len(cands) // 2]
        return cands[3::2], "regular"
    if ("wonder" in view_id or "target" in view_id) and traj_id > "traj0":
        cands = [j for j, n in enumerate(bank_names) if n.startswith(f"{view_id}/traj0")]
        return cands[3::2], "aerial"
    return [], None


def _forced_index(i: int, num_frames: int, cands: list[int], mode: str | None) -> int | None:
    if not cands or mode is None:
        return None
    if mode == "regular" and i not in (1, 2, 3, 5, 7, 9, 13, 17):
        return None
    if mode == "aerial" and i in (4, 8, 12, 16):
        return None
    return cands[int(i / num_frames * len(cands))]


def build_reference_list(
    chosen: Sequence[int], scores: Sequence[float], angles: Sequence[float]
) -> tuple[list[int], list[int], dict[int, dict[int, dict[str, float]]]]:
    """Reference list from per-frame choices (frames ``i = 1 .. len(chosen)``).

    Args:
        chosen: bank index chosen by target frame ``i`` at position ``i - 1``.
        scores, angles: the matching scores and angles.

    Returns:
        ``(ref_index, ref_bank_indices, score_dict)``: for each distinct bank entry in order of
        first use, the slot ``i - 1`` of that first use and the bank index; ``score_dict`` maps
        slot -> target frame -> ``{"score", "angle_diff"}`` (the reference bookkeeping).

    Example:
        ``chosen = [5, 7, 7, 5, 2]`` gives ``ref_index = [0, 1, 4]``, ``ref_bank_indices = [5, 7, 2]``.
    """
    slot_of: dict[int, int] = {}
    ref_index: list[int] = []
    ref_bank: list[int] = []
    table: dict[int, dict[int, dict[str, float]]] = {}
    for pos, b in enumerate(chosen):
        b = int(b)
        if b not in slot_of:
            slot_of[b] = pos
            ref_index.append(pos)
            ref_bank.append(b)
            table[pos] = {}
        table[slot_of[b]][pos + 1] = {"score": float(scores[pos]), "angle_diff": float(angles[pos])}
    return ref_index, ref_bank, table


# --------------------------------------------------------------------------------------------
# image quality and camera selector


def _images_to_uint8_hwc(images: torch.Tensor | np.ndarray | Sequence, name: str = "images") -> np.ndarray:
    """(N,3,H,W) float [0,1] tensor / (N,H,W,3) uint8 array / list of either -> (N,H,W,3) uint8."""
    if isinstance(images, (list, tuple)):
        return np.stack([_images_to_uint8_hwc(np.asarray(im)[None] if not isinstance(im, torch.Tensor) else im[None], name)[0] for im in images])
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name}: expected a (N,3,H,W) float tensor in [0,1], got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images.permute(0, 2, 3, 1).cpu().numpy()
        x = (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{name}: expected a (N,H,W,3) array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return arr


def grey_opencv_bgr2gray(rgb: np.ndarray) -> np.ndarray:
    """OpenCV ``cvtColor(img, COLOR_BGR2GRAY)`` applied to an RGB uint8 array (the reference quirk).

    OpenCV treats channel 0 as blue, so ``grey = 0.114 R + 0.587 G + 0.299 B``, computed in OpenCV's
    15-bit fixed point for 8-bit images: ``(3735 R + 19235 G + 9798 B + 16384) >> 15`` (verified
    against the reference's quality scores; the 14-bit variant differs on rounding ties).

    Args:
        rgb: (H,W,3) uint8.

    Returns:
        (H,W) uint8.
    """
    x = rgb.astype(np.int64)
    return ((x[..., 0] * 3735 + x[..., 1] * 19235 + x[..., 2] * 9798 + (1 << 14)) >> 15).astype(np.uint8)


_LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def image_quality_score(rgb: np.ndarray) -> float:
    """Reference image quality: ``0.4 log1p(var(Laplacian)) + 0.3 entropy + 0.3 std / 128``.

    Grey = :func:`grey_opencv_bgr2gray`; Laplacian = 3x3 4-neighbour kernel with reflect-101
    borders (OpenCV ``Laplacian(ksize=1)``) in float64; entropy of the 256-bin grey histogram in
    bits with ``1e-10`` added to every bin probability; std = population std of grey.

    Args:
        rgb: (H,W,3) uint8 RGB image.
    """
    grey = grey_opencv_bgr2gray(rgb)
    lap = ndimage.convolve(grey.astype(np.float64), _LAPLACIAN, mode="mirror")
    sharpness = float(lap.var())
    hist = np.bincount(grey.reshape(-1), minlength=256).astype(np.float64)
    p = hist / hist.sum() + 1e-10
    entropy = float(-(p * np.log2(p)).sum())
    contrast = float(grey.std())
    return 0.4 * math.log1p(sharpness) + 0.3 * entropy + 0.3 * contrast / 128.0


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0, keepdims=True)) / (x.std(axis=0, keepdims=True) + 1e-8)


class CameraSelector:
    """Quality-aware farthest-point selection of reference views (reference ``CameraSelector``).

    Features per candidate: camera = ``[centre (-R^T t), quaternion (x,y,z,w) of R_w2c with w >= 0]``;
    image = DINOv2 ``pooler_output`` when ``image_feature_model`` is given, else a light-weight
    descriptor (:meth:`descriptor_features`: 8-bin colour histogram per channel plus a 16x16 grey
    thumbnail, 280 values). Each block is z-scored per dimension (population std + 1e-8) and the
    fused feature is ``[camera_weight * camera, image_weight * image]``. Then farthest-point
    sampling in that space, biased by the image quality (see :meth:`select`).

    Args:
        image_feature_model: ``None`` (light-weight descriptor); a local directory or Hugging Face id
            of a DINOv2 checkpoint (loaded lazily with transformers' ``AutoImageProcessor`` and
            ``AutoModel``; network only if the id is not cached); or a callable mapping images
            (N,3,H,W) float [0,1] to features (N,D).
        camera_weight, image_weight, quality_bias: reference defaults 0.3, 0.7, 0.1.
        device: device for the DINOv2 model.
    """

    def __init__(
        self,
        image_feature_model: str | Path | ImageFeatureFn | None = None,
        *,
        camera_weight: float = 0.3,
        image_weight: float = 0.7,
        quality_bias: float = 0.1,
        device: str | torch.device = "cpu",
    ) -> None:
        if image_feature_model is not None and not (isinstance(image_feature_model, (str, Path)) or callable(image_feature_model)):
            raise TypeError(
                f"image_feature_model: expected None, a path / model id, or a callable, got {type(image_feature_model).__name__}"
            )
        self.image_feature_model = image_feature_model
        self.camera_weight = float(camera_weight)
        self.image_weight = float(image_weight)
        self.quality_bias = float(quality_bias)
        self.device = torch.device(device)
        self._dino: tuple[object, torch.nn.Module] | None = None

    # -- features ---------------------------------------------------------------------------

    @staticmethod
    def camera_features(w2c: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N,4,4) w2c -> (N,7) float64 ``[centre (3), quaternion x,y,z,w (w >= 0)]``."""
        w = np.asarray(w2c.detach().cpu().numpy() if isinstance(w2c, torch.Tensor) else w2c)
        if w.ndim != 3 or w.shape[1:] != (4, 4):
            raise ValueError(f"w2c: expected (N,4,4) world-to-camera matrices, got shape {w.shape}")
        R = w[:, :3, :3]
        t = w[:, :3, 3]
        centre = -np.einsum("nji,nj->ni", R, t)
        quat = Rotation.from_matrix(R.astype(np.float64)).as_quat()
        quat = np.where(quat[:, 3:4] < 0, -quat, quat)
        return np.concatenate([centre.astype(np.float64), quat], axis=1)

    @staticmethod
    def descriptor_features(images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Light-weight image descriptor used without a DINOv2 model: (N,280) float64.

        8-bin histogram per RGB channel (normalised to sum 1 per channel, 24 values) followed by the
        grey image (channel mean) area-resized to 16x16 (256 values in [0,1]).
        """
        arr = _images_to_uint8_hwc(images)
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).double() / 255.0
        hists = []
        for c in range(3):
            h = torch.stack([torch.histc(x[i, c], bins=8, min=0.0, max=1.0) for i in range(x.shape[0])])
            hists.append(h / h.sum(dim=1, keepdim=True).clamp(min=1))
        thumb = torch.nn.functional.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), (16, 16)).flatten(1)
        return torch.cat(hists + [thumb], dim=1).numpy()

    def _load_dino(self) -> tuple[object, torch.nn.Module]:
        if self._dino is None:
            from transformers import AutoImageProcessor, AutoModel

            src = str(self.image_feature_model)
            logger.info("CameraSelector: loading image feature model from %s", src)
            # the reference uses the fast (torchvision) processor; transformers picks the backend
            # available here (PIL without torchvision: resizing may differ slightly)
            processor = AutoImageProcessor.from_pretrained(src)
            model = AutoModel.from_pretrained(src).to(self.device).eval()
            self._dino = (processor, model)
        return self._dino

    def image_features(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Image features (N,D) float64 of images (N,3,H,W) float [0,1] or (N,H,W,3) uint8."""
        if self.image_feature_model is None:
            return self.descriptor_features(images)
        if isinstance(self.image_feature_model, (str, Path)):
            processor, model = self._load_dino()
            arr = _images_to_uint8_hwc(images)
            feats = []
            with torch.no_grad():
                for im in arr:  # one image at a time, as the reference
                    inputs = processor(images=im, return_tensors="pt").to(self.device)
                    feats.append(model(**inputs).pooler_output[0].float().cpu())
            return torch.stack(feats).double().numpy()
        if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
            x = images.detach().float()
        else:
            x = torch.from_numpy(_images_to_uint8_hwc(images)).permute(0, 3, 1, 2).float() / 255.0
        out = torch.as_tensor(self.image_feature_model(x))
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"image_feature_model: expected features of shape ({x.shape[0]}, D), got {tuple(out.shape)}")
        return out.detach().double().cpu().numpy()

    @staticmethod
    def quality_scores(images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Per-image quality (N,) float64, see :func:`image_quality_score`."""
        return np.array([image_quality_score(im) for im in _images_to_uint8_hwc(images)], dtype=np.float64)

    # -- selection --------------------------------------------------------------------------

    def fused_features(self, camera_features: np.ndarray, image_features: np.ndarray) -> np.ndarray:
        """``[camera_weight * zscore(camera), image_weight * zscore(image)]`` (N, 7 + D)."""
        return np.concatenate(
            [self.camera_weight * _zscore(np.asarray(camera_features, dtype=np.float64)),
             self.image_weight * _zscore(np.asarray(image_features, dtype=np.float64))],
            axis=1,
        )

    def farthest_point_sampling(self, features: np.ndarray, quality: np.ndarray, k: int) -> list[int]:
        """Quality-aware FPS (reference): positions of ``k`` rows of ``features`` in selection order.

        ``qn = (q - min) / (max - min + 1e-8)``, ``factor = 1 + bias (qn - 0.5)``; start =
        ``argmax(-|f - mean f| + bias qn)``; then repeatedly ``dist = min(dist, |f - f_cur|)`` and
        take ``argmax(dist * factor)`` over the unselected rows.
        """
        f = np.asarray(features, dtype=np.float64)
        q = np.asarray(quality, dtype=np.float64)
        n = f.shape[0]
        k = min(int(k), n)
        if k <= 0:
            return []
        qn = (q - q.min()) / (q.max() - q.min() + 1e-8)
        factor = 1.0 + self.quality_bias * (qn - 0.5)
        start = int(np.argmax(-np.linalg.norm(f - f.mean(axis=0), axis=1) + self.quality_bias * qn))
        selected = [start]
        dist = np.full(n, np.inf)
        cur = start
        for _ in range(k - 1):
            dist = np.minimum(dist, np.linalg.norm(f - f[cur], axis=1))
            adjusted = dist * factor
            adjusted[selected] = -np.inf
            cur = int(np.argmax(adjusted))
            selected.append(cur)
        return selected

    def select(
        self,
        w2c: torch.Tensor | np.ndarray,
        images: torch.Tensor | np.ndarray,
        topk: int,
        *,
        image_features: np.ndarray | torch.Tensor | None = None,
    ) -> list[int]:
        """Pick ``topk`` diverse, good-quality candidates.

        Args:
            w2c: (N,4,4) candidate cameras (world-to-camera).
            images: (N,3,H,W) float [0,1] or (N,H,W,3) uint8 candidate images (quality, features).
            topk: number to select (clipped to N).
            image_features: precomputed (N,D) features replacing the model's.

        Returns:
            Candidate positions in selection order.
        """
        if topk < 1:
            raise ValueError(f"topk: expected >= 1, got {topk}")
        cam = self.camera_features(w2c)
        n = cam.shape[0]
        img_n = images.shape[0] if hasattr(images, "shape") else len(images)
        if img_n != n:
            raise ValueError(f"images: expected {n} images (one per camera), got {img_n}")
        if image_features is None:
            feats = self.image_features(images)
        else:
            feats = np.asarray(image_features.detach().cpu().double().numpy() if isinstance(image_features, torch.Tensor) else image_features, dtype=np.float64)
            if feats.ndim != 2 or feats.shape[0] != n:
                raise ValueError(f"image_features: expected ({n}, D), got shape {feats.shape}")
        quality = self.quality_scores(images)
        return self.farthest_point_sampling(self.fused_features(cam, feats), quality, topk)


# --------------------------------------------------------------------------------------------
# full retrieval


def _gather_images(bank_images: object, idx: list[int]) -> torch.Tensor | np.ndarray:
    """Rows ``idx`` of a (N,3,H,W) tensor, (N,H,W,3) array, or any indexable sequence of images."""
    if isinstance(bank_images, torch.Tensor):
        return bank_images[torch.tensor(idx, dtype=torch.long)]
    if isinstance(bank_images, np.ndarray):
        return bank_images[np.asarray(idx, dtype=np.int64)]
    items = [bank_images[j] for j in idx]  # type: ignore[index]
    if all(isinstance(x, torch.Tensor) for x in items):
        return torch.stack(items)
    return np.stack([np.asarray(x) for x in items])


@dataclass
class RetrievalResult:
    """Outcome of :func:`retrieve`.

    Attributes:
        frame_indices: positions of the used target poses in the given trajectory (after the
            every-4th subsampling of long trajectories), including frame 0.
        retrieved: bank index chosen by each used target frame 1 .. F-1 (length F-1).
        scores: score of each choice (shortcut bonus included); angles: its angle in degrees.
        ref_index: (R,) slots (``i - 1``) of the first use of each distinct entry, ascending.
        ref_bank_indices: (R,) bank index of each reference, same order.
        ref_w2c: (R,4,4) world-to-camera of the references (float64).
        score_dict: slot -> target frame -> ``{"score", "angle_diff"}`` (reference bookkeeping).
        selected_positions: when the camera selector ran, the selected positions among the F-1
            initially retrieved frames, in selection order; else ``None``.
        initial_retrieved: the per-frame choices before selection (equal to ``retrieved`` when the
            selector did not run).
    """

    frame_indices: list[int]
    retrieved: list[int]
    scores: list[float]
    angles: list[float]
    ref_index: list[int]
    ref_bank_indices: list[int]
    ref_w2c: torch.Tensor
    score_dict: dict[int, dict[int, dict[str, float]]]
    selected_positions: list[int] | None = None
    initial_retrieved: list[int] = field(default_factory=list)


def retrieve(
    target_w2c: torch.Tensor,
    target_K: torch.Tensor,
    bank_w2c: torch.Tensor,
    bank_K: torch.Tensor,
    *,
    target_size: tuple[SizeLike, SizeLike],
    bank_size: tuple[SizeLike, SizeLike] | None = None,
    nframe: int | None = None,
    subsample_stride: int = 4,
    max_references: int = 8,
    method: str = "fov_overlap",
    bank_names: Sequence[str] | None = None,
    view_id: str | None = None,
    traj_id: str | None = None,
    bank_images: torch.Tensor | np.ndarray | Sequence | None = None,
    bank_features: torch.Tensor | np.ndarray | None = None,
    selector: CameraSelector | None = None,
    target_depth: torch.Tensor | None = None,
    num_correspondences: int = 256,
    generator: torch.Generator | None = None,
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
) -> RetrievalResult:
    """Retrieve reference views from a memory bank for a target trajectory (reference §5.3).

    1. If ``nframe`` is given and the trajectory has more than ``nframe`` poses, every
       ``subsample_stride``-th pose is used (reference: ``[0::4]``).
    2. Every used target frame ``i = 1 .. F-1`` scores all bank entries (``method``:
       ``"fov_overlap"`` = frustum AABB IoU times the angle penalty; ``"correspondence"`` =
       visible fraction of lifted target pixels, needs ``target_depth``); the reference shortcut
       (+1.0 on a forced entry, see :func:`shortcut_candidates`) applies when ``bank_names``,
       ``view_id`` and ``traj_id`` trigger it; the first argmax is chosen.
    3. The reference list is built with :func:`build_reference_list`.
    4. If more than ``max_references`` distinct entries were chosen, ``selector`` (default
       :class:`CameraSelector`) picks ``max_references`` of the F-1 retrieved frames (duplicates
       included) and every target frame is re-assigned to its best selected entry (no shortcut,
       ties to the earlier selection), rebuilding the list. The selector needs ``bank_images``
       (quality; a (N,3,H,W) float tensor, a (N,H,W,3) uint8 array, or a sequence indexable by bank
       index whose items have one common size) and uses ``bank_features`` (N,D) instead of its own
       image features when given.

    Args:
        target_w2c: (F,4,4) world-to-camera (OpenCV); target_K: (F,3,3) or (3,3) pixel intrinsics.
        bank_w2c: (N,4,4); bank_K: (N,3,3) or (3,3).
        target_size: ``(width, height)`` the target intrinsics refer to (scalars or per frame).
        bank_size: ``(width, height)`` per bank entry; default ``target_size`` (the reference uses
            one shared size).

    Returns:
        :class:`RetrievalResult`.

    Raises:
        ValueError: bad shapes, an empty bank, fewer than 2 used target frames, unknown method,
            ``"correspondence"`` without ``target_depth``, or selection needed without ``bank_images``.
    """
    if method not in ("fov_overlap", "correspondence"):
        raise ValueError(f"method: expected 'fov_overlap' or 'correspondence', got {method!r}")
    if max_references < 1:
        raise ValueError(f"max_references: expected >= 1, got {max_references}")
    if subsample_stride < 1:
        raise ValueError(f"subsample_stride: expected >= 1, got {subsample_stride}")
    tw2c = _as_pose_batch(target_w2c, "target_w2c")
    bw2c = _as_pose_batch(bank_w2c, "bank_w2c")
    n_t, n_b = tw2c.shape[0], bw2c.shape[0]
    if n_b == 0:
        raise ValueError("bank_w2c: the memory bank is empty")
    tK = _as_K_batch(target_K, n_t, "target_K")
    bK = _as_K_batch(bank_K, n_b, "bank_K")
    tW = _as_size(target_size[0], n_t, "target_size width")
    tH = _as_size(target_size[1], n_t, "target_size height")
    bank_size = bank_size if bank_size is not None else (float(tW[0]), float(tH[0]))
    bW = _as_size(bank_size[0], n_b, "bank_size width")
    bH = _as_size(bank_size[1], n_b, "bank_size height")
    if bank_names is not None and len(bank_names) != n_b:
        raise ValueError(f"bank_names: expected {n_b} names (one per bank entry), got {len(bank_names)}")
    if method == "correspondence" and target_depth is None:
        raise ValueError("target_depth: required by method='correspondence' (rendered depth per target frame)")

    frame_idx = list(range(n_t))
    if nframe is not None and n_t > nframe:
        frame_idx = frame_idx[::subsample_stride]
    if len(frame_idx) < 2:
        raise ValueError(f"target_w2c: need at least 2 used target frames (frame 0 is the condition view), got {len(frame_idx)}")
    sel = torch.tensor(frame_idx)
    tw2c, tK, tW, tH = tw2c[sel], tK[sel], tW[sel], tH[sel]
    F_ = len(frame_idx)

    if method == "fov_overlap":
        pair = fov_overlap_scores(tw2c, tK, bw2c, bK, (tW, tH), (bW, bH), near=near, far=far)
    else:
        depth = torch.as_tensor(target_depth)
        if depth.ndim == 4 and depth.shape[1] == 1:
            depth = depth[:, 0]
        if depth.ndim != 3 or depth.shape[0] != n_t:
            raise ValueError(f"target_depth: expected ({n_t},H,W) depth maps, got shape {tuple(depth.shape)}")
        pair = correspondence_scores(
            tw2c, tK, depth[sel], bw2c, bK, (bW, bH), num_correspondences=num_correspondences, generator=generator
        )

    cands, mode = shortcut_candidates(bank_names or [], view_id, traj_id)
    chosen: list[int] = []
    scores: list[float] = []
    angles: list[float] = []
    for i in range(1, F_):
        s = pair.score[i].clone()
        forced = _forced_index(i, F_, cands, mode)
        if forced is not None:
            s[forced] += 1.0
        b = int(torch.argmax(s))
        chosen.append(b)
        scores.append(float(s[b]))
        angles.append(float(pair.angle_deg[i, b]))
    initial = list(chosen)
    ref_index, ref_bank, table = build_reference_list(chosen, scores, angles)

    selected_positions: list[int] | None = None
    if len(ref_bank) > max_references:
        if bank_images is None:
            raise ValueError(
                f"bank_images: required to select {max_references} of {len(ref_bank)} distinct references (quality score)"
            )
        selector = selector if selector is not None else CameraSelector()
        imgs = _gather_images(bank_images, chosen)
        feats = None
        if bank_features is not None:
            bf = bank_features.detach().cpu().double().numpy() if isinstance(bank_features, torch.Tensor) else np.asarray(bank_features, dtype=np.float64)
            feats = bf[chosen]
        selected_positions = selector.select(bw2c[torch.tensor(chosen)], imgs, max_references, image_features=feats)
        subset = [chosen[p] for p in selected_positions]
        logger.debug("retrieve: %d distinct entries > max_references=%d; selected bank entries %s", len(ref_bank), max_references, subset)
        sub = torch.tensor(subset)
        chosen, scores, angles = [], [], []
        for i in range(1, F_):
            s = pair.score[i, sub]
            j = int(torch.argmax(s))
            chosen.append(subset[j])
            scores.append(float(s[j]))
            angles.append(float(pair.angle_deg[i, subset[j]]))
        ref_index, ref_bank, table = build_reference_list(chosen, scores, angles)

    return RetrievalResult(
        frame_indices=frame_idx,
        retrieved=chosen,
        scores=scores,
        angles=angles,
        ref_index=ref_index,
        ref_bank_indices=ref_bank,
        ref_w2c=bw2c[torch.tensor(ref_bank, dtype=torch.long)],
        score_dict=table,
        selected_positions=selected_positions,
        initial_retrieved=initial,
    )
