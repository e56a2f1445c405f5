"""Preset camera trajectories (all start at the identity pose = the condition view).

Every preset is a classmethod of :class:`~worldstereo.camera.CameraTrajectory` that calls one of
the builders here. Axes are OpenCV (x right, y down, z forward); distances, radii and focus depths
are multiples of the condition view's median depth (the trajectories have ``units="median_depth"``
and are converted to scene units once the scene is known, see
:meth:`CameraTrajectory.in_scene_units`). Intrinsics are centred with horizontal field of view
``fov_deg`` for a ``height`` x ``width`` image (``fov_intrinsics=True``: rebuilt with square pixels
at another size).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .rotations import rotation_x, rotation_y, rotation_z
from .trajectory import CameraTrajectory, _as_float_tensor, _check_size, _invert_rigid, intrinsics_from_fov

__all__ = ["PRESET_LIMITS", "PRESET_NAMES", "look_at_w2c"]

#: names accepted by :meth:`CameraTrajectory.preset` (and the CLI)
PRESET_NAMES: tuple[str, ...] = (
    "forward", "backward", "left", "right", "up", "down",
    "pan_left", "pan_right", "tilt_up", "tilt_down", "roll",
    "zoom_in", "zoom_out", "dolly_zoom", "orbit", "spiral", "eloop",
)

_DT = torch.float64  # presets are built in float64 and returned as float32


#: Bounds of the preset parameters (they keep every pose finite and meaningful): lengths
#: (distances, radii, focus depths) in median depths, angles in degrees, zoom factors, revolutions.
PRESET_LIMITS: dict[str, float] = {"length": 1e6, "angle_deg": 3600.0, "zoom": 1e3, "revolutions": 1e3}


def _check_real(value: Any, name: str, *, positive: bool = False, kind: str = "length") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    limit = PRESET_LIMITS[kind]
    if kind == "zoom":
        if not 1.0 / limit <= v <= limit:
            raise ValueError(f"{name}: expected a zoom factor in [{1.0 / limit:g}, {limit:g}], got {value!r}")
    elif abs(v) > limit:
        unit = {"length": " median depths", "angle_deg": " degrees", "revolutions": ""}[kind]
        raise ValueError(f"{name}: expected a number of magnitude at most {limit:g}{unit}, got {value!r}")
    return v


def _params(num_frames: int) -> Tensor:
    n = _check_size(num_frames, "num_frames")
    return torch.linspace(0.0, 1.0, n, dtype=_DT) if n > 1 else torch.zeros(1, dtype=_DT)


def _finish(c2w: Tensor, K: Tensor, height: int, width: int) -> CameraTrajectory:
    w2c = _invert_rigid(c2w)
    w2c[0] = torch.eye(4, dtype=_DT)  # exact condition view
    return CameraTrajectory(w2c.float(), K.float(), height, width, units="median_depth", fov_intrinsics=True)


def _K(num: int, height: int, width: int, fov_deg: float) -> Tensor:
    return intrinsics_from_fov(height, width, fov_deg, dtype=_DT).expand(num, 3, 3).clone()


def _c2w(R: Tensor, centers: Tensor) -> Tensor:
    out = torch.eye(4, dtype=_DT).repeat(R.shape[0], 1, 1)
    out[:, :3, :3] = R
    out[:, :3, 3] = centers
    return out


def translate(direction: tuple[float, float, float], distance: float, num_frames: int, *, height: int,
              width: int, fov_deg: float) -> CameraTrajectory:
    """Camera centre moves linearly from 0 to ``distance * direction`` (camera-0 axes), no rotation."""
    distance = _check_real(distance, "distance")
    t = _params(num_frames)
    K = _K(len(t), height, width, fov_deg)
    centers = t[:, None] * distance * torch.tensor(direction, dtype=_DT)
    R = torch.eye(3, dtype=_DT).expand(len(t), 3, 3)
    return _finish(_c2w(R, centers), K, height, width)


def rotate_in_place(axis: int, angle_deg: float, num_frames: int, *, height: int, width: int,
                    fov_deg: float, sign: float = 1.0) -> CameraTrajectory:
    """Camera-to-world rotation about camera-0 ``axis`` (0=x, 1=y, 2=z) from 0 to ``sign * angle_deg``.

    c2w = R_axis(angle): a positive angle about y turns the view towards +x (right), about x towards
    -y (up), about z rolls the camera x axis towards +y.
    """
    angle = sign * _check_real(angle_deg, "angle_deg", kind="angle_deg")
    t = _params(num_frames)
    K = _K(len(t), height, width, fov_deg)
    ang = torch.deg2rad(t * angle)
    if axis == 0:
        R = rotation_x(ang)
    elif axis == 1:
        R = rotation_y(ang)
    else:
        R = rotation_z(ang)
    return _finish(_c2w(R, torch.zeros(len(t), 3, dtype=_DT)), K, height, width)


def zoom(factor: float, num_frames: int, *, height: int, width: int, fov_deg: float) -> CameraTrajectory:
    """Identity poses; focal lengths ``f * factor ** t`` (principal point fixed)."""
    factor = _check_real(factor, "factor", positive=True, kind="zoom")
    t = _params(num_frames)
    K = _K(len(t), height, width, fov_deg)
    scale = factor ** t
    K[:, 0, 0] *= scale
    K[:, 1, 1] *= scale
    return _finish(torch.eye(4, dtype=_DT).repeat(len(t), 1, 1), K, height, width)


def dolly_zoom(distance: float, num_frames: int, *, subject_depth: float, height: int, width: int,
               fov_deg: float) -> CameraTrajectory:
    """Forward motion ``z = t * distance`` with focal ``f * (subject_depth - z) / subject_depth``."""
    distance = _check_real(distance, "distance")
    subject_depth = _check_real(subject_depth, "subject_depth", positive=True)
    if distance >= subject_depth:
        raise ValueError(f"distance: must be smaller than subject_depth ({subject_depth}) so the subject stays in "
                         f"front of the camera, got {distance}")
    t = _params(num_frames)
    K = _K(len(t), height, width, fov_deg)
    z = t * distance
    scale = (subject_depth - z) / subject_depth
    K[:, 0, 0] *= scale
    K[:, 1, 1] *= scale
    centers = torch.zeros(len(t), 3, dtype=_DT)
    centers[:, 2] = z
    return _finish(_c2w(torch.eye(3, dtype=_DT).expand(len(t), 3, 3), centers), K, height, width)


def orbit(azimuth_deg: float, num_frames: int, *, elevation_deg: float, depth: float, height: int, width: int,
          fov_deg: float) -> CameraTrajectory:
    """Rigid rotation of the camera about the point (0, 0, depth): c2w = T(p) R T(-p) with
    R = R_y(-azimuth) R_x(-elevation) (positive azimuth moves the camera to +x, positive elevation
    to -y); the point stays on every optical axis at distance ``depth``."""
    az = _check_real(azimuth_deg, "azimuth_deg", kind="angle_deg")
    el = _check_real(elevation_deg, "elevation_deg", kind="angle_deg")
    depth = _check_real(depth, "depth", positive=True)
    t = _params(num_frames)
    K = _K(len(t), height, width, fov_deg)
    R = rotation_y(torch.deg2rad(-t * az)) @ rotation_x(torch.deg2rad(-t * el))
    p = torch.tensor([0.0, 0.0, depth], dtype=_DT)
    centers = p - R @ p
    return _finish(_c2w(R, centers), K, height, width)


def look_at_w2c(eyes: Any, targets: Any, up: Any = (0.0, -1.0, 0.0)) -> Tensor:
    """(N, 4, 4) float64 w2c (OpenCV) of cameras at ``eyes`` looking at ``targets``.

    z = normalise(target - eye); x = normalise(cross(-up, z)); y = cross(z, x).

    Raises:
        ValueError: bad shapes, an eye equal to its target, or a view direction parallel to ``up``.
    """
    e = _as_float_tensor(eyes, "eyes").double()
    tg = _as_float_tensor(targets, "targets").double()
    u = _as_float_tensor(up, "up").double()
    for name, v in (("eyes", e), ("targets", tg), ("up", u)):
        if v.shape[-1:] != (3,) or v.ndim > 2:
            raise ValueError(f"{name}: expected shape (N, 3) or (3,), got {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise ValueError(f"{name}: expected finite values")
    e, tg, u = torch.broadcast_tensors(e.reshape(-1, 3), tg.reshape(-1, 3), u.reshape(-1, 3))
    z = tg - e
    zn = z.norm(dim=-1, keepdim=True)
    if (zn < 1e-12).any():
        raise ValueError("targets: every target must differ from its eye position")
    z = z / zn
    x = torch.cross(-u, z, dim=-1)
    xn = x.norm(dim=-1, keepdim=True)
    if (xn < 1e-9).any():
        raise ValueError("up: the view direction is parallel to the up vector; choose another up")
    x = x / xn
    y = torch.cross(z, x, dim=-1)
    c2w = _c2w(torch.stack([x, y, z], dim=-1), e)
    return _invert_rigid(c2w)


def _looking(centers: Tensor, focus: Tensor, height: int, width: int, fov_deg: float) -> CameraTrajectory:
    w2c = look_at_w2c(centers, focus.expand_as(centers))
    K = _K(centers.shape[0], height, width, fov_deg)
    w2c[0] = torch.eye(4, dtype=_DT)
    return CameraTrajectory(w2c.float(), K.float(), height, width, units="median_depth", fov_intrinsics=True)


def spiral(radius: float, num_frames: int, *, revolutions: float, forward: float, focus_depth: float,
           height: int, width: int, fov_deg: float) -> CameraTrajectory:
    """Centre ``(r t cos(2 pi k t), r t sin(2 pi k t), forward t)`` looking at ``(0, 0, focus_depth)``."""
    radius = _check_real(radius, "radius")
    revolutions = _check_real(revolutions, "revolutions", kind="revolutions")
    forward = _check_real(forward, "forward")
    focus_depth = _check_real(focus_depth, "focus_depth", positive=True)
    if forward >= focus_depth:
        raise ValueError(f"forward: must be smaller than focus_depth ({focus_depth}), got {forward}")
    t = _params(num_frames)
    ang = 2.0 * math.pi * revolutions * t
    centers = torch.stack([radius * t * torch.cos(ang), radius * t * torch.sin(ang), forward * t], dim=-1)
    _check_size(height, "height")
    _check_size(width, "width")
    return _looking(centers, torch.tensor([0.0, 0.0, focus_depth], dtype=_DT), height, width, fov_deg)


def eloop(radius_x: float, radius_y: float, num_frames: int, *, depth: float, height: int, width: int,
          fov_deg: float) -> CameraTrajectory:
    """Centre ``(rx sin(2 pi t), -ry (1 - cos(2 pi t)), 0)``, t in [0, 1], looking at ``(0, 0, depth)``."""
    rx = _check_real(radius_x, "radius_x")
    ry = _check_real(radius_y, "radius_y")
    depth = _check_real(depth, "depth", positive=True)
    t = _params(num_frames)
    ang = 2.0 * math.pi * t
    centers = torch.stack([rx * torch.sin(ang), -ry * (1.0 - torch.cos(ang)), torch.zeros_like(t)], dim=-1)
    centers[-1] = 0.0 if len(t) > 1 else centers[-1]
    _check_size(height, "height")
    _check_size(width, "width")
    return _looking(centers, torch.tensor([0.0, 0.0, depth], dtype=_DT), height, width, fov_deg)
