"""``worldstereo reconstruct``: 3D reconstruction of posed frames (a folder of images, a video, or
an output folder of ``demo`` / ``render`` / ``generate`` / ``multi-view``).

Writes into ``--out``: ``points.ply`` (fused points), ``mesh.glb`` (``--method mesh``),
``gaussians.ply`` (``--method neural_field``), ``nerfstudio/transforms.json``, ``colmap/`` (text
model), ``worldmirror/cameras.json`` (each with the frames as images), ``viewer.html`` (static viewer)
and ``metrics.json`` (quality metrics).

An output folder is recognised by its ``camera.json`` (or ``camera_00.json``, ``camera_01.json`` ...
of ``multi-view``): the frames are ``video.mp4`` (``generate``) or ``render.mp4`` (``render`` /
``demo``), one per camera file, the cameras those files and the depth ``depths.npz`` (the render's
depth, holes excluded), so no depth model and no network are needed; several videos of one
``multi-view`` folder share one world frame and are reconstructed together.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldstereo.commands import UsageError, bounded_int, final_path, options_named, output_path, positive_float
from worldstereo.commands.render import load_trajectory_file
from worldstereo.errors import MissingPathError

__all__ = ["OutputFolderVideo", "find_output_folder_videos", "load_cameras", "load_depth_input", "load_frames",
           "register", "run"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif")
DEPTH_SUFFIXES = (".npy", ".npz", ".png", ".exr", ".pfm")
#: most frames read from a folder / video, and most neural-field iterations
MAX_FRAMES = 10_000
MAX_FIELD_ITERATIONS = 100_000

_DESCRIPTION = (
    "3D reconstruction of posed frames. INPUT is a folder of frames (sorted by name), a video file, or an output "
    "folder of demo, render, generate or multi-view: then its video (video.mp4, else render.mp4; video_NN.mp4 of "
    "multi-view), cameras (camera.json / camera_NN.json) and render depth (depths.npz) are used, so neither "
    "--cameras nor a depth model is needed. Writes points.ply, mesh.glb (--method mesh), gaussians.ply (--method "
    "neural_field), nerfstudio/transforms.json, colmap/, worldmirror/, viewer.html and metrics.json into --out."
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``reconstruct`` sub-command."""
    p = subparsers.add_parser(
        "reconstruct", help="3D reconstruction (point cloud / mesh / neural field) of posed frames",
        description=_DESCRIPTION)
    p.add_argument("input", help="folder of frames (sorted by name), a video file, or an output folder of demo / "
                                 "render / generate / multi-view")
    p.add_argument("--cameras", default=None,
                   help="camera file: our trajectory .json/.npz, reference camera.json, transforms.json, "
                        "WorldMirror cameras.json, RealEstate10K .txt, or a COLMAP text-model folder (default for an "
                        "output folder: its camera.json; required otherwise)")
    p.add_argument("--method", choices=("point_cloud", "mesh", "neural_field"), default="point_cloud")
    p.add_argument("--depth", default=None,
                   help="per-frame depth: a (T,H,W) .npy/.npz, a folder of per-frame depth files, or a depth "
                        "model id / 'moge' (default: the output folder's depths.npz, else the library's default "
                        "depth model)")
    p.add_argument("--out", required=True, type=output_path, help="output folder")
    p.add_argument("--scale-anchor", choices=("first", "cameras"), default="first",
                   help="what fixes the depth scale: frame 0 (default) or the camera baselines")
    p.add_argument("--voxel-size", type=positive_float, default=None, help="fusion voxel (scene units)")
    p.add_argument("--field-iterations", type=bounded_int(1, MAX_FIELD_ITERATIONS), default=300,
                   help=f"neural-field optimisation steps (at most {MAX_FIELD_ITERATIONS})")
    p.add_argument("--formats", default=None,
                   help="comma-separated exports (ply, gaussians, mesh_glb, mesh_obj, mesh_ply, transforms, "
                        "colmap, worldmirror, viewer); default: all that apply")
    p.add_argument("--device", default=None, help="device for a depth model (default: auto)")
    p.set_defaults(func=run, input_folder_args=("input",))
    return p


@dataclass
class OutputFolderVideo:
    """One video of an output folder: its frames, cameras and render depth (None when absent)."""

    video: Path
    cameras: Path
    depths: Path | None


def find_output_folder_videos(folder: Path) -> list[OutputFolderVideo] | None:
    """The videos of an output folder of ``demo`` / ``render`` / ``generate`` (``camera.json``) or
    ``multi-view`` (``camera_NN.json``), in order; None when ``folder`` is not one.

    Raises:
        UsageError: a camera file without its video.
    """
    if not folder.is_dir():
        return None
    if os.path.lexists(folder / "camera.json") and not (folder / "camera.json").is_file():
        raise UsageError(f"input: {str(folder / 'camera.json')!r} is not a regular file")
    if (folder / "camera.json").is_file():
        suffixes = [""]
    else:
        suffixes = [p.stem[len("camera"):] for p in sorted(folder.glob("camera_[0-9][0-9].json"))]
        if not suffixes:
            return None
    found = []
    for suffix in suffixes:
        video = next((folder / f"{kind}{suffix}.mp4" for kind in ("video", "render")
                      if (folder / f"{kind}{suffix}.mp4").is_file()), None)
        if video is None:
            raise UsageError(f"input: {str(folder)!r} has camera{suffix}.json but neither video{suffix}.mp4 nor "
                             f"render{suffix}.mp4")
        depths = folder / f"depths{suffix}.npz"
        found.append(OutputFolderVideo(video, folder / f"camera{suffix}.json", depths if depths.is_file() else None))
    return found


def load_frames(path: Path) -> Any:
    """(T,3,H,W) float [0,1] frames from a folder of images (sorted by name) or a video file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UsageError: an empty folder, frames of different sizes, too many frames, an unknown file type.
        InputFileError: an unreadable image or video (names the file).
    """
    import torch

    from worldstereo.io.image import load_image

    if path.is_dir():
        try:
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir())
        except OSError as exc:
            raise UsageError(f"input: cannot list the folder {str(path)!r}: {exc.strerror or exc}") from None
        if not files:
            raise UsageError(f"input: no images ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r}")
        if len(files) > MAX_FRAMES:
            raise UsageError(f"input: {len(files)} images in {str(path)!r}, more than the limit of {MAX_FRAMES}")
        frames = []
        for f in files:
            frame = load_image(f, name=f"input image {f.name}")
            if frames and tuple(frame.shape) != tuple(frames[0].shape):
                raise UsageError(f"input: {f.name!r} is {tuple(frame.shape[1:])} but {files[0].name!r} is "
                                 f"{tuple(frames[0].shape[1:])}; every frame must have the same size")
            frames.append(frame)
        return torch.stack(frames)
    if not path.exists():
        raise MissingPathError(f"input: {str(path)!r} does not exist")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"input: {str(path)!r} is neither a folder of images nor a video "
                         f"({', '.join(VIDEO_SUFFIXES)})")
    from worldstereo.io.video import read_video

    frames = read_video(path)
    if len(frames) > MAX_FRAMES:
        raise UsageError(f"input: the video has {len(frames)} frames, more than the limit of {MAX_FRAMES}")
    return frames


def load_cameras(path: Path, height: int, width: int) -> Any:
    """Cameras for ``height`` x ``width`` frames from any supported camera file / COLMAP folder.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UsageError: a folder that is not a COLMAP text model, an unknown file type.
        InputFileError: the file cannot be parsed (names the file and the field).
    """
    from worldstereo.io.files import read_json_file
    from worldstereo.reconstruction.export import read_colmap_text, read_worldmirror_cameras

    if path.is_dir():
        if (path / "cameras.txt").exists() and (path / "images.txt").exists():
            return read_colmap_text(path)[0]
        raise UsageError(f"--cameras: folder {str(path)!r} is not a COLMAP text model (cameras.txt, images.txt)")
    if not path.exists():
        raise MissingPathError(f"--cameras: {str(path)!r} does not exist")
    if path.suffix.lower() == ".json":
        doc = read_json_file(path, "--cameras", "camera file")
        if isinstance(doc, dict) and "extrinsics" in doc and "intrinsics" in doc:
            img = path.parent / "images"
            if img.is_dir():
                return read_worldmirror_cameras(path)[0]
            return read_worldmirror_cameras(path, height=height, width=width)[0]
    return load_trajectory_file(path, image_size=(height, width), option="--cameras")


def _read_depth_array(p: Path, num_frames: int) -> Any:
    """(T,H,W) float32 depth of a .npy, or of a .npz (its ``depth`` array, else the first; a
    ``hole_mask`` next to ``depth``, as in the ``depths.npz`` the commands write, zeroes the holes).

    Raises:
        UsageError: not a numeric (T,H,W) array, or not ``num_frames`` maps.
        InputFileError: an unreadable file (names the file).
    """
    import numpy as np
    import torch

    from worldstereo.io.errors import InputFileError
    from worldstereo.io.files import load_npy, load_npz

    if p.suffix.lower() == ".npy":
        arr = load_npy(p, "--depth")
    else:
        arrays = load_npz(p, "--depth")
        if not arrays:
            raise InputFileError(p, "the archive holds no array; expected a (T,H,W) depth array", field="--depth")
        arr = arrays["depth"] if "depth" in arrays else arrays[sorted(arrays)[0]]
        holes = arrays.get("hole_mask") if "depth" in arrays else None
        if holes is not None:
            if holes.shape != arr.shape:
                raise UsageError(f"--depth: {str(p)!r} has a hole_mask of shape {tuple(holes.shape)} for depth of "
                                 f"shape {tuple(arr.shape)}")
            arr = np.where(np.asarray(holes).astype(bool), 0, arr)
    if arr.dtype.kind not in "uif" or arr.ndim != 3:
        raise UsageError(f"--depth: {str(p)!r} must hold a numeric (T,H,W) array; got {arr.dtype} of shape "
                         f"{tuple(arr.shape)}")
    if arr.shape[0] != num_frames:
        raise UsageError(f"--depth: {str(p)!r} holds {arr.shape[0]} depth maps but there are {num_frames} frames")
    values = np.asarray(arr, dtype=np.float64)
    if not (np.isfinite(values) & (values > 0)).any():
        raise UsageError(f"--depth: {str(p)!r} holds no valid (finite, positive) depth in any frame")
    return torch.as_tensor(np.asarray(arr, dtype=np.float32))


def load_depth_input(spec: str | None, num_frames: int, device: str | None) -> Any:
    """(T,H,W) depth tensor from a file / folder, or a depth estimator from a model spec.

    Raises:
        FileNotFoundError: a depth file / folder that does not exist.
        UsageError: a wrong number of depth maps or a wrong array shape.
        InputFileError: an unreadable depth file (names the file).
    """
    import torch

    if spec is not None:
        p = Path(spec)
        if p.is_dir() and not (p / "config.json").exists():
            from worldstereo.depth.user import load_depth

            files = sorted(f for f in p.iterdir() if f.suffix.lower() in DEPTH_SUFFIXES and not f.is_dir())
            if len(files) != num_frames:
                raise UsageError(f"--depth: folder has {len(files)} depth files but there are {num_frames} frames")
            return torch.stack([torch.as_tensor(load_depth(f, name=f"--depth {f.name}")).float() for f in files])
        if p.suffix.lower() in (".npy", ".npz"):
            return _read_depth_array(p, num_frames)
        if p.suffix.lower() in DEPTH_SUFFIXES:
            raise UsageError(f"--depth: a single {p.suffix} depth file cannot describe {num_frames} frames; pass a "
                             "(T,H,W) .npy/.npz or a folder of per-frame depth files")
        if p.exists() and not p.is_dir():
            raise UsageError(f"--depth: {spec!r} is a file but not a (T,H,W) .npy/.npz depth array; expected such a "
                             "file, a folder of per-frame depth files, or a depth model id / folder")
    from worldstereo.depth import get_depth_estimator

    return get_depth_estimator(spec, device=device) if spec is not None else get_depth_estimator(device=device)


def _load_output_folder(videos: list[OutputFolderVideo], args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(frames, cameras, depth)`` of an output folder's videos, concatenated in order."""
    import torch

    from worldstereo.camera import CameraTrajectory

    frames, cams, depths = [], [], []
    for v in videos:
        f = load_frames(v.video)
        c = load_cameras(v.cameras, int(f.shape[-2]), int(f.shape[-1]))
        if len(c) != len(f):
            raise UsageError(f"input: {v.cameras.name} has {len(c)} cameras but {v.video.name} {len(f)} frames")
        frames.append(f)
        cams.append(c)
        if args.depth is None and v.depths is not None:
            depths.append(_read_depth_array(v.depths, len(f)))
    names = ", ".join(v.video.name for v in videos)
    if args.cameras is not None:
        cameras = None  # replaced by --cameras below
    else:
        cameras = CameraTrajectory.cat(cams) if len(cams) > 1 else cams[0]
    if args.depth is None and len(depths) == len(videos):
        logger.info("reconstructing %s with the cameras and render depth of %s", names, videos[0].cameras.parent)
        depth: Any = torch.cat(depths)
    else:
        if args.depth is None:
            logger.info("%s: no depths.npz next to every video; estimating depth with the default model", names)
        depth = None
    return torch.cat(frames), cameras, depth


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo reconstruct``; returns the exit status."""
    from worldstereo.reconstruction import reconstruct
    from worldstereo.io.atomic import atomic_write
    from worldstereo.reconstruction.export import EXPORT_FORMATS

    formats = None
    if args.formats is not None:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        if not formats:
            raise UsageError(f"--formats: expected a comma-separated list of {', '.join(EXPORT_FORMATS)}, got "
                             f"{args.formats!r}")
        bad = [f for f in formats if f not in EXPORT_FORMATS]
        if bad:
            raise UsageError(f"--formats: unknown {bad}; choose from {', '.join(EXPORT_FORMATS)}")
        if any(f.startswith("mesh_") for f in formats) and args.method != "mesh":
            raise UsageError("--formats: mesh exports need --method mesh")
        if "gaussians" in formats and args.method != "neural_field":
            raise UsageError("--formats: 'gaussians' needs --method neural_field")
    if args.device is not None:
        from worldstereo.devices import check_device

        check_device(args.device, "--device")
    videos = find_output_folder_videos(Path(args.input))
    depth = None
    if videos is not None:
        frames, cams, depth = _load_output_folder(videos, args)
    else:
        if args.cameras is None:
            raise UsageError("--cameras: required unless INPUT is an output folder of demo / render / generate / "
                             "multi-view (one with camera.json)")
        frames = load_frames(Path(args.input))
        cams = None
    T, _, H, W = frames.shape
    if args.cameras is not None:
        cams = load_cameras(Path(args.cameras), H, W)
    if len(cams) != T:
        raise UsageError(f"--cameras: {len(cams)} cameras but the input has {T} frames")
    if depth is None:
        depth = load_depth_input(args.depth, T, args.device)
    with options_named({"voxel_size": "--voxel-size", "field_iterations": "--field-iterations",
                        "scale_anchor": "--scale-anchor", "depth": "--depth"}):
        rec = reconstruct(frames, cams, args.method, depth, voxel_size=args.voxel_size,
                          scale_anchor=args.scale_anchor, field_iterations=args.field_iterations)
    out = Path(args.out)
    written = rec.save(out, formats=tuple(formats) if formats else None, frames=frames)
    with atomic_write(out / "metrics.json") as tmp:
        metrics = {k: (v if math.isfinite(v) else None) for k, v in rec.quality_metrics.items()}
        tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    logger.info("reconstruction (%s): %d points; %s", args.method, rec.points.shape[0],
                ", ".join(f"{k}={v:.4g}" for k, v in rec.quality_metrics.items()))
    for name, path in written.items():
        logger.info("wrote %s: %s", name, final_path(args, path))
    return 0
