"""Pick a depth source from a specification and run it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from worldstereo.depth.base import DepthEstimator, DepthPrediction
from worldstereo.depth.moge_backend import DEFAULT_MOGE_MODEL, MoGeDepthEstimator
from worldstereo.depth.transformers_backend import DEFAULT_DEPTH_MODEL, TransformersDepthEstimator
from worldstereo.depth.user import DEPTH_FILE_SUFFIXES, UserDepth
from worldstereo.devices import check_device

__all__ = ["DepthSource", "get_depth_estimator", "estimate_depth"]

DepthSource = Union[str, os.PathLike, DepthEstimator, Tensor, np.ndarray]


def get_depth_estimator(spec: DepthSource = DEFAULT_DEPTH_MODEL, *, device: str | torch.device | None = None,
                        **kwargs: Any) -> DepthEstimator:
    """Build a depth estimator from a specification.

    Args:
        spec: one of
            * an object that is already a :class:`DepthEstimator` (returned unchanged);
            * a depth map (tensor / numpy ``(H, W)``) or a depth file (``.npy``, ``.npz``, ``.png``)
              -> :class:`UserDepth` (taken as given, in scene units);
            * ``"moge"`` (the reference's MoGe-2 model), ``"moge:<id or path>"``, or any id containing
              ``"moge"`` -> :class:`MoGeDepthEstimator` (needs the optional ``moge`` package);
            * any other string / path: a transformers depth model id or local directory ->
              :class:`TransformersDepthEstimator` (default: Depth Anything V2 Small).
        device: device for model-based estimators.
        **kwargs: passed to the estimator's constructor.

    Raises:
        TypeError: unsupported ``spec`` type.
        ImportError: MoGe requested but not installed.
    """
    if device is not None:
        device = check_device(device, "device")
    if isinstance(spec, (Tensor, np.ndarray)):
        return UserDepth(spec, **kwargs)
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        path = Path(text)
        if path.suffix.lower() in DEPTH_FILE_SUFFIXES and not path.is_dir():
            return UserDepth(path, **kwargs)
        lowered = text.lower()
        if lowered == "moge":
            return MoGeDepthEstimator(DEFAULT_MOGE_MODEL, device=device, **kwargs)
        if lowered.startswith("moge:"):
            return MoGeDepthEstimator(text[len("moge:"):], device=device, **kwargs)
        if "moge" in lowered and not path.is_dir():
            return MoGeDepthEstimator(text, device=device, **kwargs)
        if path.is_dir() and not (path / "config.json").is_file():
            raise ValueError(f"depth source: the folder {text!r} has no config.json; expected a transformers depth "
                             f"model folder, a Hugging Face id (owner/name), 'moge', or a depth file "
                             f"({', '.join(DEPTH_FILE_SUFFIXES)})")
        if os.path.lexists(path) and not path.is_dir():
            raise ValueError(f"depth source: {text!r} is a file but not a depth file ({', '.join(DEPTH_FILE_SUFFIXES)}); "
                             f"expected a depth file, a model folder or id, or 'moge'")
        return TransformersDepthEstimator(text, device=device, **kwargs)
    if callable(spec):
        return spec  # type: ignore[return-value]
    raise TypeError(
        "depth source: expected a model id/path, 'moge', a depth file, a depth map tensor/array, or a "
        f"DepthEstimator, got {type(spec).__name__}"
    )


def estimate_depth(image: Tensor, source: DepthSource = DEFAULT_DEPTH_MODEL, *,
                   device: str | torch.device | None = None) -> DepthPrediction:
    """Estimate z-depth for ``image`` ``(3, H, W)`` float in [0, 1] with ``source`` (see :func:`get_depth_estimator`).

    Returns:
        :class:`DepthPrediction` of size ``(H, W)``.

    Raises:
        ValueError: ``image`` is not ``(3, H, W)``, or the depth does not fit the image.
    """
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a (3,H,W) tensor in [0,1], got {getattr(image, 'shape', type(image))}")
    estimator = get_depth_estimator(source, device=device)
    pred = estimator(image)
    if not isinstance(pred, DepthPrediction):
        raise TypeError(f"depth source: the estimator returned {type(pred).__name__}, expected DepthPrediction")
    if tuple(pred.depth.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"depth source: predicted depth {tuple(pred.depth.shape)} does not match the image "
                         f"size {tuple(image.shape[-2:])}")
    return pred
