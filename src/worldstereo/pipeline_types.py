"""The public data types of the generation API: :class:`SceneMemory` (both memories of one scene,
shared by its videos) and :class:`GenerationRecord` (what one video's generation ran).

Both are re-exported by :mod:`worldstereo.pipeline`; they live here so that the pipeline stages
(:mod:`worldstereo.pipeline_stages`) and the public functions share them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from PIL import Image
from torch import Tensor

from .camera import CameraTrajectory

__all__ = ["SceneMemory", "GenerationRecord", "ImageInput", "VideoOutput"]

#: What :func:`~worldstereo.pipeline.generate_video` takes as an image: a path, a PIL image or a
#: float tensor (C,H,W) / (1,C,H,W) in [0, 1].
ImageInput = Union[str, Path, Image.Image, Tensor]
#: What it returns: a tensor (T,C,H,W), a numpy array (T,H,W,C) or a list of PIL images.
VideoOutput = Union[Tensor, np.ndarray, List[Image.Image]]


@dataclass
class SceneMemory:
    """Both memories of one scene, shared by the videos generated from one condition image.

    Attributes:
        geometric: the global point cloud (GGM), or None when geometric memory is not used.
        spatial: the bank of frames with cameras (SSM), or None for the camera variant.
        history: one :class:`GenerationRecord` per generated video, in order.
        median_depth: the condition view's median depth in scene units, set by the first video
            (presets of later videos are converted to scene units with it).
    """

    geometric: Any = None
    spatial: Any = None
    history: List["GenerationRecord"] = field(default_factory=list)
    median_depth: Optional[float] = None


@dataclass
class GenerationRecord:
    """What one :func:`generate_video` call ran (also written as the CLI's JSON summary).

    Attributes:
        variant: model type; steps: denoising steps; transformer_calls: forward passes;
        guidance_scale: CFG scale used (1.0 = none); seed: the seed used;
        num_references: reference views given to the model (memory variants);
        ref_index: their RoPE slots; reference_names: their bank names;
        render_video / render_mask: the ControlNet inputs, (F,3,H,W) in [0,1] and (F,1,H,W);
        render_depth: z-depth of the render (F,1,H,W) in scene units, 0 where there is none
            (holes); None without geometric memory;
        coverage: per-frame share of non-hole pixels of ``render_mask`` in [0, 1]
            (:func:`~worldstereo.geometry.coverage.render_coverage`; frame 0, the condition
            view, is 1.0; all 0.0 without geometric memory);
        median_depth: the condition view's median depth in scene units (None when unknown);
        trajectory: the trajectory used, in scene units with K at the generation size;
        conditioning: where the conditioning came from: ``render`` (``"geometric_memory"``,
        ``"given"`` or ``"none"``), ``references`` (``"retrieved"``, ``"condition_view"``,
        ``"given"``; absent for the camera variant), ``latents`` (``"seed"`` or ``"given"``);
        timings: seconds per stage (the sampling and decode times of a batched run are the batch's);
        batch_size: videos denoised together in one batched forward (:func:`generate_videos`).
    """

    variant: str
    steps: int
    transformer_calls: int
    guidance_scale: float
    seed: int
    num_references: int = 0
    ref_index: List[int] = field(default_factory=list)
    reference_names: List[str] = field(default_factory=list)
    render_video: Optional[Tensor] = None
    render_mask: Optional[Tensor] = None
    render_depth: Optional[Tensor] = None
    coverage: List[float] = field(default_factory=list)
    median_depth: Optional[float] = None
    trajectory: Optional[CameraTrajectory] = None
    conditioning: Dict[str, str] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    batch_size: int = 1

    def summary(self) -> Dict[str, Any]:
        """JSON-serialisable summary (no tensors)."""
        return {
            "variant": self.variant,
            "steps": self.steps,
            "transformer_calls": self.transformer_calls,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            "num_references": self.num_references,
            "ref_index": list(self.ref_index),
            "reference_names": list(self.reference_names),
            "coverage": [round(float(c), 6) for c in self.coverage],
            "median_depth": self.median_depth,
            "conditioning": dict(self.conditioning),
            "batch_size": self.batch_size,
            "timings": dict(self.timings),
        }
