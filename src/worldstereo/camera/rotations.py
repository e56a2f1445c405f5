"""Rotation helpers: quaternions (w, x, y, z, real part first), axis rotations, slerp.

All functions are batched over leading dimensions and keep the dtype/device of their input.
Rotation matrices act on column vectors (``v' = R @ v``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "standardize_quaternion",
    "quaternion_slerp",
    "rotation_x",
    "rotation_y",
    "rotation_z",
]


def _sqrt_positive_part(x: Tensor) -> Tensor:
    """``sqrt(max(0, x))`` with a zero (not NaN) gradient at and below 0."""
    out = torch.zeros_like(x)
    positive = x > 0
    out[positive] = torch.sqrt(x[positive])
    return out


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """Rotation matrices to unit quaternions, real part first, standardised to ``w >= 0``.

    Reproduces the PyTorch3D-style branch selection used by the reference camera tokens: the four
    candidate quaternions are computed from the four ``q_abs`` values and the one with the largest
    ``q_abs`` is picked (numerically stable for 180-degree rotations).

    Args:
        matrix: (..., 3, 3) rotation matrices.

    Returns:
        (..., 4) quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Raises:
        ValueError: ``matrix`` does not end in (3, 3).
    """
    if matrix.ndim < 2 or matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: expected shape (..., 3, 3), got {tuple(matrix.shape)}")
    batch = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch + (9,)), dim=-1)
    q_abs = _sqrt_positive_part(
        torch.stack(
            [
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ],
            dim=-1,
        )
    )
    quat_by_rijk = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = quat_by_rijk / (2.0 * q_abs[..., None].max(floor))
    best = q_abs.argmax(dim=-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(batch + (1, 4))).squeeze(-2)
    return standardize_quaternion(quat)


def standardize_quaternion(quat: Tensor) -> Tensor:
    """Flip the sign of quaternions ``(w, x, y, z)`` with ``w < 0`` so that ``w >= 0``."""
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_matrix(quat: Tensor) -> Tensor:
    """Quaternions ``(w, x, y, z)`` (normalised here) to (..., 3, 3) rotation matrices."""
    if quat.shape[-1] != 4:
        raise ValueError(f"quat: expected shape (..., 4), got {tuple(quat.shape)}")
    q = quat / quat.norm(dim=-1, keepdim=True)
    w, x, y, z = torch.unbind(q, dim=-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quat.shape[:-1] + (3, 3))


def quaternion_slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation along the shorter arc.

    Args:
        q0, q1: (..., 4) unit quaternions ``(w, x, y, z)``.
        t: (...) interpolation parameters in [0, 1] (0 -> ``q0``, 1 -> ``q1``), broadcast with q0/q1.

    Returns:
        (..., 4) unit quaternions.
    """
    dot = (q0 * q1).sum(-1)
    q1 = torch.where(dot[..., None] < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    t = t.to(q0.dtype)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe_sin = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1.0 - t, torch.sin((1.0 - t) * theta) / safe_sin)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe_sin)
    out = w0[..., None] * q0 + w1[..., None] * q1
    return out / out.norm(dim=-1, keepdim=True)


def _axis_rotation(angle_rad: Tensor, axis: int) -> Tensor:
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == 0:
        rows = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        rows = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        rows = [c, -s, zero, s, c, zero, zero, zero, one]
    return torch.stack(rows, dim=-1).reshape(angle_rad.shape + (3, 3))


def rotation_x(angle_rad: Tensor) -> Tensor:
    """Right-handed rotation about +x by ``angle_rad`` (radians): (...) -> (..., 3, 3)."""
    return _axis_rotation(angle_rad, 0)


def rotation_y(angle_rad: Tensor) -> Tensor:
    """Right-handed rotation about +y: maps +z towards +x for positive angles. (...) -> (..., 3, 3)."""
    return _axis_rotation(angle_rad, 1)


def rotation_z(angle_rad: Tensor) -> Tensor:
    """Right-handed rotation about +z: maps +x towards +y for positive angles. (...) -> (..., 3, 3)."""
    return _axis_rotation(angle_rad, 2)


def deg2rad(x: float) -> float:
    """Degrees to radians (float)."""
    return x * math.pi / 180.0
