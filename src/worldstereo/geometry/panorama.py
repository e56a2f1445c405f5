"""Equirectangular panoramas: perspective crops with their cameras, stitching back, depth lifting.

Equirectangular convention (same as :func:`worldstereo.geometry.render.equirect_project`): in the
panorama's camera frame (OpenCV axes x right, y down, z forward) a direction has longitude
``lon = atan2(x, z)`` (0 = forward, +90° = right) and latitude ``lat = asin(−y / |p|)`` (+90° = up);
pixel ``u = (lon / 2π + 0.5) · W``, ``v = (0.5 − lat / π) · H``; pixel (row r, col c) has its
centre at ``(c + 0.5, r + 0.5)``. The panorama's pose is a world-to-camera matrix ``w2c_pano``
(identity by default).

Perspective views are described by ``(K, w2c)``: 3x3 pixel intrinsics and a 4x4 world-to-camera
matrix (OpenCV axes). ``yaw`` turns the view right (towards +x), ``pitch`` up (towards −y), ``roll``
rotates the image clockwise about the viewing direction; all in degrees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .pointcloud import PointCloud
from .render import equirect_pixel_to_direction, equirect_project

__all__ = [
    "intrinsics_from_fov",
    "view_rotation",
    "perspective_from_equirect",
    "equirect_to_perspective",
    "perspective_to_equirect",
    "lift_equirect_depth",
]


def intrinsics_from_fov(fov_deg: float, height: int, width: int) -> Tensor:
    """(3,3) pinhole intrinsics with horizontal field of view ``fov_deg``, square pixels, centred
    principal point (``cx = W/2``, ``cy = H/2``)."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg: expected a value in (0, 180), got {fov_deg!r}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def view_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> Tensor:
    """(3,3) camera-to-panorama rotation of a view turned by yaw (right), pitch (up), roll.

    ``R = R_y(yaw) · R_x(pitch) · R_z(roll)``; the view's forward axis is ``R · (0, 0, 1)`` =
    ``(sin yaw · cos pitch, −sin pitch, cos yaw · cos pitch)`` in panorama camera coordinates.
    """
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    ry = torch.tensor([[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    rz = torch.tensor([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    return ry @ rx @ rz


def _check_pano(pano: Tensor, name: str = "pano") -> None:
    if not isinstance(pano, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(pano).__name__}")
    if pano.dim() != 3 or not pano.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor of shape (C,H,W), got {tuple(pano.shape)} {pano.dtype}")


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")


def _sample_equirect(pano: Tensor, u: Tensor, v: Tensor, mode: str) -> Tensor:
    """Bilinear/nearest sampling of (C,H,W) at pixel coordinates (u, v) (any shape), wrapping in u."""
    c, h, w = pano.shape
    padded = torch.cat([pano[..., -1:], pano, pano[..., :1]], dim=-1)  # one wrapped column each side
    u = torch.remainder(u, float(w)) + 1.0
    gx = 2.0 * u / (w + 2) - 1.0
    gy = 2.0 * v / h - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(1, -1, 1, 2).to(pano.dtype)
    out = F.grid_sample(padded[None], grid, mode=mode, padding_mode="border", align_corners=False)
    return out.reshape(c, *u.shape)


def equirect_to_perspective(
    pano: Tensor,
    w2c: Tensor,
    K: Tensor,
    height: int,
    width: int,
    *,
    w2c_pano: Tensor | None = None,
    mode: str = "bilinear",
) -> Tensor:
    """Resample a panorama into the pinhole view ``(K, w2c)`` sharing the panorama's centre.

    Only the rotations matter (a panorama has no parallax): the view's ray through each pixel centre
    is looked up in the panorama.

    Args:
        pano: (C,H,W) equirectangular image.
        w2c: (4,4) world-to-camera of the view (OpenCV axes).
        K: (3,3) intrinsics of the (height, width) view.
        w2c_pano: (4,4) world-to-camera of the panorama; identity when None.
        mode: ``"bilinear"`` or ``"nearest"``.
    Returns:
        (C,height,width) view.
    """
    _check_pano(pano)
    _check_size(height, width)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
    dev, dt = pano.device, torch.float32
    w2c = torch.as_tensor(w2c, dtype=dt, device=dev)
    K = torch.as_tensor(K, dtype=dt, device=dev)
    if w2c.shape != (4, 4):
        raise ValueError(f"w2c: expected shape (4,4), got {tuple(w2c.shape)}")
    if K.shape != (3, 3):
        raise ValueError(f"K: expected shape (3,3), got {tuple(K.shape)}")
    wp = torch.eye(4, device=dev) if w2c_pano is None else torch.as_tensor(w2c_pano, dtype=dt, device=dev)
    ys, xs = torch.meshgrid(torch.arange(height, device=dev, dtype=dt) + 0.5,
                            torch.arange(width, device=dev, dtype=dt) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (h,w,3)
    rays_cam = pix @ torch.inverse(K).t()
    # view camera -> world -> panorama camera (rotations only)
    rot = wp[:3, :3] @ w2c[:3, :3].t()
    rays_pano = rays_cam @ rot.t()
    u, v, _ = equirect_project(rays_pano, pano.shape[1], pano.shape[2])
    return _sample_equirect(pano, u, v, mode)


def perspective_from_equirect(
    pano: Tensor,
    yaw_deg: float,
    pitch_deg: float,
    fov_deg: float,
    height: int,
    width: int,
    *,
    roll_deg: float = 0.0,
    w2c_pano: Tensor | None = None,
    mode: str = "bilinear",
) -> tuple[Tensor, Tensor, Tensor]:
    """Perspective crop of a panorama looking at (yaw, pitch), with its camera.

    Args:
        pano: (C,H,W) equirectangular image (e.g. [0,1] colours, or a depth map as C=1).
        yaw_deg, pitch_deg, roll_deg: view direction (see :func:`view_rotation`).
        fov_deg: horizontal field of view of the crop.
        height, width: crop size.
        w2c_pano: panorama pose (identity when None).
    Returns:
        ``(image (C,height,width), K (3,3), w2c (4,4))``; ``w2c`` is in the world frame of
        ``w2c_pano`` (the view shares the panorama's centre).
    """
    _check_pano(pano)
    _check_size(height, width)
    K = intrinsics_from_fov(fov_deg, height, width).to(pano.device)
    wp = torch.eye(4, device=pano.device) if w2c_pano is None else \
        torch.as_tensor(w2c_pano, dtype=torch.float32, device=pano.device)
    c2w_pano = torch.inverse(wp)
    c2w = c2w_pano.clone()
    c2w[:3, :3] = c2w_pano[:3, :3] @ view_rotation(yaw_deg, pitch_deg, roll_deg).to(pano.device)
    w2c = torch.inverse(c2w)
    img = equirect_to_perspective(pano, w2c, K, height, width, w2c_pano=wp, mode=mode)
    return img, K, w2c


def perspective_to_equirect(
    images: Tensor,
    w2c: Tensor,
    K: Tensor,
    height: int,
    width: int,
    *,
    w2c_pano: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Stitch pinhole views sharing the panorama centre into an equirectangular panorama.

    Each panorama pixel takes the bilinear samples of the views that see it, blended with weights
    that fall off towards each view's border (``w = min(distance to the border in pixels, 8) · z``
    where ``z`` is the cosine to the optical axis), so seams are smooth.

    Args:
        images: (N,C,h,w) views.
        w2c: (N,4,4) world-to-camera of the views (their translation is ignored).
        K: (N,3,3) or (3,3) intrinsics of the views.
        height, width: panorama size.
        w2c_pano: panorama pose (identity when None).
    Returns:
        ``(pano (C,height,width), coverage (1,height,width) float {0,1})`` with 1 where at least one
        view contributes; uncovered pixels are 0.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images: expected shape (N,C,h,w), got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    _check_size(height, width)
    n, c, h, w = images.shape
    dev, dt = images.device, torch.float32
    w2c = torch.as_tensor(w2c, dtype=dt, device=dev)
    if w2c.shape != (n, 4, 4):
        raise ValueError(f"w2c: expected shape ({n},4,4), got {tuple(w2c.shape)}")
    K = torch.as_tensor(K, dtype=dt, device=dev).expand(n, 3, 3)
    wp = torch.eye(4, device=dev) if w2c_pano is None else torch.as_tensor(w2c_pano, dtype=dt, device=dev)
    ys, xs = torch.meshgrid(torch.arange(height, device=dev, dtype=dt) + 0.5,
                            torch.arange(width, device=dev, dtype=dt) + 0.5, indexing="ij")
    d_pano = equirect_pixel_to_direction(xs, ys, height, width)  # (H,W,3) panorama camera frame
    d_world = d_pano @ wp[:3, :3]  # R^T d
    acc = torch.zeros(c, height, width, device=dev, dtype=dt)
    wsum = torch.zeros(height, width, device=dev, dtype=dt)
    for i in range(n):
        d_cam = d_world @ w2c[i, :3, :3].t()
        z = d_cam[..., 2]
        front = z > 1e-6
        zs = torch.where(front, z, torch.ones_like(z))
        p = d_cam @ K[i].t()
        u, v = p[..., 0] / zs, p[..., 1] / zs
        border = torch.minimum(torch.minimum(u, w - u), torch.minimum(v, h - v))
        inside = front & (border > 0)
        wgt = torch.where(inside, border.clamp(max=8.0) * z, torch.zeros_like(z))
        grid = torch.stack([2 * u / w - 1, 2 * v / h - 1], dim=-1)
        grid = torch.where(inside[..., None], grid, torch.zeros_like(grid))
        samp = F.grid_sample(images[i:i + 1].to(dt), grid[None], mode="bilinear", padding_mode="border",
                             align_corners=False)[0]
        acc += samp * wgt
        wsum += wgt
    covered = wsum > 0
    pano = acc / torch.where(covered, wsum, torch.ones_like(wsum))
    return pano, covered[None].float()


def lift_equirect_depth(
    depth: Tensor,
    image: Tensor | None = None,
    w2c: Tensor | None = None,
    *,
    valid_mask: Tensor | None = None,
) -> PointCloud:
    """Lift an equirectangular range map to a world point cloud.

    Args:
        depth: (H,W) range = distance from the panorama centre along each pixel's ray (the
            ``depth`` of :func:`~worldstereo.geometry.render.render_point_cloud_equirect`);
            values <= 0 or non-finite are invalid.
        image: optional (3,H,W) colours in [0,1] (mid-grey when None).
        w2c: (4,4) world-to-camera of the panorama (identity when None).
        valid_mask: optional (H,W) bool, True = use the pixel.
    Returns:
        One point per valid pixel (centre ``(c + 0.5, r + 0.5)``), row-major order.
    """
    if not isinstance(depth, Tensor) or depth.dim() != 2 or not depth.is_floating_point():
        raise ValueError("depth: expected a float tensor of shape (H,W)")
    h, w = depth.shape
    dev = depth.device
    if image is None:
        image = torch.full((3, h, w), 0.5, device=dev)
    if not isinstance(image, Tensor) or tuple(image.shape) != (3, h, w):
        raise ValueError(f"image: expected shape (3,{h},{w}), got "
                         f"{tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__}")
    w2c_t = torch.eye(4, device=dev) if w2c is None else torch.as_tensor(w2c, dtype=torch.float32, device=dev)
    if w2c_t.shape != (4, 4):
        raise ValueError(f"w2c: expected shape (4,4), got {tuple(w2c_t.shape)}")
    valid = torch.isfinite(depth) & (depth > 0)
    if valid_mask is not None:
        if tuple(valid_mask.shape) != (h, w):
            raise ValueError(f"valid_mask: expected shape ({h},{w}), got {tuple(valid_mask.shape)}")
        valid = valid & valid_mask.to(device=dev, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32) + 0.5,
                            torch.arange(w, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
    dirs = equirect_pixel_to_direction(xs, ys, h, w)
    cam = dirs[valid] * depth[valid].float().unsqueeze(1)
    c2w = torch.inverse(w2c_t)
    world = cam @ c2w[:3, :3].t() + c2w[:3, 3]
    cols = image.permute(1, 2, 0)[valid].float().clamp(0, 1)
    return PointCloud(world, cols)
