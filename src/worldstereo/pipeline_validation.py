"""Argument validation for the generation API (`generate_video`, `generate_multi_view`,
`reconstruct_3d`).

Every check here runs before any model work, and each error names the offending parameter and
what was expected.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from .camera import CameraTrajectory

from .geometry import PointCloud

from .io.limits import MAX_VIDEO_BYTES

from .io.paths import as_path

__all__ = [
    "GENERATION_LIMITS",
    "OUTPUT_FORMATS",
    "RECONSTRUCTION_METHODS",
    "check_save_path",
    "validate_generation_args",
    "validate_point_cloud_arg",
]

#: Accepted values of ``output_format``.
OUTPUT_FORMATS = ("tensor", "numpy", "pil", "video")
#: Accepted values of ``reconstruction_method``.
RECONSTRUCTION_METHODS = ("point_cloud", "mesh", "neural_field")
#: Upper bounds of the generation arguments (those of the CLI and the batch jobs): they keep the work
#: and the memory of one call finite. The video (frames x height x width as 8-bit RGB) must also fit
#: :data:`worldstereo.io.limits.MAX_VIDEO_BYTES`.
GENERATION_LIMITS: dict[str, float] = {
    "num_frames": 1024,
    "side": 4096,
    "num_inference_steps": 1000,
    "guidance_scale": 100.0,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_positive_multiple(name: str, value: Any, multiple: int) -> None:
    top = int(GENERATION_LIMITS["side"])
    if not _is_int(value) or not 0 < value <= top or value % multiple != 0:
        raise ValueError(f"{name}: expected a positive integer multiple of {multiple} of at most {top}, got {value!r}")


def check_video_size(num_frames: int, height: int, width: int, names: str = "num_frames/height/width") -> None:
    """The video must fit :data:`~worldstereo.io.limits.MAX_VIDEO_BYTES` as 8-bit RGB.

    Raises:
        ValueError: naming ``names`` and the sizes.
    """
    if num_frames * height * width * 3 > MAX_VIDEO_BYTES:
        raise ValueError(f"{names}: {num_frames} frames of {height}x{width} pixels exceed the video budget of "
                         f"{MAX_VIDEO_BYTES} bytes of RGB (worldstereo.io.limits.MAX_VIDEO_BYTES); use fewer or "
                         f"smaller frames")


def check_save_path(save_path: Any, name: str = "save_path") -> Path:
    """A ``.mp4`` file path in an existing, writable folder (checked before any work).

    Raises:
        TypeError / ValueError: naming ``name``.
    """
    path = as_path(save_path, name)
    try:
        parent = path.expanduser().resolve().parent
        is_dir = path.is_dir()
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{name}: cannot use {str(save_path)!r}: {exc}") from None
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{name}: expected a path ending in .mp4, got {str(save_path)!r}")
    if is_dir:
        raise ValueError(f"{name}: {str(save_path)!r} is a folder, expected a .mp4 file path")
    if not parent.is_dir():
        raise ValueError(f"{name}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the folder {str(parent)!r} is not writable")
    return path


def validate_point_cloud_arg(point_cloud: Any) -> None:
    """``point_cloud``: None, a :class:`~worldstereo.geometry.PointCloud`, or a tensor/array of
    shape (N, 3) or (N, 6) with N > 0 and finite values."""
    if point_cloud is None:
        return
    if isinstance(point_cloud, PointCloud):
        if len(point_cloud) == 0:
            raise ValueError("point_cloud: the point cloud is empty; expected at least one point")
        return
    if not isinstance(point_cloud, torch.Tensor):
        if not isinstance(point_cloud, (np.ndarray, list, tuple)):
            raise TypeError(f"point_cloud: expected a PointCloud or a tensor of shape (N, 3) or (N, 6), got "
                            f"{type(point_cloud).__name__}")
        try:
            point_cloud = torch.as_tensor(point_cloud)
        except Exception as exc:  # noqa: BLE001 - re-raised with the parameter name
            raise TypeError(f"point_cloud: expected a tensor of shape (N, 3) or (N, 6), got {type(point_cloud).__name__}") from exc
    if point_cloud.ndim != 2 or point_cloud.shape[1] not in (3, 6):
        raise ValueError(f"point_cloud: expected shape (N, 3) or (N, 6), got {tuple(point_cloud.shape)}")
    if point_cloud.shape[0] == 0:
        raise ValueError("point_cloud: the point cloud is empty; expected at least one point")
    if point_cloud.is_floating_point() and not torch.isfinite(point_cloud).all():
        raise ValueError("point_cloud: contains non-finite values")
    try:
        PointCloud.from_tensor(point_cloud)  # dtypes and colour ranges
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"point_cloud: {exc}") from None


def validate_generation_args(
    *,
    camera_trajectory: Any,
    num_frames: Any,
    height: Any,
    width: Any,
    num_inference_steps: Any,
    guidance_scale: Any,
    point_cloud: Any,
    use_geometric_memory: Any,
    use_spatial_memory: Any,
    seed: Any,
    output_format: Any,
    save_path: Optional[str | Path],
    progress_callback: Optional[Callable],
    prompt: Any = "",
    negative_prompt: Any = None,
) -> None:
    """Check the arguments of :func:`worldstereo.generate_video` (see its docstring).

    Raises:
        TypeError / ValueError naming the parameter.
    """
    if not isinstance(camera_trajectory, CameraTrajectory):
        raise TypeError(f"camera_trajectory: expected a CameraTrajectory, got {type(camera_trajectory).__name__}")
    lim = GENERATION_LIMITS
    if not _is_int(num_frames) or not 2 <= num_frames <= lim["num_frames"]:
        raise ValueError(f"num_frames: expected an integer in [2, {lim['num_frames']:.0f}], got {num_frames!r}")
    if num_frames != len(camera_trajectory):
        raise ValueError(
            f"num_frames: must match the trajectory length; got num_frames={num_frames} and a trajectory of "
            f"{len(camera_trajectory)} frames (use camera_trajectory.resample({num_frames}))"
        )
    _check_positive_multiple("height", height, 16)
    _check_positive_multiple("width", width, 16)
    check_video_size(num_frames, height, width)
    if not _is_int(num_inference_steps) or not 1 <= num_inference_steps <= lim["num_inference_steps"]:
        raise ValueError(f"num_inference_steps: expected an integer in [1, {lim['num_inference_steps']:.0f}], "
                         f"got {num_inference_steps!r}")
    if not _is_real(guidance_scale) or not math.isfinite(guidance_scale) or \
            not 0 <= guidance_scale <= lim["guidance_scale"]:
        raise ValueError(f"guidance_scale: expected a number in [0, {lim['guidance_scale']:g}], got {guidance_scale!r}")
    validate_point_cloud_arg(point_cloud)
    if not isinstance(use_geometric_memory, bool):
        raise TypeError(f"use_geometric_memory: expected a bool, got {use_geometric_memory!r}")
    if not isinstance(use_spatial_memory, bool):
        raise TypeError(f"use_spatial_memory: expected a bool, got {use_spatial_memory!r}")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise ValueError(f"seed: expected None or an integer in [0, 2**63), got {seed!r}")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format: expected one of {list(OUTPUT_FORMATS)}, got {output_format!r}")
    if output_format == "video" and save_path is None:
        raise ValueError('save_path: output_format="video" requires save_path (the .mp4 file to write)')
    if save_path is not None:
        check_save_path(save_path)
    if progress_callback is not None and not callable(progress_callback):
        raise TypeError(f"progress_callback: expected a callable(step, total_steps, latent) or None, got {progress_callback!r}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt: expected a str or None, got {type(negative_prompt).__name__}")
