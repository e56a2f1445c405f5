"""Fit a trajectory to a scene: scale its motion so that the point-cloud render stays covered.

A trajectory whose scale does not match the scene's (a preset far longer than the room, a camera
file written for a metric scene used with relative depth) flies through the point cloud or away
from it, and its render — the geometry the model follows — turns into holes.
:func:`fit_trajectory` scales the motion about the condition view (:meth:`CameraTrajectory.scaled`:
rotations and frame 0 kept, translations relative to frame 0 multiplied by one factor) and keeps
the largest factor (at most ``max_scale``) whose render covers at least ``min_coverage`` of every
frame.

Coverage (:func:`worldstereo.geometry.coverage.render_coverage`) is measured with the point renderer
the pipeline uses, at a reduced size whose point footprint is still at least one pixel wide (the
coverage of a splatted cloud depends on the footprint relative to the point spacing, not on the
pixel count, so it matches the full-size render to about a percent).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..geometry.coverage import render_coverage
from ..geometry.pointcloud import PointCloud
from ..config_checks import check_float, check_int
from ..geometry.render import RENDER_LIMITS, footprint_radius_px, render_point_cloud
from .trajectory import CameraTrajectory, _as_float_tensor

__all__ = ["DEFAULT_MIN_COVERAGE", "TrajectoryFit", "fit_trajectory", "scene_median_depth"]

logger = logging.getLogger(__name__)

#: Default target of :func:`fit_trajectory`: every frame's render covers at least this share of the image.
DEFAULT_MIN_COVERAGE = 0.5
#: Halvings of the scale tried before giving up (down to ``max_scale / 2**(steps - 1)``).
_SCAN_STEPS = 10
#: Frames rendered together while measuring coverage (rendering stops at the first failing chunk).
_CHUNK = 4
#: Bisection steps between the largest passing halving and its double (precision 2**-steps of it).
_BISECTION_STEPS = 4


@dataclass
class TrajectoryFit:
    """Result of :func:`fit_trajectory`.

    Attributes:
        trajectory: the fitted trajectory (scene units).
        scale: the factor applied to the motion (1.0 = unchanged).
        coverage: per-frame render coverage of the fitted trajectory (frame 0 included).
        reached: whether every frame reaches ``min_coverage`` (False when no scale does, typically
            because the rotations alone turn the view away from the scene; then ``scale`` is the
            tried one with the best lowest coverage).
    """

    trajectory: CameraTrajectory
    scale: float
    coverage: list[float] = field(default_factory=list)
    reached: bool = True


def _as_cloud(points: Any) -> PointCloud:
    if isinstance(points, PointCloud):
        cloud = points
    else:
        try:
            cloud = PointCloud.from_tensor(torch.as_tensor(np.asarray(points) if not isinstance(points, Tensor)
                                                           else points))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"points: expected a PointCloud or an (N,3) / (N,6) tensor or array ({exc})") from None
    if cloud.is_empty:
        raise ValueError("points: the point cloud is empty; there is no scene to fit the trajectory to")
    return cloud


def scene_median_depth(points: Any, w2c: Tensor, K: Tensor, height: int, width: int) -> float:
    """Median z-depth of the points that one camera sees (in front of it, inside its image).

    This is the scene's "median depth" for a point cloud; for a cloud lifted from a depth map it
    equals the depth map's median over the lifted pixels.

    Args:
        points: :class:`~worldstereo.geometry.PointCloud` or (N, 3) world points.
        w2c: (4, 4) world-to-camera (OpenCV); K: (3, 3) pixel intrinsics of ``(height, width)``.

    Raises:
        ValueError: the camera sees none of the points.
    """
    xyz = _as_cloud(points).xyz.double()
    w = torch.as_tensor(w2c, dtype=torch.float64, device=xyz.device)
    k = torch.as_tensor(K, dtype=torch.float64, device=xyz.device)
    cam = xyz @ w[:3, :3].T + w[:3, 3]
    z = cam[:, 2]
    front = z > 1e-9
    uv = (cam[front] @ k.T)[:, :2] / z[front, None]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    seen = z[front][inside]
    if seen.numel() == 0:
        raise ValueError("points: the condition view (frame 0) sees none of the points, so the scene has no "
                         "median depth; are the points in the trajectory's world frame?")
    return float(seen.median())


def _fit_size(height: int, width: int, point_radius: float) -> tuple[int, int]:
    """The smallest size (same aspect) at which the point footprint is still >= 1 pixel in radius."""
    if point_radius <= 0:
        return height, width
    f = min(1.0, 2.0 / (point_radius * min(height, width)))
    h, w = max(1, round(height * f)), max(1, round(width * f))
    if footprint_radius_px(point_radius, h, w) < 1.0:  # rounding: never below one pixel
        return height, width
    return h, w


def _check_renderer_settings(point_radius: Any, points_per_pixel: Any) -> None:
    check_float("point_radius", point_radius, *RENDER_LIMITS["point_radius"])
    check_int("points_per_pixel", points_per_pixel, *RENDER_LIMITS["points_per_pixel"])


def fit_trajectory(trajectory: CameraTrajectory, points: Any, K: Any = None, *, height: int | None = None,
                   width: int | None = None, min_coverage: float = DEFAULT_MIN_COVERAGE, max_scale: float = 1.0,
                   point_radius: float = 0.008, points_per_pixel: int = 8) -> TrajectoryFit:
    """Scale ``trajectory``'s motion so that the render of ``points`` covers ``min_coverage`` of every frame.

    Args:
        trajectory: the trajectory (frame 0 = the condition view). A ``"median_depth"`` trajectory
            (a preset) is first converted to scene units with the median depth of ``points`` seen
            from frame 0 (:func:`scene_median_depth`).
        points: the scene in the trajectory's world frame: a
            :class:`~worldstereo.geometry.PointCloud` or (N, 3) / (N, 6) xyz[+rgb].
        K: (3, 3) or (N, 3, 3) pixel intrinsics of ``(height, width)`` images (default: the
            trajectory's own).
        height, width: the image size ``K`` refers to (default: the trajectory's).
        min_coverage: target share of covered pixels in every frame, in (0, 1]
            (default :data:`DEFAULT_MIN_COVERAGE`).
        max_scale: the largest factor tried (default 1.0: the fit only shrinks the motion).
        point_radius, points_per_pixel: renderer settings (those of the pipeline by default).

    Returns:
        :class:`TrajectoryFit`. The motion is left unchanged (``scale == max_scale``) when that
        already reaches the target.

    Raises:
        ValueError: bad arguments, no intrinsics, or points that frame 0 does not see.
    """
    if not isinstance(trajectory, CameraTrajectory):
        raise TypeError(f"trajectory: expected a CameraTrajectory, got {type(trajectory).__name__}")
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage: expected a share of pixels in (0, 1], got {min_coverage!r}")
    if isinstance(max_scale, bool) or not isinstance(max_scale, (int, float)) or not (
            math.isfinite(max_scale) and max_scale > 0):
        raise ValueError(f"max_scale: expected a finite number > 0, got {max_scale!r}")
    _check_renderer_settings(point_radius, points_per_pixel)
    cloud = _as_cloud(points)
    traj = trajectory
    if K is not None:
        if height is None or width is None:
            if not trajectory.has_intrinsics:
                raise ValueError("height/width: required with K when the trajectory has no intrinsics")
            height, width = trajectory.height, trajectory.width
        traj = trajectory.with_intrinsics(_as_float_tensor(K, "K").to(trajectory.dtype), height=height, width=width)
    elif not trajectory.has_intrinsics:
        raise ValueError("K: the trajectory has no intrinsics; pass K with height and width")
    elif height is not None or width is not None:
        if height is None or width is None:
            raise ValueError("height/width: give both or neither")
        traj = trajectory.at_size(height, width)
    assert traj.K is not None and traj.height is not None and traj.width is not None
    if traj.units == "median_depth":
        median = scene_median_depth(cloud, traj.w2c[0], traj.K[0], traj.height, traj.width)
        traj = traj.in_scene_units(median)
        logger.info("fit: preset converted to scene units with the scene's median depth %.3g", median)
    h, w = _fit_size(traj.height, traj.width, point_radius)
    probe = traj.resized(h, w)

    def evaluate(scale: float, stop_below: float | None = None) -> tuple[float, list[float] | None]:
        """(lowest coverage seen, per-frame coverage or None when stopped early). Frames are rendered
        from the last (usually the farthest) backwards, a few at a time, and rendering stops at the
        first chunk with a frame below ``stop_below``."""
        t = probe.scaled(scale)
        cov: list[float] = [1.0] * len(t)  # frame 0 is the condition image itself
        lowest = 1.0
        for stop in range(len(t), 1, -_CHUNK):
            start = max(1, stop - _CHUNK)
            out = render_point_cloud(cloud, t.w2c[start:stop].float(), t.K[start:stop].float(), h, w,  # type: ignore[index]
                                     point_radius=point_radius, points_per_pixel=points_per_pixel)
            cov[start:stop] = render_coverage(out.hole_mask)
            lowest = min(lowest, min(cov[start:stop]))
            if stop_below is not None and lowest < stop_below:
                return lowest, None
        return lowest, cov

    # Coverage is not monotonic in the scale: an orbit about a point far behind the scene covers
    # nothing at full scale, the whole scene once its centre is scaled onto the scene, and again
    # little when the translation vanishes (a pure pan). So scan halving scales from max_scale down
    # and keep the largest that reaches the target, then bisect between it and the failing double.
    tried: list[tuple[float, float]] = []
    scale = float(max_scale)
    ok_cov: list[float] | None = None
    for _ in range(_SCAN_STEPS):
        lowest, ok_cov = evaluate(scale, min_coverage)
        tried.append((scale, lowest))
        if ok_cov is not None:
            break
        scale /= 2.0
    if ok_cov is None:
        best, best_low = max(tried, key=lambda sl: (sl[1], sl[0]))
        for step in (0.5, 0.25):  # refine the best halving between its neighbours (log scale)
            for candidate in (best * 2.0 ** step, best * 2.0 ** -step):
                if candidate > max_scale:
                    continue
                lowest, cov = evaluate(candidate, min_coverage)
                if cov is not None:
                    logger.info("fit: motion scaled by %.3g (lowest coverage %.0f%%)", candidate, 100 * lowest)
                    return TrajectoryFit(traj.scaled(candidate), float(candidate), cov, True)
                if lowest > best_low:
                    best, best_low = candidate, lowest
        _, cov = evaluate(best)
        assert cov is not None
        worst = min(cov)
        logger.warning(
            "fit: no scale of this trajectory's motion keeps %.0f%% of every frame covered; the best, x%.3g, leaves "
            "%.0f%% at frame %d - the rotations alone turn the view away from the scene: use smaller angles",
            100 * min_coverage, best, 100 * worst, cov.index(worst))
        return TrajectoryFit(traj.scaled(best), float(best), cov, False)
    if len(tried) == 1:  # max_scale itself reaches the target
        return TrajectoryFit(traj.scaled(scale) if scale != 1.0 else traj, scale, ok_cov, True)
    lo, hi = scale, 2.0 * scale
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        _, cov = evaluate(mid, min_coverage)
        if cov is not None:
            lo, ok_cov = mid, cov
        else:
            hi = mid
    scale = lo
    logger.info("fit: motion scaled by %.3g (lowest coverage %.0f%%, target %.0f%%)", scale, 100 * min(ok_cov),
                100 * min_coverage)
    return TrajectoryFit(traj.scaled(scale), float(scale), ok_cov, True)
