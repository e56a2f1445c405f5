"""Smooth camera paths through keyframe cameras (Catmull-Rom splines).

:func:`interpolate_keyframes` turns a few keyframe cameras (the first one is the condition view)
into a trajectory of ``num_frames`` cameras that passes through every keyframe and moves with a
continuous velocity across them (C1), which a piecewise-linear path (:meth:`CameraTrajectory.resample`)
does not: the camera stops turning and starts again at each keyframe there.

Method (uniform parameterisation: keyframe ``k`` sits at parameter ``k``, and the output frames are
evenly spaced in that parameter, so each keyframe-to-keyframe segment gets the same time):

* camera centres: a uniform Catmull-Rom spline (tangent at keyframe ``k`` = half the chord from
  ``k - 1`` to ``k + 1``; at the ends the missing neighbour is the end keyframe itself, so the path
  eases in and out);
* orientations: the same spline on the camera-to-world quaternions, made sign-consistent along the
  path (each quaternion on the same hemisphere as the previous one) and normalised — smooth, exact
  at the keyframes, and for two keyframes a rotation about their relative axis;
* intrinsics: the same spline on each entry of ``K``.

Conventions as everywhere in :mod:`worldstereo.camera`: w2c OpenCV poses, ``K`` in pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rotations import matrix_to_quaternion, quaternion_to_matrix
from .trajectory import CameraTrajectory, _check_size, _invert_rigid

__all__ = ["catmull_rom", "interpolate_keyframes"]


def catmull_rom(points: Tensor, t: Tensor) -> Tensor:
    """Uniform Catmull-Rom spline through ``points`` at parameters ``t``.

    Args:
        points: (K, D) control points, K >= 1; point ``k`` is reached at ``t = k``.
        t: (N,) parameters in ``[0, K - 1]`` (clamped).

    Returns:
        (N, D) points on the spline, in the dtype of ``points``. ``t = k`` gives ``points[k]``
        exactly; the first derivative is continuous; the end tangents use the end point as its own
        missing neighbour (half the chord to the inner neighbour).
    """
    if points.ndim != 2 or points.shape[0] < 1:
        raise ValueError(f"points: expected (K, D) with K >= 1, got {tuple(points.shape)}")
    k = points.shape[0]
    t = t.to(points.dtype).clamp(0.0, k - 1.0)
    if k == 1:
        return points[:1].expand(t.shape[0], -1).clone()
    padded = torch.cat([points[:1], points, points[-1:]])  # p[-1] = p[0], p[K] = p[K-1]
    i = t.floor().long().clamp(max=k - 2)
    s = (t - i.to(t.dtype))[:, None]
    p0, p1, p2, p3 = padded[i], padded[i + 1], padded[i + 2], padded[i + 3]
    # Hermite form with tangents m1 = (p2 - p0) / 2 and m2 = (p3 - p1) / 2
    m1, m2 = 0.5 * (p2 - p0), 0.5 * (p3 - p1)
    s2, s3 = s * s, s * s * s
    out = (2 * s3 - 3 * s2 + 1) * p1 + (s3 - 2 * s2 + s) * m1 + (-2 * s3 + 3 * s2) * p2 + (s3 - s2) * m2
    exact = (s[:, 0] == 0)
    out[exact] = p1[exact]
    return out


def interpolate_keyframes(keyframes: CameraTrajectory, num_frames: int) -> CameraTrajectory:
    """A smooth trajectory of ``num_frames`` cameras through the ``keyframes`` (see the module docstring).

    Args:
        keyframes: K >= 1 keyframe cameras (frame 0 = the condition view), with or without
            intrinsics; their :attr:`~CameraTrajectory.units` and kind of intrinsics are kept.
        num_frames: cameras of the result (>= K is typical; the first and last equal the first and
            last keyframes, and keyframe ``k`` is hit exactly when ``k * (num_frames - 1) / (K - 1)``
            is an integer).

    Returns:
        The trajectory, in the keyframes' dtype and device.

    Raises:
        TypeError: ``keyframes`` is not a CameraTrajectory.
        ValueError: ``num_frames`` < 1.
    """
    if not isinstance(keyframes, CameraTrajectory):
        raise TypeError(f"keyframes: expected a CameraTrajectory, got {type(keyframes).__name__}")
    num_frames = _check_size(num_frames, "num_frames")
    k = len(keyframes)
    dt = keyframes.dtype
    t = torch.linspace(0.0, k - 1.0, num_frames, dtype=torch.float64, device=keyframes.device)
    c2w = keyframes.c2w.double()
    q = matrix_to_quaternion(c2w[:, :3, :3])
    for i in range(1, k):  # same hemisphere as the previous keyframe: the short way round
        if float((q[i] * q[i - 1]).sum()) < 0:
            q[i] = -q[i]
    rotation = quaternion_to_matrix(catmull_rom(q, t))
    centers = catmull_rom(c2w[:, :3, 3], t)
    out = torch.eye(4, dtype=torch.float64, device=keyframes.device).repeat(num_frames, 1, 1)
    out[:, :3, :3] = rotation
    out[:, :3, 3] = centers
    w2c = _invert_rigid(out)
    hit = (t - t.round()).abs() < 1e-9  # frames that land on a keyframe: exactly its pose
    w2c[hit] = keyframes.w2c.double()[t[hit].round().long()]
    K = None
    if keyframes.K is not None:
        K = catmull_rom(keyframes.K.double().reshape(k, 9), t).reshape(num_frames, 3, 3)
        K[hit] = keyframes.K.double()[t[hit].round().long()]
        K = K.to(dt)
    return keyframes._like(w2c.to(dt), K)
