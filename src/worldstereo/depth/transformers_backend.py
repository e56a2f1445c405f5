"""Monocular depth with Hugging Face transformers (Depth Anything V1/V2, DPT, ZoeDepth, GLPN, Depth Pro...)."""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from worldstereo.depth.base import DepthPrediction, normalize_median_depth
from worldstereo.depth.hub import DepthModelUnavailableError, check_hub_access
from worldstereo.errors import MissingPathError

__all__ = ["TransformersDepthEstimator", "DEFAULT_DEPTH_MODEL"]

logger = logging.getLogger(__name__)

#: Default relative-depth model (Apache-2.0).
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"

#: ``config.model_type`` values whose ``predicted_depth`` is metric depth (metres).
_METRIC_MODEL_TYPES = frozenset({"zoedepth", "glpn", "depth_pro"})

PredictionType = Literal["auto", "relative_disparity", "metric_depth"]

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(model: str, local_files_only: bool) -> tuple[Any, Any]:
    """``(processor, model)`` of a local folder or a Hub id: the cached copy without network when
    there is one; else, unless ``local_files_only``, a download after :func:`check_hub_access`
    (which fails in seconds, with the way out, when offline or without network). The cache is
    looked up before transformers is imported, so that a failure costs no import time."""

    def load(local: bool) -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        return (AutoImageProcessor.from_pretrained(model, local_files_only=local),
                AutoModelForDepthEstimation.from_pretrained(model, local_files_only=local))

    if os.path.isdir(model):
        return load(True)
    if not _HUB_ID.fullmatch(model):
        raise MissingPathError(f"model: {model!r} is neither a local model folder nor a Hugging Face id (owner/name)")
    if _in_hub_cache(model):
        try:
            return load(True)  # the cache: no network access at all
        except OSError:
            if local_files_only:
                raise
    elif local_files_only:
        raise OSError(f"model: {model!r} is not in the local Hugging Face cache (local_files_only=True)")
    check_hub_access(model)
    logger.info("downloading depth model %s from the Hugging Face Hub", model)
    return load(False)


def _in_hub_cache(model: str) -> bool:
    """Whether the Hub id's ``config.json`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


class TransformersDepthEstimator:
    """Depth estimation with a transformers ``AutoModelForDepthEstimation`` + ``AutoImageProcessor``.

    Relative models (Depth Anything "relative", DPT) predict an affine-invariant *disparity*; it is
    converted to depth as ``1 / disparity`` where the disparity exceeds ``min_disparity_ratio`` times
    its maximum (elsewhere — sky, far background — the pixel is invalid, depth 0), and the depth is
    normalised so that its median over valid pixels is 1.0. Metric models (Depth Anything "metric",
    ZoeDepth, GLPN, Depth Pro) keep their metric depth. Depth Pro's predicted field of view becomes
    ``DepthPrediction.K``.

    Args:
        model: Hugging Face id or a local directory holding the model's ``config.json``, weights
            and ``preprocessor_config.json``. A cached id loads without touching the network; an
            uncached one is downloaded, or raises :class:`~worldstereo.depth.hub.DepthModelUnavailableError`
            within seconds when ``HF_HUB_OFFLINE=1`` is set or the Hub does not answer (see
            :mod:`worldstereo.depth.hub`).
        device: torch device; default CUDA when available, else CPU.
        torch_dtype: model dtype (default float32).
        prediction_type: ``"auto"`` (from the model config), ``"relative_disparity"`` or ``"metric_depth"``.
        min_disparity_ratio: relative models only, see above.
        local_files_only: never touch the network.

    Calling the estimator with an image ``(3, H, W)`` float in [0, 1] returns a
    :class:`DepthPrediction` of size ``(H, W)``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_DEPTH_MODEL,
        *,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        prediction_type: PredictionType = "auto",
        min_disparity_ratio: float = 1e-3,
        local_files_only: bool = False,
    ) -> None:
        if prediction_type not in ("auto", "relative_disparity", "metric_depth"):
            raise ValueError(
                f"prediction_type: expected 'auto', 'relative_disparity' or 'metric_depth', got {prediction_type!r}"
            )
        if not (0.0 <= min_disparity_ratio < 1.0):
            raise ValueError(f"min_disparity_ratio: expected a value in [0, 1), got {min_disparity_ratio!r}")
        self.model_name = str(model)
        self.device = torch.device(device) if device is not None else _default_device()
        self.dtype = torch_dtype or torch.float32
        try:
            self.processor, self.model = _load(self.model_name, local_files_only)
        except DepthModelUnavailableError:
            raise
        except OSError as exc:
            raise OSError(
                f"model: cannot load depth model {self.model_name!r} (a Hugging Face id needs network access or "
                f"a cached copy; a local directory needs config.json, weights and preprocessor_config.json): {exc}"
            ) from exc
        self.model.to(device=self.device, dtype=self.dtype).eval()
        cfg = self.model.config
        if prediction_type == "auto":
            metric = cfg.model_type in _METRIC_MODEL_TYPES or getattr(cfg, "depth_estimation_type", None) == "metric"
            prediction_type = "metric_depth" if metric else "relative_disparity"
        self.prediction_type: PredictionType = prediction_type
        self.min_disparity_ratio = float(min_disparity_ratio)
        logger.info("depth model %s (%s) on %s", self.model_name, self.prediction_type, self.device)

    @property
    def is_metric(self) -> bool:
        return self.prediction_type == "metric_depth"

    @torch.no_grad()
    def __call__(self, image: Tensor) -> DepthPrediction:
        """Estimate z-depth for ``image`` ``(3, H, W)`` float in [0, 1]; returns a ``(H, W)`` prediction."""
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image: expected a (3,H,W) tensor in [0,1], got {getattr(image, 'shape', type(image))}")
        h, w = int(image.shape[1]), int(image.shape[2])
        inputs = self.processor(images=image.detach().float().cpu().clamp(0, 1), return_tensors="pt",
                                do_rescale=False)
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        out = self.model(pixel_values=pixel_values)
        pred = out.predicted_depth
        if pred.ndim == 4:
            pred = pred[:, 0]
        pred = F.interpolate(pred[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        K = None
        fov = getattr(out, "field_of_view", None)
        if fov is not None:
            # Depth Pro: horizontal field of view in degrees
            fx = 0.5 * w / math.tan(math.radians(float(fov.reshape(-1)[0])) / 2)
            K = torch.tensor([[fx, 0.0, w / 2], [0.0, fx, h / 2], [0.0, 0.0, 1.0]], device=image.device)
        if self.prediction_type == "metric_depth":
            depth = pred
            valid = torch.isfinite(depth) & (depth > 0)
            depth = torch.where(valid, depth, torch.zeros_like(depth))
            if not bool(valid.any()):
                raise ValueError("depth model predicted no valid depth for this image")
        else:
            disp = torch.where(torch.isfinite(pred), pred, torch.zeros_like(pred))
            dmax = float(disp.max())
            if dmax <= 0:
                raise ValueError("depth model predicted no positive disparity for this image")
            valid = disp > self.min_disparity_ratio * dmax
            depth = normalize_median_depth(torch.where(valid, 1.0 / disp.clamp_min(1e-12), torch.zeros_like(disp)),
                                           valid)
        return DepthPrediction(depth=depth.to(image.device), valid_mask=valid.to(image.device),
                               is_metric=self.is_metric, K=K)
