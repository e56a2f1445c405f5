"""Optional MoGe backend (https://github.com/microsoft/MoGe; not on PyPI: install it from GitHub).

MoGe predicts a point map, z-depth, a validity mask and normalised intrinsics. MoGe-2 models are
metric; MoGe-1 models are scale-invariant (then normalised to median depth 1.0).
"""

from __future__ import annotations

import importlib
import logging
import os

import torch
from torch import Tensor

from worldstereo.depth.base import DepthPrediction, normalize_median_depth

__all__ = ["MoGeDepthEstimator", "DEFAULT_MOGE_MODEL"]

logger = logging.getLogger(__name__)

#: The model used by the reference implementation.
DEFAULT_MOGE_MODEL = "Ruicheng/moge-2-vitl-normal"

_INSTALL_HINT = (
    "MoGe depth needs the 'moge' package, which is not on PyPI; install it with "
    "`pip install git+https://github.com/microsoft/MoGe.git`, or use a transformers depth model "
    "(e.g. 'depth-anything/Depth-Anything-V2-Small-hf') or your own depth map instead"
)


class MoGeDepthEstimator:
    """Depth (and intrinsics) from a MoGe model.

    Args:
        model: Hugging Face id or local path accepted by ``MoGeModel.from_pretrained``.
        version: 1 or 2; default: 2 when ``"moge-2"`` appears in ``model``, else 1.
        device: torch device; default CUDA when available, else CPU.
        use_fp16: run MoGe in half precision (CUDA only).
        resolution_level: MoGe's speed/quality knob (0-9).

    Calling it with ``(3, H, W)`` float in [0, 1] returns a :class:`DepthPrediction` with
    ``K`` = MoGe's normalised intrinsics scaled to pixels (row 0 by W, row 1 by H).

    Raises:
        ImportError: the ``moge`` package is not installed (message says how to install it).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MOGE_MODEL,
        *,
        version: int | None = None,
        device: str | torch.device | None = None,
        use_fp16: bool = False,
        resolution_level: int = 9,
    ) -> None:
        name = str(model)
        if version is None:
            version = 2 if "moge-2" in name.lower() else 1
        if version not in (1, 2):
            raise ValueError(f"version: expected 1 or 2, got {version!r}")
        try:
            module = importlib.import_module(f"moge.model.v{version}")
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.model = module.MoGeModel.from_pretrained(name).to(self.device).eval()
        self.version = version
        self.model_name = name
        self.use_fp16 = bool(use_fp16) and self.device.type == "cuda"
        self.resolution_level = int(resolution_level)
        logger.info("MoGe-%d depth model %s on %s", version, name, self.device)

    @property
    def is_metric(self) -> bool:
        return self.version == 2

    @torch.no_grad()
    def __call__(self, image: Tensor) -> DepthPrediction:
        """Estimate z-depth and intrinsics for ``image`` ``(3, H, W)`` float in [0, 1]."""
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image: expected a (3,H,W) tensor in [0,1], got {getattr(image, 'shape', type(image))}")
        h, w = int(image.shape[1]), int(image.shape[2])
        out = self.model.infer(image.to(self.device).float(), resolution_level=self.resolution_level,
                               use_fp16=self.use_fp16)
        depth = out["depth"].float()
        valid = out["mask"].bool() if "mask" in out else torch.ones_like(depth, dtype=torch.bool)
        valid = valid & torch.isfinite(depth) & (depth > 0)
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        if self.version == 1:
            depth = normalize_median_depth(depth, valid)
        elif not bool(valid.any()):
            raise ValueError("MoGe predicted no valid depth for this image")
        K = None
        if out.get("intrinsics") is not None:
            K = out["intrinsics"].float().reshape(3, 3).clone()
            K[0] = K[0] * w
            K[1] = K[1] * h
            K = K.to(image.device)
        return DepthPrediction(depth=depth.to(image.device), valid_mask=valid.to(image.device),
                               is_metric=self.is_metric, K=K)
