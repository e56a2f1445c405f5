"""``worldstereo multi-view``: several videos from one image, one per trajectory, sharing the memories.

The trajectories run in the order given against one :class:`~worldstereo.pipeline.SceneMemory`
(as :func:`~worldstereo.pipeline.generate_multi_view` with ``shared_memory=True``): each later video
sees the point cloud and the frame bank updated by the earlier ones. Writes into ``--out``:

* ``video_00.mp4``, ``video_01.mp4``, ... — the generated videos;
* ``render_00.mp4`` / ``render_mask_00.mp4``, ... — the ControlNet inputs of each video (holes grey
  / mask white = hole);
* ``depths_00.npz``, ... — the z-depth of each render (``depth`` (T, H, W), ``hole_mask``);
* ``camera_00.json``, ... — each trajectory in the reference format at the generated size;
* ``image.png`` — the condition image at the generated size;
* ``memory_bank/`` — the final spatial memory (WorldMirror layout), memory variants only;
* ``points.ply`` — the final geometric memory;
* ``summary.json`` — model and inputs, plus ``videos``: one entry per video
  (:meth:`~worldstereo.pipeline.GenerationRecord.summary` with the per-frame render ``coverage``,
  trajectory, fit scale, frame count, files).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from worldstereo.commands import final_path
from worldstereo.commands.generate import (
    add_generation_options,
    common_summary,
    prepare_generation,
    run_one,
    write_memory_outputs,
    write_summary,
    write_video_outputs,
)

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``multi-view`` sub-command."""
    p = subparsers.add_parser(
        "multi-view",
        help="generate one video per trajectory from IMAGE with shared scene memory",
        description=(
            "Generate one video per --trajectory from IMAGE, in order, with one shared scene memory (each video "
            "sees the point cloud and frame bank of the earlier ones). Writes video_NN.mp4, render_NN.mp4, "
            "render_mask_NN.mp4, depths_NN.npz, camera_NN.json, image.png, the final memory_bank/ (memory variants), "
            "points.ply and summary.json into --out."
        ),
    )
    p.add_argument("--trajectory", action="append", required=True, metavar="PRESET|FILE",
                   help="repeatable, one per video: preset name or trajectory file (see `worldstereo generate`)")
    add_generation_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo multi-view``; returns the exit status."""
    from worldstereo.io.image import resize_image, save_image
    from worldstereo.parallel import is_writer
    from worldstereo.pipeline import SceneMemory

    t0 = time.perf_counter()
    specs = list(args.trajectory)
    setup = prepare_generation(args, specs)
    writer = is_writer(setup.model)  # under --parallel every rank generates; rank 0 writes
    out = Path(args.out)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    memory = SceneMemory()
    videos = []
    write_time = 0.0
    n = len(setup.trajectories)
    for i, (spec, trajectory) in enumerate(zip(specs, setup.trajectories)):
        logger.info("video %d/%d: %s, %d frames at %dx%d", i + 1, n, spec, len(trajectory), setup.height,
                    setup.width)
        frames = run_one(setup, args, trajectory, memory, f"video {i + 1}/{n}")
        record = memory.history[-1]
        if not writer:
            continue
        t1 = time.perf_counter()
        files = write_video_outputs(out, f"_{i:02d}", frames, record, trajectory, fps=args.fps,
                                    extra_json={"trajectory": spec, "video_index": i})
        write_time += time.perf_counter() - t1
        entry = {"index": i, "trajectory": spec, "fit_scale": setup.fit_scales[i], "num_frames": len(trajectory),
                 **record.summary(), "files": files}
        videos.append(entry)
    if not writer:
        return 0
    t2 = time.perf_counter()
    save_image(out / "image.png", resize_image(setup.image, setup.height, setup.width).clamp(0, 1))
    mem_info = write_memory_outputs(out, memory)
    write_time += time.perf_counter() - t2
    summary = common_summary(args, setup)
    summary.update({
        "seed": int(args.seed),
        "steps": setup.steps,
        "guidance_scale": setup.guidance,
        "shared_memory": True,
        "num_videos": n,
        "transformer_calls": sum(v["transformer_calls"] for v in videos),
        "num_points": mem_info["num_points"],
        "memory_bank_size": mem_info["memory_bank_size"],
        "files": {"image": "image.png", **{k: v for k, v in mem_info.items() if k in ("points", "memory_bank")}},
        "videos": videos,
        "timings": {**setup.timings, "write": write_time, "total": time.perf_counter() - t0},
    })
    write_summary(out, summary)
    logger.info("wrote %s (%d videos, %d transformer calls, %.1f s)", final_path(args, out), n, summary["transformer_calls"],
                summary["timings"]["total"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("use the `worldstereo multi-view` command")
