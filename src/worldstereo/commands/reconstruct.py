"""``worldstereo reconstruct``: 3D reconstruction of posed frames (a folder of images or a video).

Writes into ``--out``: ``points.ply`` (fused points), ``mesh.glb`` (``--method mesh``),
``gaussians.ply`` (``--method neural_field``), ``nerfstudio/transforms.json``, ``colmap/`` (text
model), ``worldmirror/cameras.json`` (each with the frames as images), ``viewer.html`` (static viewer)
and ``metrics.json`` (quality metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from worldstereo.commands import UsageError, bounded_int, final_path, output_path, positive_float

__all__ = ["load_cameras", "load_depth_input", "load_frames", "register", "run"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif")
DEPTH_SUFFIXES = (".npy", ".npz", ".png", ".exr", ".pfm")
#: most frames read from a folder / video, and most neural-field iterations
MAX_FRAMES = 10_000
MAX_FIELD_ITERATIONS = 100_000


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``reconstruct`` sub-command."""
    p = subparsers.add_parser(
        "reconstruct", help="3D reconstruction (point cloud / mesh / neural field) of posed frames",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="folder of frames (sorted by name) or a video file")
    p.add_argument("--cameras", required=True,
                   help="camera file: our trajectory .json/.npz, reference camera.json, transforms.json, "
                        "WorldMirror cameras.json, RealEstate10K .txt, or a COLMAP text-model folder")
    p.add_argument("--method", choices=("point_cloud", "mesh", "neural_field"), default="point_cloud")
    p.add_argument("--depth", default=None,
                   help="per-frame depth: a (T,H,W) .npy/.npz, a folder of per-frame depth files, or a depth "
                        "model id / 'moge' (default: the library's default depth model)")
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
    p.set_defaults(func=run)
    return p


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
        raise FileNotFoundError(f"input: {str(path)!r} does not exist")
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
        raise FileNotFoundError(f"--cameras: {str(path)!r} does not exist")
    if path.suffix.lower() == ".json":
        doc = read_json_file(path, "--cameras", "camera file")
        if isinstance(doc, dict) and "extrinsics" in doc and "intrinsics" in doc:
            img = path.parent / "images"
            if img.is_dir():
                return read_worldmirror_cameras(path)[0]
            return read_worldmirror_cameras(path, height=height, width=width)[0]
    from worldstereo.commands.render import load_trajectory_file

    return load_trajectory_file(path, image_size=(height, width), option="--cameras")


def load_depth_input(spec: str | None, num_frames: int, device: str | None) -> Any:
    """(T,H,W) depth tensor from a file / folder, or a depth estimator from a model spec.

    Raises:
        FileNotFoundError: a depth file / folder that does not exist.
        UsageError: a wrong number of depth maps or a wrong array shape.
        InputFileError: an unreadable depth file (names the file).
    """
    import numpy as np
    import torch

    from worldstereo.io.errors import InputFileError

    if spec is not None:
        p = Path(spec)
        if p.is_dir() and not (p / "config.json").exists():
            from worldstereo.depth.user import load_depth

            files = sorted(f for f in p.iterdir() if f.suffix.lower() in DEPTH_SUFFIXES and not f.is_dir())
            if len(files) != num_frames:
                raise UsageError(f"--depth: folder has {len(files)} depth files but there are {num_frames} frames")
            return torch.stack([torch.as_tensor(load_depth(f, name=f"--depth {f.name}")).float() for f in files])
        if p.suffix.lower() in (".npy", ".npz"):
            from worldstereo.io.files import load_npy, load_npz

            if p.suffix.lower() == ".npy":
                arr = load_npy(p, "--depth")
            else:
                arrays = load_npz(p, "--depth")
                if not arrays:
                    raise InputFileError(p, "the archive holds no array; expected a (T,H,W) depth array",
                                         field="--depth")
                arr = arrays["depth"] if "depth" in arrays else arrays[sorted(arrays)[0]]
            if arr.dtype.kind not in "uif" or arr.ndim != 3:
                raise UsageError(f"--depth: {str(p)!r} must hold a numeric (T,H,W) array; got {arr.dtype} of shape "
                                 f"{tuple(arr.shape)}")
            if arr.shape[0] != num_frames:
                raise UsageError(f"--depth: {str(p)!r} holds {arr.shape[0]} depth maps but there are {num_frames} "
                                 "frames")
            return torch.as_tensor(np.asarray(arr, dtype=np.float32))
        if p.suffix.lower() in DEPTH_SUFFIXES:
            raise UsageError(f"--depth: a single {p.suffix} depth file cannot describe {num_frames} frames; pass a "
                             "(T,H,W) .npy/.npz or a folder of per-frame depth files")
        if p.exists() and not p.is_dir():
            raise UsageError(f"--depth: {spec!r} is a file but not a (T,H,W) .npy/.npz depth array; expected such a "
                             "file, a folder of per-frame depth files, or a depth model id / folder")
    from worldstereo.depth import get_depth_estimator

    return get_depth_estimator(spec, device=device) if spec is not None else get_depth_estimator(device=device)


def run(args: argparse.Namespace) -> int:
    """Execute ``worldstereo reconstruct``; returns the exit status."""
    from worldstereo.reconstruction import reconstruct
    from worldstereo.io.atomic import atomic_write
    from worldstereo.reconstruction.export import EXPORT_FORMATS

    formats = None
    if args.formats:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        bad = [f for f in formats if f not in EXPORT_FORMATS]
        if bad:
            raise UsageError(f"--formats: unknown {bad}; choose from {', '.join(EXPORT_FORMATS)}")
        if any(f.startswith("mesh_") for f in formats) and args.method != "mesh":
            raise UsageError("--formats: mesh exports need --method mesh")
        if "gaussians" in formats and args.method != "neural_field":
            raise UsageError("--formats: 'gaussians' needs --method neural_field")
    frames = load_frames(Path(args.input))
    T, _, H, W = frames.shape
    cams = load_cameras(Path(args.cameras), H, W)
    if len(cams) != T:
        raise UsageError(f"--cameras: {len(cams)} cameras but the input has {T} frames")
    depth = load_depth_input(args.depth, T, args.device)
    rec = reconstruct(frames, cams, args.method, depth, voxel_size=args.voxel_size, scale_anchor=args.scale_anchor,
                      field_iterations=args.field_iterations)
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
