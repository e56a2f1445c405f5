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

import torch

__all__ = [
    "OUTPUT_FORMATS",
    "RECONSTRUCTION_METHODS",
    "validate_generation_args",
    "validate_point_cloud_arg",
]

#: Accepted values of ``output_format``.
OUTPUT_FORMATS = ("tensor", "numpy", "pil", "video")
#: Accepted values of ``reconstruction_method``.
RECONSTRUCTION_METHODS = ("point_cloud", "mesh", "neural_field")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_positive_multiple(name: str, value: Any, multiple: int) -> None:
    if not _is_int(value) or value <= 0 or value % multiple != 0:
        raise ValueError(f"{name}: expected a positive integer multiple of {multiple}, got {value!r}")


def validate_point_cloud_arg(point_cloud: Any) -> None:
    """``point_cloud``: None, a :class:`~worldstereo.geometry.PointCloud`, or a tensor/array of
    shape (N, 3) or (N, 6) with N > 0 and finite values."""
    if point_cloud is None:
        return
    from .geometry import PointCloud

    if isinstance(point_cloud, PointCloud):
        if len(point_cloud) == 0:
            raise ValueError("point_cloud: the point cloud is empty; expected at least one point")
        return
    if not isinstance(point_cloud, torch.Tensor):
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
    from .camera import CameraTrajectory

    if not isinstance(camera_trajectory, CameraTrajectory):
        raise TypeError(f"camera_trajectory: expected a CameraTrajectory, got {type(camera_trajectory).__name__}")
    if not _is_int(num_frames) or num_frames < 2:
        raise ValueError(f"num_frames: expected an integer >= 2, got {num_frames!r}")
    if num_frames != len(camera_trajectory):
        raise ValueError(
            f"num_frames: must match the trajectory length; got num_frames={num_frames} and a trajectory of "
            f"{len(camera_trajectory)} frames (use camera_trajectory.resample({num_frames}))"
        )
    _check_positive_multiple("height", height, 16)
    _check_positive_multiple("width", width, 16)
    if not _is_int(num_inference_steps) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps: expected a positive integer, got {num_inference_steps!r}")
    if not _is_real(guidance_scale) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale: expected a finite number >= 0, got {guidance_scale!r}")
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
        if not isinstance(save_path, (str, Path)):
            raise TypeError(f"save_path: expected a str or Path, got {type(save_path).__name__}")
        parent = Path(save_path).expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"save_path: the folder {str(parent)!r} does not exist")
        if Path(save_path).suffix.lower() != ".mp4":
            raise ValueError(f"save_path: expected a path ending in .mp4, got {str(save_path)!r}")
        if Path(save_path).is_dir():
            raise ValueError(f"save_path: {str(save_path)!r} is a folder, expected a .mp4 file path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"save_path: the folder {str(parent)!r} is not writable")
    if progress_callback is not None and not callable(progress_callback):
        raise TypeError(f"progress_callback: expected a callable(step, total_steps, latent) or None, got {progress_callback!r}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt: expected a str or None, got {type(negative_prompt).__name__}")
