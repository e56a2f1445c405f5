"""``worldstereo render``: point-cloud render + hole mask of one image along a camera trajectory.

Writes exactly the inputs the reference pipelines read, into ``--out``:

* ``image.png`` — the condition image at the working size (the size ``camera.json``'s K refers to);
* ``render.mp4`` — the point cloud rendered along the trajectory (H.264, 16 fps); frame 0 is the
  condition image, holes are mid-grey (the reference's background);
* ``render_mask.mp4`` — hole mask, white = hole (not covered by the point cloud), frame 0 black;
* ``camera.json`` — the trajectory in the reference format (``extrinsic`` w2c OpenCV, ``intrinsic``
  in pixels of ``image.png``, ``width``, ``height``);
* ``points.ply`` — the lifted point cloud (world = frame-0 camera when the trajectory starts at
  the identity);
* ``depth.npy`` — the z-depth of the condition view used for lifting (0 = invalid);
* ``depths.npz`` — the z-depth of every render frame, ``depth`` (T, H, W) with 0 where there is
  none, and ``hole_mask`` (T, H, W) bool (as ``render_mask.mp4``): what ``worldstereo
  reconstruct`` reads from this folder;
* ``summary.json`` — per-frame ``coverage`` (share of non-hole pixels), the scene's
  ``median_depth``, the fit scale of ``--fit-trajectory``, point count and the files.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldstereo.commands import (
    UsageError,
    add_fit_option,
    bounded_float,
    bounded_int,
    output_path,
    parse_key_values,
    positive_float,
)

__all__ = [
    "register",
    "run",
    "RenderResult",
    "load_trajectory_file",
    "resolve_trajectory",
    "preset_trajectory",
    "lift_condition_view",
    "fit_to_cloud",
    "write_depths",
    "write_render_inputs",
    "write_render_summary",
]

if TYPE_CHECKING:  # torch is imported lazily so that `--help` stays fast
    from torch import Tensor

logger = logging.getLogger(__name__)

#: grey used for hole pixels in render.mp4 (the reference renders with background 0 in [-1, 1])
HOLE_GREY = 0.5
#: frames rendered per call (progress granularity)
RENDER_CHUNK = 4
#: bounds of the numeric options (they keep work and memory finite; docs/cli.md)
MAX_FRAMES = 1000
MAX_SIDE = 4096
MAX_FPS = 240
MAX_POINT_RADIUS = 0.1
MAX_POINTS_PER_PIXEL = 64
MAX_FOV = 170.0


@dataclass
class RenderResult:
    """What :func:`write_render_inputs` wrote and measured."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    num_points: int = 0
    coverage: list[float] = field(default_factory=list)  # fraction of non-hole pixels per frame
    render: Tensor | None = None  # (F,3,H,W) [0,1] as written (frame 0 = condition image, holes grey)
    hole_mask: Tensor | None = None  # (F,1,H,W) {0,1}, 1 = hole


# --------------------------------------------------------------------------------- trajectories
def load_trajectory_file(path: Path, *, image_size: tuple[int, int] | None = None,
                         option: str = "--trajectory") -> Any:
    """Read a trajectory file, choosing the reader from the extension and content.

    * ``.npz``: :meth:`CameraTrajectory.from_npz`;
    * ``.txt``: RealEstate10K (normalised intrinsics, converted to pixels of ``image_size``);
    * ``.json``: our trajectory format (``"format"`` key), a reference ``camera.json``
      (``"extrinsic"`` key or a bank of views; its K is in pixels of the condition image, as in the
      reference, so ``image_size`` is used), or a nerfstudio ``transforms.json`` (``"frames"`` key).

    Args:
        path: the file.
        image_size: ``(height, width)`` of the original condition image.
        option: the option the file came from, for messages.

    Raises:
        UsageError: unknown extension or JSON layout.
        InputFileError: the file cannot be parsed (names the file and the field).
    """
    from worldstereo.camera import CameraTrajectory

    suffix = path.suffix.lower()
    if suffix == ".npz":
        return CameraTrajectory.from_npz(path)
    if suffix == ".txt":
        if image_size is None:
            raise UsageError(f"{option}: a RealEstate10K .txt file needs the image size")
        return CameraTrajectory.from_realestate10k(path, height=image_size[0], width=image_size[1])
    if suffix == ".json":
        from worldstereo.io.errors import reading
        from worldstereo.io.files import read_json_file

        doc = read_json_file(path, option, "trajectory JSON file")
        with reading(path, "trajectory JSON file"):
            if isinstance(doc, dict) and "format" in doc:
                return CameraTrajectory.load(path)
            if isinstance(doc, dict) and "frames" in doc:
                return CameraTrajectory.from_transforms_json(doc)
            if isinstance(doc, dict) and ("extrinsic" in doc or (doc and all(
                    isinstance(v, dict) and "extrinsic" in v for v in doc.values()))):
                if image_size is not None:
                    return CameraTrajectory.from_reference_json(doc, height=image_size[0], width=image_size[1])
                return CameraTrajectory.from_reference_json(path)
        raise UsageError(
            f"{option}: {str(path)!r} is not a known trajectory JSON (expected our format with a 'format' "
            "key, a reference camera.json with 'extrinsic', or a transforms.json with 'frames')"
        )
    raise UsageError(f"{option}: unsupported trajectory file extension {suffix!r} (use .json, .npz or .txt)")


def preset_trajectory(name: str, num_frames: int, height: int, width: int, fov_deg: float,
                      median_depth: float = 1.0, overrides: dict[str, Any] | None = None) -> Any:
    """A preset in scene units: every preset length (``distance``, ``radius``, focus ``depth`` ...,
    defaults and ``overrides`` alike, e.g. ``{"distance": 0.5}``) is in median depths of the
    condition view and is multiplied by ``median_depth`` (:meth:`CameraTrajectory.in_scene_units`).
    Focus points therefore sit on the typical surface and loop radii follow the reference
    (eloop radii = (0.3, 0.4) x median depth).

    Raises:
        UsageError: unknown preset or keyword.
    """
    from worldstereo.camera import PRESET_NAMES, CameraTrajectory

    if name not in PRESET_NAMES:
        raise UsageError(f"--trajectory: {name!r} is neither an existing file nor a preset; presets: "
                         f"{', '.join(PRESET_NAMES)}")
    params = inspect.signature(getattr(CameraTrajectory, name)).parameters
    kw: dict[str, Any] = {"num_frames": num_frames, "height": height, "width": width, "fov_deg": fov_deg}
    own_option = {"num_frames": "--frames", "height": "--height", "width": "--width", "fov_deg": "--fov"}
    for key, value in (overrides or {}).items():
        if key in own_option:
            raise UsageError(f"--preset-arg: {key} has its own option; use {own_option[key]}")
        if key not in params:
            allowed = sorted(k for k in params if k not in ("num_frames", "height", "width", "fov_deg"))
            raise UsageError(f"--preset-arg: preset {name!r} has no parameter {key!r}; it accepts {allowed}")
        kw[key] = value
    try:
        preset = CameraTrajectory.preset(name, **kw)
    except (TypeError, ValueError, ArithmeticError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in (overrides or {}).items())
        raise UsageError(f"--preset-arg: preset {name!r} rejected its parameters{f' ({given})' if given else ''}: "
                         f"{' '.join(str(exc).split())}") from None
    return preset.in_scene_units(median_depth)


def check_trajectory_spec(spec: str, num_frames: int | None, height: int, width: int, image_size: tuple[int, int],
                          preset_args: dict[str, Any] | None = None, option: str = "--trajectory") -> int:
    """Check a ``--trajectory`` before any depth or model work — a preset name and its
    ``--preset-arg`` values (built once, cheaply), or a trajectory file (parsed) — and that the
    video it gives fits the size budget; returns its frame count.

    Raises:
        UsageError / InputFileError (ValueErrors): naming the option, the file or the parameter.
    """
    from worldstereo.camera import PRESET_NAMES
    from worldstereo.pipeline_validation import check_video_size

    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise UsageError(f"{option}: {spec!r} is a directory, expected a trajectory file or preset name")
        if preset_args:
            raise UsageError("--preset-arg: only applies to preset trajectories, not to files")
        poses = len(load_trajectory_file(path, image_size=image_size, option=option))
        n = num_frames or poses
    else:
        if spec not in PRESET_NAMES:
            raise UsageError(f"{option}: {spec!r} is neither an existing file nor a preset; presets: "
                             f"{', '.join(PRESET_NAMES)}")
        preset_trajectory(spec, 2, height, width, 60.0, 1.0, preset_args)
        n = num_frames or 16
    try:
        check_video_size(n, height, width)
    except ValueError as exc:
        raise UsageError(f"--frames/--height/--width: {str(exc).split(': ', 1)[1]}") from None
    return n


def resolve_trajectory(spec: str, *, num_frames: int | None, height: int, width: int, fov_deg: float | None,
                       image_size: tuple[int, int], median_depth: float = 1.0, predicted_K: Tensor | None = None,
                       preset_args: dict[str, Any] | None = None) -> Any:
    """Trajectory for ``spec`` (existing file or preset name) with ``num_frames`` cameras and K for
    the ``(height, width)`` image.

    Frame count: a preset is built with ``num_frames`` (default 16); a longer file is subsampled with
    the reference's ``linspace`` rule (81 -> 21 keeps 0, 4, ..., 80), a shorter one is interpolated.
    Intrinsics: the file's (brought to the working size with
    :meth:`~worldstereo.camera.CameraTrajectory.at_size`), else the depth estimator's predicted K
    when ``fov_deg`` is None, else a ``fov_deg`` (default 60) horizontal field of view. Units: the
    result is in scene units; presets (and files saved with ``units="median_depth"``) are scaled
    by ``median_depth``, the condition view's median depth.
    """
    from worldstereo.camera import trajectory_subsample_linspace

    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise UsageError(f"--trajectory: {spec!r} is a directory, expected a trajectory file or preset name")
        if preset_args:
            raise UsageError("--preset-arg: only applies to preset trajectories, not to files")
        traj = load_trajectory_file(path, image_size=image_size).in_scene_units(median_depth)
        n = len(traj)
        if num_frames is not None and num_frames != n:
            if num_frames < n:
                traj = traj[trajectory_subsample_linspace(n, num_frames)]
            else:
                traj = traj.resample(num_frames)
            logger.info("trajectory %s: %d poses -> %d frames", path.name, n, num_frames)
    else:
        fov = 60.0 if fov_deg is None else fov_deg
        traj = preset_trajectory(spec, num_frames or 16, height, width, fov, median_depth, preset_args)
        if predicted_K is not None and fov_deg is None:
            logger.info("intrinsics: using the depth estimator's predicted K")
            return traj.with_intrinsics(predicted_K, height=height, width=width)
        return traj
    if traj.has_intrinsics:
        return traj.at_size(height, width)
    if predicted_K is not None and fov_deg is None:
        logger.info("intrinsics: using the depth estimator's predicted K")
        return traj.with_intrinsics(predicted_K, height=height, width=width)
    fov = 60.0 if fov_deg is None else fov_deg
    logger.info("intrinsics: trajectory has none; using a %.1f deg horizontal field of view", fov)
    return traj.with_intrinsics(None, height=height, width=width, fov_deg=fov)


# --------------------------------------------------------------------------------------- output
def lift_condition_view(image: Tensor, depth: Tensor, trajectory: Any, valid_mask: Tensor | None = None) -> Any:
    """The point cloud of the condition view: ``depth`` (H, W) lifted with frame 0's camera of
    ``trajectory`` (K for the (H, W) image) and coloured by ``image`` (3, H, W).

    Raises:
        ValueError: size mismatch, or no valid depth left.
    """
    from worldstereo.geometry import lift_depth

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected (3,H,W), got shape {tuple(image.shape)}")
    h, w = int(image.shape[1]), int(image.shape[2])
    if tuple(depth.shape) != (h, w):
        raise ValueError(f"depth: shape {tuple(depth.shape)} does not match the image size ({h}, {w})")
    if not trajectory.has_intrinsics or (trajectory.height, trajectory.width) != (h, w):
        raise ValueError(f"trajectory: needs intrinsics for the {h}x{w} image, has "
                         f"{(trajectory.height, trajectory.width) if trajectory.has_intrinsics else 'none'}")
    points = lift_depth(depth.float(), trajectory.K[0].float(), trajectory.w2c[0].float(), image.float(),
                        valid_mask=valid_mask)
    if len(points) == 0:
        raise ValueError("depth: no valid depth left after lifting (all pixels invalid or filtered as edges)")
    return points


def fit_to_cloud(trajectory: Any, points: Any, min_coverage: float, *, point_radius: float = 0.008,
                 points_per_pixel: int = 8, what: str = "--trajectory") -> tuple[Any, float]:
    """``--fit-trajectory``: ``trajectory`` fitted to ``points`` (see
    :func:`worldstereo.camera.fit.fit_trajectory`); returns ``(trajectory, scale)``."""
    from worldstereo.camera import fit_trajectory

    fit = fit_trajectory(trajectory, points, min_coverage=min_coverage, point_radius=point_radius,
                         points_per_pixel=points_per_pixel)
    if fit.scale != 1.0:
        logger.info("%s: motion scaled by %.3g to keep %.0f%% of every frame covered (lowest now %.0f%%)", what,
                    fit.scale, 100 * min_coverage, 100 * min(fit.coverage))
    else:
        logger.info("%s: already keeps %.0f%% of every frame covered; unchanged", what, 100 * min_coverage)
    return fit.trajectory, fit.scale


def write_depths(path: str | Path, depth: Tensor, hole_mask: Tensor) -> Path:
    """Write ``depths.npz`` atomically: ``depth`` (T, H, W) float32 z-depth of each render frame in
    scene units (0 where there is none) and ``hole_mask`` (T, H, W) bool (True = hole, as
    ``render_mask.mp4``; frame 0, the condition view, has none).

    Args:
        depth: (T, 1, H, W) or (T, H, W) rendered z-depth (holes are zeroed here).
        hole_mask: same shape, 1 = hole.
    """
    import numpy as np

    from worldstereo.io.atomic import atomic_write

    d = depth.detach().float().cpu()
    m = hole_mask.detach().cpu() > 0.5
    if d.ndim == 4:
        d, m = d[:, 0], m[:, 0]
    if d.shape != m.shape or d.ndim != 3:
        raise ValueError(f"depth/hole_mask: expected matching (T,H,W), got {tuple(d.shape)} and {tuple(m.shape)}")
    d = d.masked_fill(m, 0.0)
    out = Path(path)
    with atomic_write(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, depth=d.numpy().astype(np.float32), hole_mask=m.numpy())
    return out


def write_render_inputs(out_dir: str | Path, image: Tensor, depth: Tensor, trajectory: Any, *,
                        valid_mask: Tensor | None = None, fps: int = 16, point_radius: float = 0.008,
                        points_per_pixel: int = 8, progress: bool | None = None,
                        extra_json: dict[str, Any] | None = None, points: Any = None) -> RenderResult:
    """Lift ``depth`` of the condition view (frame 0), render the cloud along ``trajectory`` and write
    ``image.png``, ``depth.npy``, ``points.ply``, ``render.mp4``, ``render_mask.mp4``, ``depths.npz``
    and ``camera.json`` (all atomically) into ``out_dir`` (created if needed).

    Args:
        out_dir: output folder.
        image: ``(3, H, W)`` condition image in [0, 1] at the trajectory's size.
        depth: ``(H, W)`` z-depth of the condition view in scene units (0 = invalid).
        trajectory: ``CameraTrajectory`` in scene units with intrinsics for ``(H, W)``; frame 0 =
            condition view.
        valid_mask: optional ``(H, W)`` bool of usable depth.
        fps: video frame rate.
        point_radius, points_per_pixel: point renderer settings.
        progress: show a progress bar (None: only on a terminal).
        extra_json: extra keys stored in ``camera.json`` (informational).
        points: the already lifted cloud (:func:`lift_condition_view`), to skip lifting again.

    Returns:
        :class:`RenderResult` with paths, point count and per-frame coverage (a warning names the
        first frame below :data:`~worldstereo.geometry.coverage.LOW_COVERAGE_THRESHOLD`).

    Raises:
        ValueError: size mismatch between image, depth and trajectory, or no valid depth.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from worldstereo.geometry.coverage import render_coverage, warn_low_coverage
    from worldstereo.geometry.render import render_point_cloud
    from worldstereo.io.image import save_image
    from worldstereo.io.video import write_video

    if points is None:
        points = lift_condition_view(image, depth, trajectory, valid_mask)
    h, w = int(image.shape[1]), int(image.shape[2])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w2c = trajectory.w2c.float()
    K = trajectory.K.float()
    logger.info("lifted %d points from the %dx%d condition view", len(points), h, w)

    frames: list[Tensor] = []
    masks: list[Tensor] = []
    depths: list[Tensor] = []
    n = len(trajectory)
    with tqdm(total=n, desc="render", unit="frame", disable=(None if progress is None else not progress),
              leave=False) as bar:
        for start in range(0, n, RENDER_CHUNK):
            stop = min(n, start + RENDER_CHUNK)
            r = render_point_cloud(points, w2c[start:stop], K[start:stop], h, w, point_radius=point_radius,
                                   points_per_pixel=points_per_pixel)
            frames.append(r.image.cpu())
            masks.append(r.hole_mask.cpu())
            depths.append(r.depth.cpu())
            bar.update(stop - start)
    video = torch.cat(frames).clamp(0, 1)
    hole = (torch.cat(masks) > 0.5).float()
    # reference: frame 0 is the condition image with an empty hole mask
    video[0] = image.cpu().float().clamp(0, 1)
    hole[0] = 0.0
    video = torch.where(hole.bool().expand_as(video), torch.full_like(video, HOLE_GREY), video)
    coverage = render_coverage(hole)
    warn_low_coverage(coverage, what=f"render of {out}", log=logger)

    files = {
        "image": out / "image.png",
        "depth": out / "depth.npy",
        "points": out / "points.ply",
        "render": out / "render.mp4",
        "render_mask": out / "render_mask.mp4",
        "depths": out / "depths.npz",
        "camera": out / "camera.json",
    }
    save_image(files["image"], image)
    from worldstereo.io.atomic import atomic_write

    with atomic_write(files["depth"]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, depth.detach().cpu().float().numpy())
    points.save_ply(files["points"])
    write_video(files["render"], video, fps=fps)
    write_video(files["render_mask"], hole.expand(-1, 3, -1, -1), fps=fps)
    write_depths(files["depths"], torch.cat(depths), hole)
    trajectory.to_reference_json(files["camera"], extra=extra_json)
    logger.info("rendered %d frames (mean coverage %.1f%%)", n, 100 * sum(coverage[1:]) / max(n - 1, 1))
    logger.debug("wrote %s", out)
    return RenderResult(out_dir=out, files=files, num_points=len(points), coverage=coverage, render=video,
                        hole_mask=hole)


# ------------------------------------------------------------------------------------------ CLI
def add_render_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``render`` and ``demo``."""
    parser.add_argument("--frames", type=bounded_int(1, MAX_FRAMES), default=None,
                        help="number of frames (default: 16 for presets, the file's length for files; the "
                             "reference models use 21 keyframes)")
    parser.add_argument("--out", required=True, type=output_path, help="output folder (created if needed)")
    parser.add_argument("--fps", type=bounded_int(1, MAX_FPS), default=16, help="video frame rate (default 16)")
    parser.add_argument("--preset-arg", action="append", metavar="KEY=VALUE", default=None,
                        help="preset parameter, repeatable, e.g. --preset-arg distance=0.5 --preset-arg "
                             "azimuth_deg=45")
    parser.add_argument("--point-radius", type=bounded_float(0.0, MAX_POINT_RADIUS), default=0.008,
                        help="point footprint radius in NDC units (default 0.008, as the reference)")
    parser.add_argument("--points-per-pixel", type=bounded_int(1, MAX_POINTS_PER_PIXEL), default=8,
                        help="points blended per pixel (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``render`` sub-command."""
    p = subparsers.add_parser(
        "render",
        help="render a point cloud of IMAGE along a camera trajectory (inputs of the reference pipelines)",
        description=(
            "Estimate (or read) the depth of IMAGE, lift it to a point cloud and render it along a camera "
            "trajectory. Writes image.png, depth.npy, points.ply, render.mp4 (holes grey), "
            "render_mask.mp4 (white = hole), depths.npz (depth of every render frame), camera.json (reference "
            "format) and summary.json (per-frame coverage) into --out. Frame 0 is the condition view. Preset "
            "distances are in median depths of IMAGE."
        ),
    )
    p.add_argument("image", type=Path, help="condition image (any format PIL reads)")
    p.add_argument("--trajectory", required=True,
                   help="preset name (forward, backward, left, right, up, down, pan_left, pan_right, tilt_up, "
                        "tilt_down, roll, zoom_in, zoom_out, dolly_zoom, orbit, spiral, eloop) or a trajectory "
                        "file (.json: ours / reference camera.json / transforms.json; .npz; RealEstate10K .txt)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--depth", type=Path, default=None,
                     help="depth map of IMAGE (.npy/.npz float z-depth, or 16-bit .png), used as given")
    src.add_argument("--depth-model", default=None,
                     help="transformers depth model id or local folder, or 'moge' "
                          "(default: depth-anything/Depth-Anything-V2-Small-hf)")
    p.add_argument("--depth-scale", type=positive_float, default=None,
                   help="multiplier from stored depth values to scene units (default 1 for .npy, 1/1000 for .png)")
    p.add_argument("--height", type=bounded_int(16, MAX_SIDE), default=None,
                   help="working height, multiple of 16 (default: the reference size closest to IMAGE's aspect)")
    p.add_argument("--width", type=bounded_int(16, MAX_SIDE), default=None, help="working width, multiple of 16")
    p.add_argument("--fov", type=bounded_float(0.0, MAX_FOV), default=None,
                   help="horizontal field of view in degrees when the trajectory has no intrinsics (default: "
                        "the depth model's estimate if it predicts one, else 60)")
    p.add_argument("--device", default=None, help="torch device for the depth model (default: cuda if available)")
    add_render_options(p)
    add_fit_option(p)
    p.set_defaults(func=run)
    return p


def working_size(args: argparse.Namespace, image_size: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from ``--height``/``--width`` or the reference scale map."""
    from worldstereo.camera import assign_scale

    if (args.height is None) != (args.width is None):
        raise UsageError("--height/--width: give both or neither")
    if args.height is None:
        return assign_scale(*image_size)
    if args.height % 16 or args.width % 16:
        raise UsageError(f"--height/--width: must be multiples of 16, got {args.height}x{args.width}")
    return int(args.height), int(args.width)


_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_depth_model_spec(spec: str | None, option: str = "--depth-model") -> None:
    """Refuse a ``--depth-model`` that can be neither a model folder, a Hugging Face id nor MoGe
    (before anything is loaded or downloaded).

    Raises:
        UsageError: a file, a folder without ``config.json``, or a malformed id.
    """
    if spec is None or spec.lower() == "moge" or spec.lower().startswith("moge:"):
        return
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option}: {spec!r} is a file; expected a model id (owner/name), a model folder or 'moge'")
        if not (path / "config.json").is_file():
            raise UsageError(f"{option}: the folder {spec!r} has no config.json; it is not a transformers model folder")
        return
    if not _MODEL_ID.match(spec):
        raise UsageError(f"{option}: {spec!r} is neither an existing model folder nor a Hugging Face id (owner/name)")


def _depth_for(args: argparse.Namespace, image: Tensor, image_size: tuple[int, int]) -> Any:
    from worldstereo.depth import DEFAULT_DEPTH_MODEL, DepthPrediction, get_depth_estimator, load_depth
    from worldstereo.io.image import resize_image

    h, w = int(image.shape[1]), int(image.shape[2])
    if args.depth is not None:
        d = load_depth(args.depth, args.depth_scale, name="--depth")
        if tuple(d.shape) == image_size and image_size != (h, w):
            d = resize_image(d[None], h, w, mode="nearest")[0]
        elif tuple(d.shape) != (h, w):
            raise UsageError(f"--depth: size {tuple(d.shape)} matches neither IMAGE {image_size} nor the working "
                             f"size ({h}, {w})")
        return DepthPrediction(depth=d, valid_mask=d > 0, is_metric=True)
    if args.depth_scale is not None:
        raise UsageError("--depth-scale: only applies with --depth")
    model = args.depth_model or DEFAULT_DEPTH_MODEL
    logger.info("estimating depth with %s", model)
    estimator = get_depth_estimator(model, device=args.device)
    return estimator(image)


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo render``; returns the exit status."""
    from worldstereo.io.image import load_image, resize_image

    check_depth_model_spec(args.depth_model)
    image0 = load_image(args.image, name="IMAGE")
    image_size = (int(image0.shape[1]), int(image0.shape[2]))
    height, width = working_size(args, image_size)
    preset_args = parse_key_values(args.preset_arg, "--preset-arg")
    # fail on a bad trajectory (or one too long for the size) before the (slow) depth estimation
    check_trajectory_spec(args.trajectory, args.frames, height, width, image_size, preset_args)
    if args.depth is not None:
        from worldstereo.depth import load_depth

        load_depth(args.depth, args.depth_scale, name="--depth")  # a bad depth file fails now, not after the work
    elif args.device is not None:
        from worldstereo.devices import check_device

        check_device(args.device, "--device")
    image = resize_image(image0, height, width)
    pred = _depth_for(args, image, image_size)
    valid = pred.valid_mask & (pred.depth > 0)
    median = float(pred.depth[valid].median()) if bool(valid.any()) else 1.0
    traj = resolve_trajectory(args.trajectory, num_frames=args.frames, height=height, width=width,
                              fov_deg=args.fov, image_size=image_size, median_depth=median,
                              predicted_K=pred.K, preset_args=preset_args)
    points = lift_condition_view(image, pred.depth, traj, valid)
    scale = 1.0
    if args.fit_trajectory is not None:
        traj, scale = fit_to_cloud(traj, points, args.fit_trajectory, point_radius=args.point_radius,
                                   points_per_pixel=args.points_per_pixel)
    result = write_render_inputs(args.out, image, pred.depth, traj, valid_mask=valid, fps=args.fps,
                                 point_radius=args.point_radius, points_per_pixel=args.points_per_pixel,
                                 progress=False if args.no_progress else None, points=points)
    write_render_summary(result, trajectory=args.trajectory, median_depth=median, fit_scale=scale,
                         fit_min_coverage=args.fit_trajectory)
    logger.info("points: %d; coverage of the last frame: %.1f%%", result.num_points, 100 * result.coverage[-1])
    return 0


def write_render_summary(result: RenderResult, **fields: Any) -> Path:
    """Write ``summary.json`` (atomically) next to the render: per-frame ``coverage``, ``num_points``,
    the files written and ``fields`` (``trajectory``, ``median_depth``, ``fit_scale`` ...)."""
    from worldstereo.io.atomic import atomic_open

    summary = {
        "num_frames": len(result.coverage),
        "num_points": result.num_points,
        "coverage": [round(float(c), 6) for c in result.coverage],
        **fields,
        "files": {k: p.name for k, p in sorted(result.files.items())},
    }
    path = result.out_dir / "summary.json"
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
        fh.write("\n")
    result.files["summary"] = path
    return path


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("use the `worldstereo render` command")
