"""Benchmark of ``worldstereo app``'s first minute: from a photo to a previewed camera path, on the CPU.

What a new user does, through the app's session actions (the browser adds well under a second:
see ``tests/app/test_browser.py``, which prints its own timing):

1. upload a 768x1024 photo without a depth map: the depth model runs on it (Depth Anything V2
   Small's architecture — DINOv2-S backbone, 518 px input — with random weights built offline: the
   same computation as the real model, whose download this machine cannot make), and the point
   cloud is lifted at the generation size (480x768 for a 3:4 photo, the reference's scale map);
2. choose a preset (orbit) and build the 3D view's payload;
3. preview: the 21-frame render + hole mask at 480x768 and the two videos.

The first load of the depth model is timed separately (from the local cache: about the cost of
reading its 100 MB of weights). The script prints seconds per step and their sum against the
60-second budget of the issue ("from a photo to a previewed camera path in under a minute").

Usage::

    python benchmarks/app.py [--threads N] [--frames 21]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _depth_anything_small(folder: Path) -> Path:
    """Depth Anything V2 Small's architecture with random weights, saved like a Hub snapshot."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt import DPTImageProcessorPil

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                            patch_size=14, image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384],
                              fusion_hidden_size=64, head_hidden_size=32, depth_estimation_type="relative")
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():  # the same computation; a flat positive output, so that every pixel becomes a point
        model.head.conv3.weight.zero_()
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    DPTImageProcessorPil(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                         do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406],
                         image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--frames", type=int, default=21)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from worldstereo.app import AppModels, AppSession, ModelSpec
    from worldstereo.camera import intrinsics_from_fov
    from worldstereo.io.image import save_image
    from worldstereo.scenes import make_room_scene

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        depth_model = _depth_anything_small(root / "depth-anything-small")
        image, _ = make_room_scene(seed=0).render(torch.eye(4), intrinsics_from_fov(768, 1024, 70.0), 768, 1024)
        save_image(root / "photo.jpg", image)
        models = AppModels(ModelSpec(depth_model=str(depth_model), device="cpu"))
        session = AppSession(models, default_frames=args.frames, workdir=root / "session")
        times = {}
        t = time.perf_counter()
        models.depth_estimator()
        times["depth model load (first use only)"] = time.perf_counter() - t
        t = time.perf_counter()
        session.load_scene(root / "photo.jpg")
        times["photo -> depth -> point cloud"] = time.perf_counter() - t
        t = time.perf_counter()
        session.set_path(preset="orbit", params={"azimuth_deg": 20.0})
        from worldstereo.app.ui import _scene_viewport

        _scene_viewport(session)
        times["preset + 3D view payload"] = time.perf_counter() - t
        t = time.perf_counter()
        preview = session.render_preview()
        times[f"preview ({len(preview.coverage)} frames at {session.width}x{session.height})"] = time.perf_counter() - t
        total = sum(times.values())
        print(f"torch threads: {torch.get_num_threads()}; {len(session.memory_geometry().points):,} points")
        for name, seconds in times.items():
            print(f"{name:48s} {seconds:7.1f} s")
        print(f"{'total':48s} {total:7.1f} s  = {total / 60:.2f} x the 60 s budget")


if __name__ == "__main__":
    main()
