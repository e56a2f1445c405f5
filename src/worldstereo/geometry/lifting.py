"""Depth map -> world point cloud (reference ``get_points3d_and_colors``, reference-implementation.md §5.1).

Conventions: ``w2c`` is a 4x4 world-to-camera matrix with OpenCV camera axes (x right, y down,
z forward); ``K`` is the 3x3 pixel intrinsic matrix of the depth map; depth is z-depth (distance
along the optical axis) in scene units; pixel (row r, column c) is sampled at its centre
``(x, y) = (c + 0.5, r + 0.5)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .pointcloud import PointCloud

__all__ = [
    "LiftingResult",
    "contract_far_depth",
    "depth_edge_mask",
    "get_points3d_and_colors",
    "get_points3d_and_colors_detailed",
    "lift_depth",
    "unproject_depth",
    "unproject_points",
]

logger = logging.getLogger(__name__)

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


@dataclass
class LiftingResult:
    """Everything :func:`get_points3d_and_colors_detailed` computes.

    Attributes:
        points: (N,3) world points (row-major order of the kept pixels), or None when <= 8 remain.
        colors: (N,3) colours of the kept pixels (same range as the input image), or None.
        depth: (H,W) depth after far-depth contraction.
        edge_mask: (H,W) bool, True = depth edge (dropped).
        keep_mask: (H,W) bool, True = pixel produced a point.
    """

    points: Tensor | None
    colors: Tensor | None
    depth: Tensor
    edge_mask: Tensor
    keep_mask: Tensor


def _as_hw(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        return x
    if x.dim() in (3, 4) and all(s == 1 for s in x.shape[:-2]):
        return x.reshape(x.shape[-2:])
    raise ValueError(f"{name}: expected shape (H,W), (1,H,W) or (1,1,H,W), got {tuple(x.shape)}")


def _first_matrix(x: Tensor, n: int, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.shape[-2:] != (n, n) or x.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape ({n},{n}) or (F,{n},{n}), got {tuple(x.shape)}")
    return x if x.dim() == 2 else x[0]


def contract_far_depth(depth: Tensor, contract: float | None = 8.0) -> Tensor:
    """Far-depth contraction of the reference (returns a new tensor; the input is not modified).

    ``m = contract * median(depth[depth > 0])`` with ``torch.median`` semantics (the lower of the two
    middle values for an even count); every depth ``d > m`` becomes ``2m - m^2 / (d + 1e-6)``, which
    maps (m, inf) smoothly into (m, 2m). ``contract=None`` (or <= 0) disables it.

    Args:
        depth: (...) z-depth, 0 = invalid.
        contract: multiple of the median positive depth beyond which depth is contracted.
    """
    out = depth.clone()
    if contract is None or contract <= 0:
        return out
    positive = out[out > 0]
    if positive.numel() == 0:
        return out
    m = contract * torch.median(positive)
    far = out > m
    out[far] = 2 * m - m**2 / (out[far] + 1e-6)
    return out


def depth_edge_mask(depth: Tensor, sobel_threshold: float = 0.35) -> Tensor:
    """Depth-discontinuity mask of the reference (True = edge pixel, dropped by the lifting).

    ``disp = 1 / (depth + 1e-7)``, min-max normalised over the whole map
    (``(disp - min) / (max - min + 1e-6)``); 3x3 Sobel responses (un-normalised kernels
    ``[[-1,0,1],[-2,0,2],[-1,0,1]]`` and its transpose, cross-correlation, replicate padding);
    ``g = sqrt(gx^2 + gy^2)``; edge where ``exp(-10 g) < sobel_threshold``.

    Args:
        depth: (H,W) z-depth (after contraction), 0 = invalid (gives a huge disparity).
        sobel_threshold: threshold on the edge score in (0, 1]; larger removes more.
    Returns:
        (H,W) bool.
    """
    d = _as_hw(depth, "depth")
    disp = 1.0 / (d + 1e-7)
    norm = (disp - disp.min()) / (disp.max() - disp.min() + 1e-6)
    kx = torch.tensor(_SOBEL_X, dtype=norm.dtype, device=norm.device)
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2,1,3,3)
    padded = F.pad(norm[None, None], (1, 1, 1, 1), mode="replicate")
    grad = F.conv2d(padded, kernels)[0]  # (2,H,W)
    g = torch.sqrt(grad[0] ** 2 + grad[1] ** 2)
    return torch.exp(-10.0 * g) < sobel_threshold


def unproject_points(u: Tensor, v: Tensor, depth: Tensor, K: Tensor, w2c: Tensor) -> Tensor:
    """World points at image coordinates ``(u, v)`` with z-depth: ``c2w · (K^-1 [u, v, 1]^T · depth)``.

    Image coordinates follow the library convention (the centre of pixel (row r, column c) is
    ``(c + 0.5, r + 0.5)``); :func:`unproject_depth` is this function at pixel centres.

    Args:
        u, v: (N,) image coordinates (column, row direction) shared by every frame, or (F,N).
        depth: (N,) z-depth, or (F,N) for F frames.
        K: (3,3) pixel intrinsics ((F,3,3) or (3,3) with F frames).
        w2c: (4,4) world-to-camera (OpenCV axes) ((F,4,4) or (4,4) with F frames).
    Returns:
        (N,3) world points, or (F,N,3); dtype of ``depth``.
    """
    dtype, dev = depth.dtype, depth.device
    # operation order as the reference (bit-identical in float32): (K^-1 @ pix) * d, then c2w @ [p; 1]
    u, v = u.to(dtype), v.to(dtype)
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-2)  # (...,3,N)
    cam = (torch.inverse(K.to(device=dev, dtype=dtype)) @ pix) * depth.unsqueeze(-2)
    cam_h = torch.cat([cam, torch.ones_like(cam[..., :1, :])], dim=-2)  # (...,4,N)
    c2w = torch.inverse(w2c.to(device=dev, dtype=dtype))
    return (c2w @ cam_h)[..., :3, :].transpose(-1, -2)


def unproject_depth(depth: Tensor, K: Tensor, w2c: Tensor, *, pixels: Tensor | None = None) -> Tensor:
    """World points of pixel centres: ``c2w · (K^-1 [c+0.5, r+0.5, 1]^T · depth)``.

    Args:
        depth: (H,W) z-depth, or (F,H,W) for F frames.
        K: (3,3) pixel intrinsics ((F,3,3) or (3,3) with (F,H,W) depth).
        w2c: (4,4) world-to-camera (OpenCV axes) ((F,4,4) or (4,4) with (F,H,W) depth).
        pixels: optional (N,) (or (F,N)) row-major pixel indices ``r * W + c`` to lift instead of
            every pixel.
    Returns:
        (H*W, 3) world points in row-major pixel order (or (N,3) for ``pixels``), or (F,H*W,3) /
        (F,N,3); dtype of ``depth``.
    """
    h, w = depth.shape[-2:]
    dtype, dev = depth.dtype, depth.device
    flat = depth.reshape(*depth.shape[:-2], -1)
    if pixels is not None:
        pixels = pixels.to(dev)
        u = torch.remainder(pixels, w).to(dtype) + 0.5
        v = torch.div(pixels, w, rounding_mode="floor").to(dtype) + 0.5
        return unproject_points(u, v, torch.gather(flat, -1, pixels.expand(*flat.shape[:-1], -1)), K, w2c)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=dtype) + 0.5,
                            torch.arange(w, device=dev, dtype=dtype) + 0.5, indexing="ij")
    return unproject_points(xs.reshape(-1), ys.reshape(-1), flat, K, w2c)


def get_points3d_and_colors_detailed(
    K: Tensor,
    w2cs: Tensor,
    depth: Tensor,
    image: Tensor,
    mask: Tensor | None = None,
    sobel_threshold: float | None = 0.35,
    contract: float | None = 8.0,
) -> LiftingResult | None:
    """Like :func:`get_points3d_and_colors` but also returns the contracted depth and the masks.

    Returns None where the reference returns ``(None, None)`` before any work (all-zero or
    non-finite depth); a :class:`LiftingResult` with ``points = colors = None`` when <= 8 points remain.
    """
    d = _as_hw(depth, "depth")
    if not d.is_floating_point():
        raise TypeError(f"depth: expected a floating tensor, got {d.dtype}")
    h, w = d.shape
    K0 = _first_matrix(K, 3, "K")
    w2c0 = _first_matrix(w2cs, 4, "w2cs")
    if not isinstance(image, Tensor):
        raise TypeError(f"image: expected a torch.Tensor, got {type(image).__name__}")
    img = image[0] if image.dim() == 4 else image
    if img.dim() != 3 or img.shape[0] != 3 or tuple(img.shape[1:]) != (h, w):
        raise ValueError(f"image: expected shape (3,{h},{w}) or (1,3,{h},{w}), got {tuple(image.shape)}")
    invalid = None
    if mask is not None:
        invalid = _as_hw(mask, "mask")
        if tuple(invalid.shape) != (h, w):
            raise ValueError(f"mask: expected shape ({h},{w}), got {tuple(invalid.shape)}")
        invalid = invalid.to(torch.bool)
    if not torch.isfinite(d).all() or d.max() == 0:
        return None
    d = contract_far_depth(d, contract)
    if sobel_threshold is not None:
        edge = depth_edge_mask(d, sobel_threshold)
    else:
        edge = torch.zeros_like(d, dtype=torch.bool)
    dropped = edge if invalid is None else edge | invalid.to(edge.device)
    keep = ~dropped
    pts = unproject_depth(d, K0, w2c0)
    flat_keep = keep.reshape(-1)
    points = pts[flat_keep]
    colors = img.reshape(3, -1).t()[flat_keep.to(img.device)]
    if points.shape[0] <= 8:
        return LiftingResult(None, None, d, edge, keep)
    return LiftingResult(points, colors, d, edge, keep)


def get_points3d_and_colors(
    K: Tensor,
    w2cs: Tensor,
    depth: Tensor,
    image: Tensor,
    mask: Tensor | None = None,
    sobel_threshold: float | None = 0.35,
    contract: float | None = 8.0,
    *,
    in_place: bool = False,
) -> tuple[Tensor, Tensor] | tuple[None, None]:
    """The reference's single-view lifting (reference-implementation.md §5.1), numerically identical.

    Steps: (1) all-zero or non-finite depth -> ``(None, None)``; (2) far-depth contraction
    (:func:`contract_far_depth`); (3) Sobel depth-edge removal on the contracted depth
    (:func:`depth_edge_mask`); (4) pixels that are edges or ``mask`` are dropped; the rest are
    lifted at their pixel centres with ``K[0]`` and ``inverse(w2cs[0])`` (:func:`unproject_depth`).

    Unlike the reference, the caller's ``depth`` is **not** modified unless ``in_place=True``
    (the reference contracts it in place).

    Args:
        K: (3,3) or (F,3,3) pixel intrinsics; only the first is used.
        w2cs: (4,4) or (F,4,4) world-to-camera (OpenCV axes); only the first is used.
        depth: (H,W), (1,H,W) or (1,1,H,W) z-depth, 0 = invalid.
        image: (3,H,W) or (1,3,H,W) colours in [-1,1] (any range is passed through unchanged).
        mask: optional (H,W) bool, True = invalid pixel (dropped).
        sobel_threshold: edge threshold (None disables edge removal).
        contract: far-depth contraction factor (None disables contraction).
        in_place: write the contracted depth back into ``depth`` like the reference.
    Returns:
        ``(points (N,3), colors (N,3))`` in row-major order of the kept pixels, or ``(None, None)``
        when the depth is unusable or 8 or fewer points remain.
    """
    res = get_points3d_and_colors_detailed(K, w2cs, depth, image, mask, sobel_threshold, contract)
    if res is None:
        return None, None
    if in_place:
        with torch.no_grad():
            depth.copy_(res.depth.reshape(depth.shape))
    if res.points is None or res.colors is None:
        return None, None
    return res.points, res.colors


def lift_depth(
    depth: Tensor,
    K: Tensor,
    w2c: Tensor,
    image: Tensor | None = None,
    *,
    valid_mask: Tensor | None = None,
    sobel_threshold: float | None = 0.35,
    contract: float | None = 8.0,
) -> PointCloud:
    """Lift a z-depth map to a world :class:`PointCloud` (library-facing wrapper of the reference lifting).

    Args:
        depth: (H,W) z-depth in scene units; 0 or non-finite = invalid.
        K: (3,3) pixel intrinsics of the depth map.
        w2c: (4,4) world-to-camera pose of the view (OpenCV axes).
        image: optional (3,H,W) colours in [0,1]; mid-grey when omitted.
        valid_mask: optional (H,W) bool, True = valid depth; pixels with depth <= 0 or non-finite
            depth are always treated as invalid.
        sobel_threshold: depth-edge removal threshold (None disables it).
        contract: far-depth contraction factor (None disables it).
    Returns:
        The lifted points (possibly empty if nothing valid remains; the reference's "<= 8 points"
        rule does not apply here).

    Note:
        Edge removal follows the reference exactly: invalid pixels enter the disparity
        normalisation with depth 0 (disparity 1e7), which squeezes the valid disparities towards 0,
        so with invalid pixels present mostly the borders of the invalid regions are detected as
        edges (as in the reference single-view pipeline, whose renders the model was trained on).
    """
    d = _as_hw(depth, "depth")
    if not d.is_floating_point():
        raise TypeError(f"depth: expected a floating tensor, got {d.dtype}")
    h, w = d.shape
    if image is None:
        image = torch.full((3, h, w), 0.5, dtype=torch.float32, device=d.device)
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or tuple(image.shape[1:]) != (h, w):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image: expected shape (3,{h},{w}) in [0,1], got {shape}")
    invalid = ~torch.isfinite(d) | (d <= 0)
    if valid_mask is not None:
        vm = _as_hw(valid_mask, "valid_mask")
        if tuple(vm.shape) != (h, w):
            raise ValueError(f"valid_mask: expected shape ({h},{w}), got {tuple(vm.shape)}")
        invalid = invalid | ~vm.to(torch.bool)
    d = torch.where(invalid, torch.zeros_like(d), d)
    if not bool((d > 0).any()):
        return PointCloud.empty(device=d.device)
    res = get_points3d_and_colors_detailed(K, w2c, d, image, invalid, sobel_threshold, contract)
    assert res is not None  # depth has a positive finite value
    keep = res.keep_mask.reshape(-1)
    if res.points is not None:
        pts = res.points
    else:  # <= 8 points: the reference would return None; the library returns them
        pts = unproject_depth(res.depth, _first_matrix(K, 3, "K"), _first_matrix(w2c, 4, "w2c"))[keep]
    cols = image.reshape(3, -1).t()[keep.to(image.device)].clamp(0, 1)
    return PointCloud(pts.float(), cols.float())
