"""A small analytic textured scene with an exact ray caster (test-only ground truth).

Room: inside of the box [-3,3] x [-2,1.5] x [-3,3] (y down, so the floor is y = 1.5), a sphere of
radius 0.6 at the origin and an axis-aligned box. Colours are smooth procedural functions of the 3D
position, so renders at any resolution are exact point samples of the same texture.
Cameras: OpenCV w2c looking at the origin from a ring around it. Pixel (row r, column c) is sampled
at its centre ``(c + 0.5, r + 0.5)`` (the library convention), so ``cx = W/2`` is the image centre.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

SPHERE_C = np.array([0.0, 0.0, 0.0])
SPHERE_R = 0.6
BOX_MIN = np.array([0.7, 0.2, -1.2])
BOX_MAX = np.array([1.4, 1.5, -0.5])
ROOM_MIN = np.array([-3.0, -2.0, -3.0])
ROOM_MAX = np.array([3.0, 1.5, 3.0])


def look_at_w2c(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """OpenCV w2c of a camera at ``eye`` looking at ``target`` (image y points along -up; default up = -y)."""
    up = np.array([0.0, -1.0, 0.0]) if up is None else up
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)  # right = forward x up (with up = -y this gives +x right for forward +z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def ring_cameras(n: int, *, radius: float = 2.2, height: float = -0.3, arc_deg: float = 120.0,
                 start_deg: float = -150.0, size: int = 64, fov_deg: float = 60.0) -> SimpleNamespace:
    """``n`` cameras on an arc around the origin, looking at it; returns an object with w2c/K/height/width."""
    angles = np.deg2rad(start_deg + np.linspace(0, arc_deg, n))
    w2c = np.stack([look_at_w2c(np.array([radius * np.cos(a), height, radius * np.sin(a)]),
                                np.array([0.0, 0.2, 0.0])) for a in angles])
    f = 0.5 * size / np.tan(np.deg2rad(fov_deg) / 2)
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return make_trajectory(w2c, np.broadcast_to(K, (n, 3, 3)).copy(), size, size)


def make_trajectory(w2c: np.ndarray, K: np.ndarray, height: int, width: int):
    """A ``CameraTrajectory`` when the camera module exists, otherwise a duck-typed stand-in."""
    try:
        from worldstereo.camera import CameraTrajectory
    except ImportError:
        return SimpleNamespace(w2c=torch.as_tensor(w2c, dtype=torch.float64),
                               K=torch.as_tensor(K, dtype=torch.float64), height=height, width=width)
    return CameraTrajectory(torch.as_tensor(w2c, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32),
                            height=height, width=width)


def _texture(p: np.ndarray, obj: np.ndarray) -> np.ndarray:
    base = np.array([[0.75, 0.55, 0.35], [0.35, 0.55, 0.75], [0.5, 0.7, 0.4]])[obj]
    s = (np.sin(2.2 * p[:, 0] + 1.3 * p[:, 1]) * np.cos(1.7 * p[:, 2] - 0.9 * p[:, 1]))
    t = np.sin(3.1 * p[:, 1] + 0.7 * p[:, 0] + 1.9 * p[:, 2])
    col = base + 0.18 * s[:, None] * np.array([1.0, -0.6, 0.4]) + 0.12 * t[:, None] * np.array([-0.3, 0.8, 0.5])
    return np.clip(col, 0.0, 1.0)


def _box_hit(o: np.ndarray, d: np.ndarray, bmin: np.ndarray, bmax: np.ndarray, inside: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (bmin - o) / d
        t2 = (bmax - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    if inside:
        return np.where(tmax > 0, tmax, np.inf)
    return np.where((tmax >= tmin) & (tmin > 1e-9), tmin, np.inf)


def cast(w2c: np.ndarray, K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one view; returns (image (3,H,W) in [0,1], z-depth (H,W))."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5  # pixel centres
    dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    c2w = np.linalg.inv(w2c)
    d = dirs_cam @ c2w[:3, :3].T
    o = np.broadcast_to(c2w[:3, 3], d.shape)
    # sphere
    oc = o - SPHERE_C
    b = np.einsum("ij,ij->i", oc, d)
    a = np.einsum("ij,ij->i", d, d)
    c = np.einsum("ij,ij->i", oc, oc) - SPHERE_R**2
    disc = b * b - a * c
    ts = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    ts = np.where(ts > 1e-9, ts, np.inf)
    tb = _box_hit(o, d, BOX_MIN, BOX_MAX, inside=False)
    tr = _box_hit(o, d, ROOM_MIN, ROOM_MAX, inside=True)
    T = np.stack([tr, ts, tb], 1)
    obj = np.argmin(T, axis=1)
    t = T[np.arange(T.shape[0]), obj]
    p = o + t[:, None] * d
    img = _texture(p, np.array([0, 1, 2])[obj])
    # t is along d whose camera z-component is 1 -> t is the z-depth
    return img.T.reshape(3, height, width), t.reshape(height, width)


def render_views(cams) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast all views of a trajectory-like object; returns (frames (T,3,H,W), depth (T,H,W))."""
    w2c = np.asarray(cams.w2c, dtype=np.float64)
    K = np.asarray(cams.K, dtype=np.float64)
    out = [cast(w2c[i], K[i], cams.height, cams.width) for i in range(w2c.shape[0])]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def ground_truth_points(cams, factor: int = 2) -> np.ndarray:
    """Exact surface points seen by the cameras, ray-cast at ``factor`` x the resolution."""
    w2c = np.asarray(cams.w2c, dtype=np.float64)
    K = np.asarray(cams.K, dtype=np.float64).copy()
    K[:, :2] *= factor  # pixel-centre convention: scaling the whole K keeps the same field of view
    pts = []
    for i in range(w2c.shape[0]):
        _, depth = cast(w2c[i], K[i], cams.height * factor, cams.width * factor)
        v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64) + 0.5
        cam = np.stack([(u - K[i, 0, 2]) / K[i, 0, 0] * depth, (v - K[i, 1, 2]) / K[i, 1, 1] * depth, depth], -1)
        c2w = np.linalg.inv(w2c[i])
        pts.append(cam.reshape(-1, 3) @ c2w[:3, :3].T + c2w[:3, 3])
    return np.concatenate(pts)
