"""What the app's 3D viewport draws, as a JSON-able dict, and the view pose it sends back.

The browser side is ``static/viewport.js`` (a software z-buffer on a 2D canvas: no WebGL, nothing
fetched). :func:`viewport_payload` builds its value:

* ``points``: ``{"xyz": base64 little-endian float32 (N*3), "rgb": base64 uint8 (N*3), "count": N}``,
  a random subset of at most :data:`VIEWPORT_MAX_POINTS` points of the cloud;
* ``point_size``: the world size of one point (scene units), for splatting;
* ``cameras``: groups ``{"label", "color", "frusta": [[apex, 4 image corners] ...], "path": [centres]}``;
* ``view``: ``{"fov_deg", "aspect", "scene", "home": {"target", "distance"}, "step"}`` — the view
  camera's field of view and aspect (those of the trajectory, so that what the view shows is what
  a keyframe placed there sees) and the orbit it starts from (the condition view).

Conventions: world = the scene's frame (the condition camera is the identity; OpenCV axes), cameras
``CameraTrajectory`` (w2c, K in pixels).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worldstereo.camera import CameraTrajectory
from worldstereo.geometry.lifting import unproject_points

__all__ = ["VIEWPORT_MAX_POINTS", "CameraGroup", "frusta", "parse_view_pose", "viewport_payload"]

#: points sent to the browser (a random subset of larger clouds)
VIEWPORT_MAX_POINTS = 40_000
#: frusta drawn per trajectory at most (evenly spaced, first and last included)
MAX_FRUSTA = 24


@dataclass
class CameraGroup:
    """Cameras drawn in one colour: ``trajectory`` (frusta), with an optional ``label``."""

    trajectory: CameraTrajectory
    color: str
    label: str = ""
    width: float = 1.5
    max_frusta: int = MAX_FRUSTA
    show_path: bool = True


def frusta(trajectory: CameraTrajectory, depth: float, max_frusta: int = MAX_FRUSTA) -> list[list[list[float]]]:
    """Frustum outlines of (at most ``max_frusta`` evenly spaced) cameras: per camera the centre and
    the four image corners lifted to z-depth ``depth`` (world coordinates), as nested lists."""
    if not trajectory.has_intrinsics:
        raise ValueError("trajectory: needs intrinsics to draw frusta")
    n = len(trajectory)
    index = np.unique(np.round(np.linspace(0, n - 1, min(n, max_frusta))).astype(int))
    cams = trajectory[index.tolist()].to(dtype=torch.float64)
    w, h = float(cams.width), float(cams.height)
    u = torch.tensor([0.0, w, w, 0.0], dtype=torch.float64)
    v = torch.tensor([0.0, 0.0, h, h], dtype=torch.float64)
    corners = unproject_points(u, v, torch.full((len(cams), 4), float(depth), dtype=torch.float64), cams.K, cams.w2c)
    return torch.cat([cams.centers[:, None], corners], dim=1).numpy().round(5).tolist()


def _subsample(xyz: np.ndarray, rgb: np.ndarray, max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(xyz) <= max_points:
        return xyz, rgb
    keep = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
    return xyz[keep], rgb[keep]


def viewport_payload(points: Any, groups: list[CameraGroup], *, fov_deg: float, aspect: float,
                     median_depth: float, scene: str, max_points: int = VIEWPORT_MAX_POINTS,
                     seed: int = 0) -> dict[str, Any]:
    """The value of the viewport component.

    Args:
        points: a :class:`~worldstereo.geometry.PointCloud` (or None: no points).
        groups: camera groups to draw.
        fov_deg, aspect: horizontal field of view and width / height of the view camera.
        median_depth: the scene's median depth: the view orbits a point that far ahead of the
            condition camera, frusta are drawn a tenth of it deep, keys fly a twentieth of it.
        scene: an id of the scene; the browser returns to the condition view when it changes.
        max_points: most points sent.
    """
    if not (math.isfinite(median_depth) and median_depth > 0):
        raise ValueError(f"median_depth: expected a finite number > 0, got {median_depth!r}")
    payload: dict[str, Any] = {"points": {"xyz": "", "rgb": "", "count": 0}, "point_size": 0.0, "cameras": []}
    if points is not None and len(points) > 0:
        xyz = points.xyz.detach().cpu().numpy().astype("<f4")
        rgb = (points.rgb.detach().cpu().float().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8) \
            if points.rgb is not None else np.full_like(xyz, 160, dtype=np.uint8)
        total = len(xyz)
        xyz, rgb = _subsample(xyz, rgb, max_points, seed)
        payload["points"] = {"xyz": base64.b64encode(np.ascontiguousarray(xyz).tobytes()).decode("ascii"),
                             "rgb": base64.b64encode(np.ascontiguousarray(rgb).tobytes()).decode("ascii"),
                             "count": int(len(xyz))}
        # spacing of a cloud lifted from an image: about depth / focal, times sqrt of the subsampling
        spacing = median_depth * 2.0 * math.tan(math.radians(fov_deg) / 2) / math.sqrt(max(total, 1) / aspect)
        payload["point_size"] = float(1.5 * spacing * math.sqrt(total / len(xyz)))
    for g in groups:
        entry: dict[str, Any] = {"label": g.label, "color": g.color, "width": g.width,
                                 "frusta": frusta(g.trajectory, 0.1 * median_depth, g.max_frusta)}
        if g.show_path and len(g.trajectory) > 1:
            entry["path"] = g.trajectory.centers.double().cpu().numpy().round(5).tolist()
        payload["cameras"].append(entry)
    payload["view"] = {"fov_deg": float(fov_deg), "aspect": float(aspect), "scene": scene,
                       "home": {"target": [0.0, 0.0, float(median_depth)], "distance": float(median_depth)},
                       "step": 0.05 * float(median_depth)}
    return payload


def parse_view_pose(text: Any) -> torch.Tensor:
    """The (4, 4) float64 world-to-camera matrix the viewport sends (``{"w2c": [16 numbers]}``, row-major).

    Raises:
        ValueError: not that JSON, non-finite numbers, or not a rigid transform.
    """
    try:
        doc = json.loads(text) if isinstance(text, str) else text
        values = doc["w2c"]
        m = torch.tensor([float(x) for x in values], dtype=torch.float64)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"view pose: expected {{'w2c': [16 numbers]}} from the viewport, got {str(text)[:80]!r}") \
            from exc
    if m.numel() != 16 or not bool(torch.isfinite(m).all()):
        raise ValueError("view pose: expected 16 finite numbers")
    w2c = m.reshape(4, 4)
    CameraTrajectory(w2c)  # validates: proper rotation, bottom row (raises ValueError)
    return w2c
