"""``worldstereo demo``: the ``render`` pipeline on a procedural room with exact depth (no download).

Writes the same files as ``worldstereo render`` plus ``contact_sheet.png`` (rows: exact ground-truth
view of the scene, point-cloud render, hole mask; columns: evenly spaced frames) and
``metrics.json`` (per-frame coverage and the PSNR of the point-cloud render against the exact view on
covered pixels — a check of the whole lifting/rendering chain).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worldstereo.commands import UsageError, add_fit_option, bounded_float, bounded_int, final_path, parse_key_values
from worldstereo.commands.render import (
    MAX_FOV,
    MAX_SIDE,
    add_render_options,
    fit_to_cloud,
    lift_condition_view,
    preset_trajectory,
    write_render_inputs,
    write_render_summary,
)

__all__ = ["register", "run", "make_contact_sheet"]

if TYPE_CHECKING:  # torch is imported lazily so that `--help` stays fast
    from torch import Tensor

logger = logging.getLogger(__name__)

SHEET_ROWS = ("exact view", "point-cloud render", "hole mask (white = hole)")


def make_contact_sheet(rows: list[Tensor], labels: list[str] | None = None, *, gap: int = 4,
                       label_height: int = 14) -> Tensor:
    """Tile images into a grid.

    Args:
        rows: R tensors ``(C, 3 or 1, h, w)`` in [0, 1] (1 channel is shown grey), same C, h, w.
        labels: optional R row captions drawn above each row.
        gap: white gap between tiles in pixels.
        label_height: pixels reserved for each caption.

    Returns:
        ``(3, H, W)`` float image in [0, 1].
    """
    import torch

    if not rows:
        raise ValueError("rows: expected at least one row of images")
    c, _, h, w = rows[0].shape
    for r in rows:
        if r.shape[0] != c or tuple(r.shape[-2:]) != (h, w):
            raise ValueError(f"rows: every row must be (C,3|1,{h},{w}) with C={c}, got {tuple(r.shape)}")
    lab = label_height if labels else 0
    H = len(rows) * (h + lab + gap) + gap
    W = c * (w + gap) + gap
    sheet = torch.ones(3, H, W)
    y = gap
    for r in rows:
        y += lab
        for j in range(c):
            x = gap + j * (w + gap)
            tile = r[j].float().clamp(0, 1)
            sheet[:, y:y + h, x:x + w] = tile.expand(3, h, w)
        y += h + gap
    if labels:
        from PIL import ImageDraw

        from worldstereo.io.image import load_image, to_pil

        pil = to_pil(sheet)
        draw = ImageDraw.Draw(pil)
        y = gap
        for text in labels:
            draw.text((gap + 2, y), text, fill=(0, 0, 0))
            y += lab + h + gap
        sheet = load_image(pil, name="sheet")
    return sheet


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="download-free demo: render a procedural room with exact depth along a trajectory",
        description=(
            "Ray-cast a procedurally textured room (exact depth, nothing downloaded), lift the first view to a "
            "point cloud and render it along a trajectory. Writes the files of `worldstereo render` plus "
            "contact_sheet.png and metrics.json into --out."
        ),
    )
    p.add_argument("--trajectory", default="orbit",
                   help="preset name (default orbit; focus distances follow the scene's median depth)")
    p.add_argument("--height", type=bounded_int(16, MAX_SIDE), default=256,
                   help="frame height, multiple of 16 (default 256)")
    p.add_argument("--width", type=bounded_int(16, MAX_SIDE), default=384,
                   help="frame width, multiple of 16 (default 384)")
    p.add_argument("--fov", type=bounded_float(0.0, MAX_FOV), default=70.0,
                   help="horizontal field of view in degrees (default 70)")
    p.add_argument("--seed", type=bounded_int(0, 2**31 - 1), default=0, help="scene seed (default 0)")
    p.add_argument("--supersample", type=bounded_int(1, 8), default=2,
                   help="antialiasing samples per pixel and axis for the exact views (default 2, at most 8)")
    p.add_argument("--sheet-columns", type=bounded_int(1, 64), default=6,
                   help="frames shown in contact_sheet.png (at most 64)")
    add_render_options(p)
    add_fit_option(p)
    p.set_defaults(func=run)
    return p


def _psnr(a: Tensor, b: Tensor, mask: Tensor) -> float:
    """PSNR (dB) between (3,H,W) images on ``mask`` (H,W) pixels; inf when identical, nan when empty."""
    m = mask.bool()
    if not bool(m.any()):
        return float("nan")
    mse = float(((a - b) ** 2).mean(0)[m].mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo demo``; returns the exit status."""
    import torch

    from worldstereo.io.atomic import atomic_open
    from worldstereo.io.image import save_image
    from worldstereo.scenes import make_room_scene

    t0 = time.perf_counter()
    if args.height % 16 or args.width % 16:
        raise UsageError(f"--height/--width: must be multiples of 16, got {args.height}x{args.width}")
    num_frames = args.frames or 16
    from worldstereo.pipeline_validation import check_video_size

    try:
        check_video_size(num_frames, args.height, args.width)
    except ValueError as exc:
        raise UsageError(f"--frames/--height/--width: {str(exc).split(': ', 1)[1]}") from None
    preset_args = parse_key_values(args.preset_arg, "--preset-arg")
    scene = make_room_scene(seed=args.seed)
    # condition view at the identity pose
    probe = preset_trajectory(args.trajectory, num_frames, args.height, args.width, args.fov, 1.0, preset_args)
    K0 = probe.K[0]
    image, depth = scene.render(torch.eye(4), K0, args.height, args.width, supersample=args.supersample)
    median = float(depth.median())
    traj = preset_trajectory(args.trajectory, num_frames, args.height, args.width, args.fov, median, preset_args)
    if not torch.allclose(traj.w2c[0].double(), torch.eye(4, dtype=torch.float64), atol=1e-6):
        raise UsageError(f"--trajectory: preset {args.trajectory!r} does not start at the identity pose")
    points = lift_condition_view(image, depth, traj)
    scale = 1.0
    if args.fit_trajectory is not None:
        traj, scale = fit_to_cloud(traj, points, args.fit_trajectory, point_radius=args.point_radius,
                                   points_per_pixel=args.points_per_pixel)
    lo = torch.tensor(scene.room_min) + 0.05
    hi = torch.tensor(scene.room_max) - 0.05
    centers = traj.centers.float()
    if not bool(((centers > lo) & (centers < hi)).all()):
        raise UsageError(f"--trajectory: this trajectory leaves the demo room (x, y, z within {scene.room_min} .. "
                         f"{scene.room_max}, median depth {median:.2f}; preset distances are in median depths); use "
                         "smaller --preset-arg distances or --fit-trajectory")
    logger.info("demo scene seed %d: %dx%d, median depth %.3f, trajectory %s (%d frames)", args.seed,
                args.height, args.width, median, args.trajectory, num_frames)
    result = write_render_inputs(
        args.out, image, depth, traj, fps=args.fps, point_radius=args.point_radius,
        points_per_pixel=args.points_per_pixel, progress=False if args.no_progress else None,
        extra_json={"type": f"demo-{args.trajectory}", "scene_seed": args.seed}, points=points,
    )
    write_render_summary(result, trajectory=args.trajectory, median_depth=median, fit_scale=scale,
                         fit_min_coverage=args.fit_trajectory)
    cols = sorted({round(i * (num_frames - 1) / max(args.sheet_columns - 1, 1)) for i in range(args.sheet_columns)})
    cols = [c for c in cols if c < num_frames]
    from tqdm.auto import tqdm

    exact = []
    for i in tqdm(cols, desc="exact views", unit="view", leave=False, disable=True if args.no_progress else None):
        if i == 0:
            exact.append(image)  # the condition view itself
            continue
        img_i, _ = scene.render(traj.w2c[i], traj.K[i], args.height, args.width, supersample=args.supersample)
        exact.append(img_i)
    gt = torch.stack(exact)
    assert result.render is not None and result.hole_mask is not None
    rendered = result.render[cols]
    holes = result.hole_mask[cols]
    psnr = [_psnr(rendered[k], gt[k], holes[k, 0] < 0.5) for k in range(len(cols))]
    sheet = make_contact_sheet([gt, rendered, holes], list(SHEET_ROWS))
    out = Path(args.out)
    save_image(out / "contact_sheet.png", sheet)
    metrics = {
        "frames": num_frames,
        "height": args.height,
        "width": args.width,
        "median_depth": median,
        "num_points": result.num_points,
        "coverage": result.coverage,
        "fit_scale": scale,
        "sheet_frames": cols,
        "psnr_covered_vs_exact": {str(c): (None if not math.isfinite(p) else p) for c, p in zip(cols, psnr)},
        "seconds": time.perf_counter() - t0,
    }
    with atomic_open(out / "metrics.json", "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2)
    finite = [p for p in psnr[1:] if math.isfinite(p)]
    logger.info("demo done in %.1f s: %d points, PSNR of covered pixels vs exact views %.1f dB (mean over frames "
                "%s), outputs in %s", metrics["seconds"], result.num_points,
                sum(finite) / max(len(finite), 1), cols[1:], final_path(args, out))
    return 0
