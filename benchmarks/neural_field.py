"""Benchmark of the neural-field reconstruction: training time and held-out-view PSNR at 128x128.

Scene: the library's procedural room (``worldstereo.scenes.make_room_scene``, exact depth), 13
cameras on an arc looking into the room; view 6 is held out, the other 12 train the Gaussian field
(``worldstereo.reconstruction.reconstruct(..., method="neural_field")``). Prints the training time
in seconds and the held-out PSNR (issue target: >= 25 dB within 5 minutes on the 2-core CPU), and,
as a baseline in the same run, the PSNR of the fused point cloud rendered with the point renderer
(the field's initialisation).

Usage::

    python benchmarks/neural_field.py [--size 128] [--iterations 100] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from worldstereo.camera import CameraTrajectory, look_at_w2c
from worldstereo.geometry import PointCloud, render_point_cloud
from worldstereo.reconstruction import masked_psnr, reconstruct
from worldstereo.scenes import make_room_scene


def arc_cameras(n: int, size: int, centre: torch.Tensor, radius: float = 1.2, arc_deg: float = 50.0) -> CameraTrajectory:
    """``n`` cameras on a horizontal arc of ``radius`` around ``centre``, looking at it."""
    angles = torch.linspace(-arc_deg / 2, arc_deg / 2, n) * math.pi / 180.0
    eyes = torch.stack([centre[0] + radius * torch.sin(angles), centre[1].expand(n),
                        centre[2] - radius * torch.cos(angles)], dim=1)
    w2c = look_at_w2c(eyes, centre.expand(n, 3))
    f = 0.5 * size / math.tan(math.radians(70.0) / 2)
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]).expand(n, 3, 3)
    return CameraTrajectory(w2c.float(), K.float(), height=size, width=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scene = make_room_scene(seed=0)
    _, depth0 = scene.render(torch.eye(4), CameraTrajectory.forward(num_frames=2, height=args.size,
                                                                   width=args.size, fov_deg=70.0).K[0],
                             args.size, args.size)
    centre = torch.tensor([0.0, 0.0, float(depth0.median())])
    cams = arc_cameras(13, args.size, centre, radius=0.5 * float(depth0.median()))
    views = [scene.render(cams.w2c[i], cams.K[i], args.size, args.size) for i in range(len(cams))]
    frames = torch.stack([v[0] for v in views]).float()
    depths = torch.stack([v[1] for v in views]).float()
    held = 6
    train = [i for i in range(len(cams)) if i != held]
    t0 = time.perf_counter()
    rec = reconstruct(frames[train], cams[train], "neural_field", depths[train], field_iterations=args.iterations,
                      progress=False)
    seconds = time.perf_counter() - t0
    field_psnr = masked_psnr(rec.field.render(cams[[held]], 0).numpy(), frames[held].numpy())
    cloud = PointCloud(torch.as_tensor(np.asarray(rec.points)).float(), torch.as_tensor(np.asarray(rec.colors)).float())
    points_img = render_point_cloud(cloud, cams.w2c[held], cams.K[held], args.size, args.size).image[0]
    points_psnr = masked_psnr(points_img.numpy(), frames[held].numpy())
    print(f"{args.size}x{args.size}, {len(train)} training views, {args.iterations} iterations, "
          f"torch threads {torch.get_num_threads()}")
    print(f"neural field: trained in {seconds:.1f} s, held-out PSNR {field_psnr:.2f} dB")
    print(f"baseline (fused point cloud, point renderer): held-out PSNR {points_psnr:.2f} dB "
          f"(field - baseline: {field_psnr - points_psnr:+.2f} dB)")


if __name__ == "__main__":
    main()
