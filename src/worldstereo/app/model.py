"""The checkpoint and the depth model of ``worldstereo app``: loaded once, when first needed.

:class:`AppModels` is shared by every browser session of one app. Nothing is loaded at start-up:

* the WorldStereo checkpoint (``--model``) is loaded by the first generation, through
  :class:`~worldstereo.pipeline.WorldStereoPipeline` with ``memory_tier="auto"`` on a CUDA device
  (:func:`~worldstereo.optimization.suggest_memory_tier` for the card's memory, unless a tier is
  given) and resident on the CPU otherwise;
* the depth model is built by the first image without a depth file
  (:func:`~worldstereo.depth.get_depth_estimator`: the Hugging Face cache, else a download, else —
  offline — :class:`~worldstereo.depth.hub.DepthModelUnavailableError` with the way out).

GPU work of all sessions runs one at a time under :attr:`AppModels.gpu_lock` (the interface's queue
already runs one generation at a time; the lock also covers a cancelled generation whose last step
is still finishing).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from worldstereo.depth import DEFAULT_DEPTH_MODEL, get_depth_estimator

from worldstereo.models.loading import resolve_checkpoint

__all__ = ["AppModels", "ModelSpec", "checkpoint_defaults"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """How to load the checkpoint.

    Attributes:
        path: checkpoint folder or Hugging Face id (None: the app previews only).
        variant: model type to load from a reference root (default: the loader's).
        device: torch device (default: ``cuda`` when available, else ``cpu``).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (default bfloat16 on CUDA, float32 on CPU).
        memory_tier: a name of :data:`worldstereo.vram.MEMORY_TIERS` (default on CUDA: the tier
            suggested for the card's memory; on the CPU: everything resident).
        depth_model: the depth model for images without a depth file (default Depth Anything V2 Small).
    """

    path: str | None = None
    variant: str | None = None
    device: str | None = None
    dtype: str | None = None
    memory_tier: str | None = None
    depth_model: str | None = None

    def resolved_device(self) -> str:
        import torch

        if self.device is not None:
            return str(torch.device(self.device))
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        kind = self.resolved_device().split(":")[0]
        if kind == "cpu":
            return "float32"  # half precision is slow or unsupported on the CPU
        return self.dtype or "bfloat16"


def checkpoint_defaults(path: str | None, variant: str | None = None) -> dict[str, Any]:
    """``scale_map`` and ``nframe`` of a local checkpoint folder, read from its ``config.json``
    without loading any weight (``{}`` for a Hub id or no model: nothing is fetched to learn them).

    Raises:
        FileNotFoundError / ValueError: a local folder that is not a loadable checkpoint.
    """
    from pathlib import Path

    if path is None or not Path(path).expanduser().is_dir():
        return {}
    config = resolve_checkpoint(path, variant, local_files_only=True).config
    return {k: config[k] for k in ("scale_map", "nframe", "model_type") if config.get(k) is not None}


class AppModels:
    """The lazily loaded checkpoint and depth model shared by the sessions of one app."""

    def __init__(self, spec: ModelSpec | None = None) -> None:
        self.spec = spec or ModelSpec()
        self.gpu_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._model: Any = None
        self._depth: Any = None
        self.memory_tier: str | None = None
        self.load_seconds: float | None = None

    @property
    def has_checkpoint(self) -> bool:
        """Whether a checkpoint was given (generation is possible)."""
        return self.spec.path is not None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def global_memory_config(self) -> dict[str, Any]:
        """The geometric memory settings generation will use: the loaded model's, else the defaults
        (the same unless the checkpoint overrides them)."""
        if self._model is not None:
            return dict(self._model.global_memory_config)
        from worldstereo.models.worldstereo import DEFAULT_GLOBAL_MEMORY_CONFIG  # lazy: model stack (ftfy, scipy)

        return dict(DEFAULT_GLOBAL_MEMORY_CONFIG)

    def model(self) -> Any:
        """The WorldStereo model, loaded (and placed) by the first call.

        Raises:
            RuntimeError: no checkpoint was given.
        """
        if self.spec.path is None:
            raise RuntimeError("no checkpoint: start the app with --model PATH to generate videos")
        with self._load_lock:
            if self._model is None:
                import torch

                from worldstereo.pipeline import WorldStereoPipeline  # lazy: diffusers

                device = self.spec.resolved_device()
                on_cuda = device.startswith("cuda")
                tier = self.spec.memory_tier or ("auto" if on_cuda else None)
                t0 = time.perf_counter()
                logger.info("loading %s on %s (%s, memory tier %s)", self.spec.path, device,
                            self.spec.resolved_dtype(), tier or "resident")
                pipe = WorldStereoPipeline(self.spec.path, device=device,
                                           torch_dtype=getattr(torch, self.spec.resolved_dtype()),
                                           enable_xformers=False, variant=self.spec.variant, memory_tier=tier)
                self._model = pipe.model
                self.memory_tier = pipe.memory_tier or "resident"
                self.load_seconds = time.perf_counter() - t0
                logger.info("model loaded in %.1f s (memory tier %s)", self.load_seconds, self.memory_tier)
        return self._model

    def depth_estimator(self) -> Any:
        """The depth model for images without a depth file, built by the first call.

        Raises:
            worldstereo.depth.hub.DepthModelUnavailableError: not cached and the Hub is unreachable
                (its message says how to go on: a depth file, or fetching the model once).
        """
        with self._load_lock:
            if self._depth is None:
                spec = self.spec.depth_model or DEFAULT_DEPTH_MODEL
                device = self.spec.resolved_device() if self.spec.device is not None else None
                self._depth = get_depth_estimator(spec, device=device)
        return self._depth

    def describe(self) -> str:
        """One line on the checkpoint for the interface."""
        if self.spec.path is None:
            return "No checkpoint (start with `--model PATH` to generate); scene, camera path and preview work."
        state = (f"loaded on {self.spec.resolved_device()} (memory tier {self.memory_tier}, {self.load_seconds:.0f} s)"
                 if self.loaded else f"loaded on first Generate, on {self.spec.resolved_device()}")
        variant = f" [{self.spec.variant}]" if self.spec.variant else ""
        return f"Checkpoint `{self.spec.path}`{variant}: {state}."
