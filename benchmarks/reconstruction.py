"""Benchmark of ``worldstereo.reconstruction.reconstruct``: seconds per reconstruction at 480x832.

Scene: the library's procedural room (``worldstereo.scenes.make_room_scene(0)``, exact z-depth), seen
by four 21-frame camera presets of 60 deg field of view — orbit (30 deg around the point 3.5 ahead),
right (1.0), forward (1.5), pan left (30 deg). "21 frames" is the first (one generated clip), "84
frames" all four (a four-trajectory exploration).

For every frame count and method (``point_cloud``, ``mesh``; ``neural_field`` with ``--methods``) it
times, in the same run:

* the PyTorch implementation on the CPU (``--threads`` torch threads; ``--repeats`` runs, min and
  max printed),
* the NumPy implementation it replaced (``benchmarks/_reconstruction_numpy.py``, a verbatim copy of
  the code before issue 13; one run, it is slow; skip with ``--no-baseline``),
* the PyTorch implementation on the GPU when CUDA is available (frames already on the device, as
  after generation; after one warm-up run),

and prints the speed-up ratios, the F1 score of every result against exact surface samples (every
4th pixel of every frame lifted with its exact depth; tau = 0.5 % of the scene diagonal) and the
agreement of the PyTorch and NumPy point clouds (F1 at tau / 4).

Usage::

    python benchmarks/reconstruction.py [--frames 21 84] [--methods point_cloud mesh] [--threads 2]
        [--repeats 3] [--no-baseline] [--no-gpu] [--cache /tmp/room_480x832.npz]

Rendering the 84 views takes a few minutes on a small CPU; ``--cache`` keeps them in an ``.npz``.
Numbers depend on the machine and its load: the ratios of one run are what to compare. On a CPU shared
with other busy processes set ``OMP_WAIT_POLICY=PASSIVE`` (spinning OpenMP threads that lose their
core make every parallel op wait for a time slice; see ``benchmarks/render.py``).

Measured on the shared 2-core CI box (2 torch threads, ``OMP_WAIT_POLICY=PASSIVE``; full table with
ranges in ``docs/performance.md``, section "Reconstruction"): 21 frames, point cloud 4.7-6.6 s against
38.3 s for NumPy (8.1x for the fastest run, 5.8x for the slowest; process CPU time 6.6x), mesh
6.8-7.8 s against 48.8 s (7.2x / 6.2x; CPU time 6.0x); 84 frames (a loaded machine): point cloud
18.8-20.2 s against 209 s (11.1x / 10.4x; CPU time 8.6x), mesh 22.9-31.8 s against 283 s (12.4x /
8.9x; CPU time 7.1x). F1 equal to NumPy's within 0.0002. GPU: not measured yet.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from worldstereo.camera import CameraTrajectory
from worldstereo.geometry.lifting import unproject_depth
from worldstereo.reconstruction import point_cloud_scores, reconstruct
from worldstereo.scenes import make_room_scene

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reconstruction_numpy as numpy_baseline  # noqa: E402

H, W = 480, 832
CLIP = 21


def trajectories() -> list[CameraTrajectory]:
    """The four 21-frame camera presets (60 deg fov at 480x832)."""
    kw = dict(height=H, width=W, fov_deg=60.0)
    return [CameraTrajectory.orbit(30.0, CLIP, depth=3.5, **kw), CameraTrajectory.right(1.0, CLIP, **kw),
            CameraTrajectory.forward(1.5, CLIP, **kw), CameraTrajectory.pan_left(30.0, CLIP, **kw)]


def load_views(cache: str | None, n_traj: int) -> tuple[torch.Tensor, torch.Tensor, CameraTrajectory]:
    """Frames (T,3,H,W), exact depth (T,H,W) and cameras of the first ``n_traj`` trajectories."""
    trajs = trajectories()[:n_traj]
    cams = CameraTrajectory.cat(trajs)
    if cache and Path(cache).exists():
        z = np.load(cache)
        if z["frames"].shape[0] >= len(cams):
            return (torch.from_numpy(z["frames"][:len(cams)]), torch.from_numpy(z["depth"][:len(cams)]), cams)
    scene = make_room_scene(0)
    t0 = time.perf_counter()
    frames, depth = scene.render_many(cams.w2c.double(), cams.K.double(), H, W)
    print(f"rendered {len(cams)} views of the room in {time.perf_counter() - t0:.0f} s", flush=True)
    if cache:
        np.savez(cache, frames=frames.numpy(), depth=depth.numpy())
    return frames, depth, cams


def surface_samples(depth: torch.Tensor, cams: CameraTrajectory, stride: int = 4) -> torch.Tensor:
    """Exact surface points: every ``stride``-th pixel (both directions) lifted with its exact depth."""
    pts = unproject_depth(depth.double(), cams.K.double(), cams.w2c.double()).reshape(len(cams), H, W, 3)
    return pts[:, ::stride, ::stride].reshape(-1, 3).float()


def mesh_samples(mesh: Any, count: int = 400000) -> torch.Tensor:
    """Points sampled uniformly on a mesh's surface (fixed seed)."""
    import trimesh

    return torch.from_numpy(np.asarray(trimesh.sample.sample_surface(mesh, count, seed=0)[0])).float()


def timed(fn: Callable[[], Any], repeats: int, cuda: bool = False) -> tuple[list[float], list[float], Any]:
    """Wall-clock and process CPU seconds of ``repeats`` calls, and the last result."""
    out, times, cpu = None, [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, out


def fmt(times: list[float], cpu: list[float]) -> str:
    s = f"{min(times):7.2f} s" if len(times) == 1 else \
        f"{min(times):7.2f} s (max {max(times):.2f}, median {statistics.median(times):.2f})"
    return s + f", CPU time {min(cpu):.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[21, 84], choices=[21, 42, 63, 84])
    ap.add_argument("--methods", nargs="+", default=["point_cloud", "mesh"],
                    choices=["point_cloud", "mesh", "neural_field"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true", help="skip the NumPy baseline")
    ap.add_argument("--no-gpu", action="store_true", help="skip the CUDA timing")
    ap.add_argument("--cache", default=None, help=".npz file holding the rendered views")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available() and not args.no_gpu
    print(f"{H}x{W}, torch {torch.__version__}, {args.threads} torch threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"GPU: {torch.cuda.get_device_name() if gpu else 'none'}", flush=True)
    frames_all, depth_all, cams_all = load_views(args.cache, max(args.frames) // CLIP)
    rows = []
    for n in args.frames:
        frames, depth, cams = frames_all[:n], depth_all[:n], cams_all[:n]
        gt = surface_samples(depth, cams)
        tau = 0.005 * float(torch.linalg.vector_norm(gt.max(0).values - gt.min(0).values))
        for method in args.methods:
            kw: dict[str, Any] = {"progress": False}
            if method == "neural_field":
                kw["field_iterations"] = 100

            def new() -> Any:
                return reconstruct(frames, cams, method, depth, **kw)  # noqa: B023

            t_new, c_new, rec = timed(new, args.repeats)
            pts = rec.points if method != "mesh" else mesh_samples(rec.mesh)
            f1_new = point_cloud_scores(pts, gt, tau=tau).f1
            line = {"n": n, "method": method, "new": t_new, "new_cpu": c_new, "f1_new": f1_new,
                    "num_points": rec.points.shape[0]}
            print(f"{n:3d} frames {method:12s} torch CPU  {fmt(t_new, c_new)}  F1 {f1_new:.4f}  "
                  f"({rec.points.shape[0]} points)", flush=True)
            if not args.no_baseline and method != "neural_field":
                t_old, c_old, old = timed(lambda: numpy_baseline.reconstruct(frames, cams, method, depth), 1)  # noqa: B023
                old_pts = old["points"] if method != "mesh" else mesh_samples(old["mesh"])
                f1_old = point_cloud_scores(old_pts, gt, tau=tau).f1
                agree = point_cloud_scores(rec.points, old["points"], tau=tau / 4).f1
                line.update(old=t_old, old_cpu=c_old, f1_old=f1_old, agree=agree)
                print(f"{n:3d} frames {method:12s} numpy      {fmt(t_old, c_old)}  F1 {f1_old:.4f}  "
                      f"({old['points'].shape[0]} points; torch vs numpy points F1(tau/4) {agree:.4f}); "
                      f"speed-up {t_old[0] / min(t_new):.1f}x (fastest torch run) / "
                      f"{t_old[0] / max(t_new):.1f}x (slowest); CPU time {c_old[0] / min(c_new):.1f}x", flush=True)
            if gpu:
                fg, dg = frames.cuda(), depth.cuda()

                def on_gpu() -> Any:
                    return reconstruct(fg, cams, method, dg, **kw)  # noqa: B023

                timed(on_gpu, 1, cuda=True)  # warm-up (kernels, allocator)
                t_gpu, c_gpu, rec_g = timed(on_gpu, args.repeats, cuda=True)
                pts_g = rec_g.points if method != "mesh" else mesh_samples(rec_g.mesh)
                f1_gpu = point_cloud_scores(pts_g.cpu(), gt, tau=tau).f1
                line.update(gpu=t_gpu, f1_gpu=f1_gpu)
                print(f"{n:3d} frames {method:12s} torch CUDA {fmt(t_gpu, c_gpu)}  F1 {f1_gpu:.4f}; "
                      f"{min(t_new) / min(t_gpu):.1f}x the torch CPU time", flush=True)
            rows.append(line)
    print("\nsummary (wall seconds, min over repeats; ratios = NumPy / PyTorch, wall and process CPU time):")
    for r in rows:
        parts = [f"{r['n']:3d} frames {r['method']:12s} torch CPU {min(r['new']):7.2f}"]
        if "old" in r:
            parts.append(f"numpy {r['old'][0]:7.2f}  ratio {r['old'][0] / min(r['new']):5.1f}x "
                         f"(slowest run {r['old'][0] / max(r['new']):4.1f}x, CPU time "
                         f"{r['old_cpu'][0] / min(r['new_cpu']):4.1f}x)")
        if "gpu" in r:
            parts.append(f"CUDA {min(r['gpu']):6.2f}" + (f"  ratio {r['old'][0] / min(r['gpu']):6.1f}x"
                                                        if "old" in r else ""))
        print("  ".join(parts))
    if any(math.isnan(r["f1_new"]) for r in rows):
        raise SystemExit("NaN F1")


if __name__ == "__main__":
    main()
