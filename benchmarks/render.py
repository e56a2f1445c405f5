"""Benchmark of the point renderer: ms/frame for 400k random points at 480x832.

Compares, in the same run:

* ``worldstereo.geometry.render`` (pinhole and equirectangular; footprint splatting + blending at the
  pipeline's settings, and as a plain z-buffer with ``point_radius=0``, the like-for-like
  comparison with Open3D's 1-pixel projection),
* a straightforward numpy z-buffer baseline with the same footprint (``np.minimum.at`` over every
  (point, covered pixel) pair, then the nearest point's colour; no blending; timed on the first
  two frames only, it is slow),
* Open3D's ``t.geometry.PointCloud.project_to_rgbd_image`` (1-pixel points, no footprint) when
  ``open3d`` is importable.

Usage::

    python benchmarks/render.py [--points 400000] [--frames 8] [--threads N] [--repeats 3]

Numbers depend on the machine and on its load; the script prints wall-clock and process CPU
time per frame (the CPU time is less sensitive to other processes on a shared machine). On a CPU
shared with other busy processes, run with ``OMP_WAIT_POLICY=PASSIVE`` (the renderer issues a few
hundred short parallel element-wise ops per frame; spinning OpenMP threads that lose their core
make each of them wait for a scheduler time slice, which can slow it down 5-10x). On an idle
machine leave it unset: there PASSIVE makes every parallel region wake a sleeping thread and the
footprint renderer about 3x slower (measured 110-140 ms/frame instead of 40).
Open3D may live outside the virtual environment: ``PYTHONPATH=/path/to/open3d python
benchmarks/render.py``.
"""

from __future__ import annotations

import os


import argparse
import math
import time
from typing import Callable

import numpy as np
import torch

from worldstereo.geometry.pointcloud import PointCloud
from worldstereo.geometry.render import footprint_radius_px, render_point_cloud, render_point_cloud_equirect

H, W = 480, 832


def make_scene(n: int, seed: int = 0) -> tuple[PointCloud, torch.Tensor, torch.Tensor]:
    """n random points filling the frustum of a 480x832 camera (depth 2-6), and F gently moving poses."""
    g = torch.Generator().manual_seed(seed)
    f = 500.0
    z = torch.rand(n, generator=g) * 4 + 2
    x = (torch.rand(n, generator=g) - 0.5) * z * (W / f)
    y = (torch.rand(n, generator=g) - 0.5) * z * (H / f)
    cloud = PointCloud(torch.stack([x, y, z], 1), torch.rand(n, 3, generator=g))
    K = torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]])
    return cloud, K, torch.eye(4)


def poses(frames: int) -> torch.Tensor:
    out = torch.eye(4).repeat(frames, 1, 1)
    for i in range(frames):
        a = math.radians(2.0 * i)
        out[i, 0, 0], out[i, 0, 2], out[i, 2, 0], out[i, 2, 2] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
        out[i, 0, 3] = 0.05 * i
    return out


def numpy_zbuffer(xyz: np.ndarray, rgb: np.ndarray, w2c: np.ndarray, K: np.ndarray, r_px: float) -> np.ndarray:
    """Baseline: per-(point, covered pixel) z-buffer with ``np.minimum.at``; nearest point's colour."""
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    keep = z > 1e-4
    cam, z, rgb = cam[keep], z[keep], rgb[keep]
    u = K[0, 0] * cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / z + K[1, 2]
    s = int(math.ceil(r_px + 0.5))
    zbuf = np.full(H * W, np.inf, dtype=np.float32)
    splats = []
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            px = np.floor(u).astype(np.int64) + dx
            py = np.floor(v).astype(np.int64) + dy
            d2 = (px + 0.5 - u) ** 2 + (py + 0.5 - v) ** 2
            m = (d2 < r_px * r_px) & (px >= 0) & (px < W) & (py >= 0) & (py < H)
            idx = py[m] * W + px[m]
            np.minimum.at(zbuf, idx, z[m].astype(np.float32))
            splats.append((idx, np.nonzero(m)[0]))
    image = np.zeros((H * W, 3), dtype=np.float32)
    for idx, pts in splats:
        win = zbuf[idx] == z[pts].astype(np.float32)
        image[idx[win]] = rgb[pts[win]]
    return image.reshape(H, W, 3)


def timeit(fn: Callable[[], object], frames: int, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    best_wall = best_cpu = math.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, (time.perf_counter() - t0) / frames)
        best_cpu = min(best_cpu, (time.process_time() - c0) / frames)
    return best_wall * 1e3, best_cpu * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=400_000)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--point-radius", type=float, default=0.008)
    ap.add_argument("--points-per-pixel", type=int, default=8)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cloud, K, _ = make_scene(args.points)
    w2c = poses(args.frames)
    r_px = footprint_radius_px(args.point_radius, H, W)
    print(f"{args.points} points, {H}x{W}, {args.frames} frames, point_radius {args.point_radius} "
          f"(= {r_px:.2f} px), torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    results: dict[str, tuple[float, float]] = {}
    results["worldstereo pinhole"] = timeit(
        lambda: render_point_cloud(cloud, w2c, K, H, W, point_radius=args.point_radius,
                                   points_per_pixel=args.points_per_pixel), args.frames, args.repeats)
    results["worldstereo equirect"] = timeit(
        lambda: render_point_cloud_equirect(cloud, w2c, H, W, point_radius=args.point_radius,
                                            points_per_pixel=args.points_per_pixel), args.frames,
        args.repeats)
    # like-for-like with Open3D's 1-pixel projection: no footprint, nearest point per pixel
    results["worldstereo pinhole, z-buffer (point_radius 0)"] = timeit(
        lambda: render_point_cloud(cloud, w2c, K, H, W, point_radius=0.0), args.frames, args.repeats)
    results["worldstereo equirect, z-buffer (point_radius 0)"] = timeit(
        lambda: render_point_cloud_equirect(cloud, w2c, H, W, point_radius=0.0), args.frames, args.repeats)
    xyz, rgb = cloud.xyz.numpy().astype(np.float64), cloud.rgb.numpy()
    if not args.skip_baseline:
        results["numpy z-buffer baseline (pinhole)"] = timeit(
            lambda: [numpy_zbuffer(xyz, rgb, w.numpy().astype(np.float64), K.numpy().astype(np.float64), r_px)
                     for w in w2c[:2]], 2, 1)
    try:
        import open3d as o3d  # optional

        pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(cloud.xyz.numpy()))
        pcd.point.colors = o3d.core.Tensor(cloud.rgb.numpy())
        intr = o3d.core.Tensor(K.numpy().astype(np.float64))
        extr = [o3d.core.Tensor(w.numpy().astype(np.float64)) for w in w2c]

        def run_o3d() -> None:
            for e in extr:
                pcd.project_to_rgbd_image(W, H, intr, e, depth_scale=1.0, depth_max=100.0)

        results["open3d project_to_rgbd_image (pinhole, 1 px)"] = timeit(run_o3d, args.frames, args.repeats)
    except ImportError:
        print("open3d not importable: skipped")
    ours = results["worldstereo pinhole"][0]
    print(f"{'renderer':48s} {'wall ms/frame':>14s} {'cpu ms/frame':>13s} {'wall / ours pinhole':>20s}")
    for name, (wall, cpu) in results.items():
        print(f"{name:48s} {wall:14.1f} {cpu:13.1f} {wall / ours:20.2f}")
    o3d_key = "open3d project_to_rgbd_image (pinhole, 1 px)"
    if o3d_key in results:
        o3d_ms = results[o3d_key][0]
        for name in ("worldstereo pinhole", "worldstereo equirect", "worldstereo pinhole, z-buffer (point_radius 0)",
                     "worldstereo equirect, z-buffer (point_radius 0)"):
            print(f"speed-up of {name} over Open3D: {o3d_ms / results[name][0]:.2f}x (> 1 = faster)")


if __name__ == "__main__":
    main()
