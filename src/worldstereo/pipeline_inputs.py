"""Conditioning given by the caller of :func:`~worldstereo.pipeline.generate_video` instead of
being computed from the scene memory: a pre-rendered render video with its hole mask, reference
views with their cameras, and the initial noise.

These are the inputs the reference's run scripts feed their pipelines (``render.mp4`` /
``render_mask.mp4`` of its example folders, the retrieved or single-view reference images, ``latents``),
prepared the way the reference's data loader prepares them (``src/data_utils.py``,
reference-implementation.md §4.1):

* render video: resized to the generation size with bicubic interpolation (``align_corners=False``,
  no antialiasing) and clipped to [0, 1]; frame 0 is later replaced by the condition image;
* hole mask: first channel, nearest-neighbour resize (``mode="nearest"``), thresholded at 0.5
  (1 = hole, not covered by the scene);
* reference views: bicubic resize (no antialiasing, not clipped), as given otherwise.

Every check runs before any model work and names the offending parameter.

Conventions: videos and images are float ``(N, 3, H, W)`` in [0, 1]; masks ``(F, 1, H, W)`` with
1 = hole; cameras are world-to-camera OpenCV 4x4 in the trajectory's world frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .io.video import read_video
from .memory.limits import MEMORY_CONFIG_LIMITS
from .models.vae import latent_shape
from worldstereo.errors import MissingPathError

__all__ = [
    "GivenInputs",
    "load_given_inputs",
    "resize_render_video",
    "resize_render_mask",
    "resize_reference_images",
]

VideoLike = Union[Tensor, str, os.PathLike]

#: values this far outside [0, 1] are rejected (anything closer is clipped)
_RANGE_SLACK = 1e-4


@dataclass
class GivenInputs:
    """Caller-given conditioning of one video, validated and at the generation size.

    Attributes:
        render_video: (F, 3, H, W) float32 in [0, 1] (frame 0 not yet replaced), or None.
        render_mask: (F, 1, H, W) float32 in {0, 1}, 1 = hole, or None.
        reference_images: (R, 3, H, W) float32, or None.
        reference_w2c: (R, 4, 4) float32 world-to-camera, or None.
        ref_index: (R,) int64 RoPE slots in [0, F-2], or None.
        latents: (1, C, F, H/s, W/s) float32 initial noise, or None.
    """

    render_video: Optional[Tensor] = None
    render_mask: Optional[Tensor] = None
    reference_images: Optional[Tensor] = None
    reference_w2c: Optional[Tensor] = None
    ref_index: Optional[Tensor] = None
    latents: Optional[Tensor] = None

    @property
    def has_render(self) -> bool:
        return self.render_video is not None

    @property
    def has_references(self) -> bool:
        return self.reference_images is not None


# ----------------------------------------------------------------------------- resizing


def resize_render_video(video: Tensor, height: int, width: int) -> Tensor:
    """Render video (F, 3, h, w) in [0, 1] -> (F, 3, height, width), bicubic (``align_corners=False``,
    no antialiasing, as the reference's ``F.interpolate``) and clipped to [0, 1]; unchanged when the
    size already matches."""
    if tuple(video.shape[-2:]) == (height, width):
        return video.clamp(0.0, 1.0)
    out = F.interpolate(video.float(), size=(height, width), mode="bicubic", align_corners=False)
    return out.clamp(0.0, 1.0)


def resize_render_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """Hole mask (F, 1, h, w) in [0, 1] -> (F, 1, height, width) in {0, 1}: nearest-neighbour resize
    (``mode="nearest"``, as the reference) then ``>= 0.5`` -> 1 (hole)."""
    m = mask.float()
    if tuple(m.shape[-2:]) != (height, width):
        m = F.interpolate(m, size=(height, width), mode="nearest")
    return (m >= 0.5).float()


def resize_reference_images(images: Tensor, height: int, width: int) -> Tensor:
    """Reference views (R, 3, h, w) -> (R, 3, height, width), bicubic without antialiasing and, as in
    the reference, not clipped; unchanged when the size already matches."""
    if tuple(images.shape[-2:]) == (height, width):
        return images.float()
    return F.interpolate(images.float(), size=(height, width), mode="bicubic", align_corners=False)


# ----------------------------------------------------------------------------- loading + checks


def _read_video_file(path: Any, name: str) -> Tensor:
    p = Path(path)
    if not p.exists():
        raise MissingPathError(f"{name}: video file {str(p)!r} does not exist")
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory, expected a video file")
    try:
        return read_video(p)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _check_range(x: Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
        raise ValueError(f"{name}: expected values in [0, 1], got [{lo:.4g}, {hi:.4g}] (images in [-1, 1] must be "
                         "mapped with (x + 1) / 2)")


def _frames_tensor(value: VideoLike, name: str, num_frames: int, channels: Sequence[int]) -> Tensor:
    """A video argument (tensor or video file) as a float tensor (N, C, h, w) in [0, 1]."""
    if isinstance(value, (str, os.PathLike)):
        video = _read_video_file(value, name)
    elif isinstance(value, Tensor):
        video = value.detach()
    else:
        raise TypeError(f"{name}: expected a tensor or the path of a video file, got {type(value).__name__}")
    if video.ndim == 3 and 1 in channels:
        video = video[:, None]
    allowed = " or ".join(f"(F, {c}, H, W)" for c in channels)
    if video.ndim != 4 or video.shape[1] not in channels:
        raise ValueError(f"{name}: expected shape {allowed}, got {tuple(video.shape)}")
    if video.shape[0] != num_frames:
        raise ValueError(f"{name}: has {video.shape[0]} frames but num_frames={num_frames} (one frame per camera "
                         "of the trajectory)")
    if video.shape[-2] < 1 or video.shape[-1] < 1:
        raise ValueError(f"{name}: empty frames {tuple(video.shape)}")
    if video.dtype == torch.bool:
        video = video.float()
    if not video.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0, 1], got dtype {video.dtype}")
    video = video.float().cpu()
    _check_range(video, name)
    return video


def _check_cameras(w2c: Any, n: int, name: str) -> Tensor:
    if not isinstance(w2c, Tensor):
        try:
            w2c = torch.as_tensor(w2c, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name}: expected a tensor of shape ({n}, 4, 4), got {type(w2c).__name__}") from None
    if w2c.ndim == 2:
        w2c = w2c[None]
    if w2c.shape != (n, 4, 4):
        raise ValueError(f"{name}: expected shape ({n}, 4, 4) (one world-to-camera matrix per reference image), "
                         f"got {tuple(w2c.shape)}")
    if not w2c.is_floating_point() or not torch.isfinite(w2c).all():
        raise ValueError(f"{name}: expected finite float matrices")
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=w2c.dtype)
    if not torch.allclose(w2c[:, 3], bottom.expand(n, 4), atol=1e-5):
        raise ValueError(f"{name}: the last row of every matrix must be [0, 0, 0, 1]")
    return w2c.detach().float().cpu()


def _check_ref_index(ref_index: Any, n: int, num_frames: int) -> Tensor:
    if ref_index is None:
        if n != 1:
            raise ValueError(f"ref_index: required with {n} reference images (the RoPE slot of each, in "
                             f"[0, {num_frames - 2}]); only a single reference defaults to [0]")
        return torch.zeros(1, dtype=torch.long)
    idx = ref_index if isinstance(ref_index, Tensor) else torch.as_tensor(ref_index)
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.is_complex():
        raise TypeError(f"ref_index: expected integers, got dtype {idx.dtype}")
    idx = idx.detach().reshape(-1).long().cpu()
    if idx.numel() != n:
        raise ValueError(f"ref_index: expected {n} slots (one per reference image), got {idx.numel()}")
    if bool((idx < 0).any()) or bool((idx > num_frames - 2).any()):
        raise ValueError(f"ref_index: slots must lie in [0, num_frames - 2] = [0, {num_frames - 2}], got {idx.tolist()}")
    return idx


def _check_latents(model: Any, latents: Any, num_frames: int, height: int, width: int) -> Tensor:
    expected = latent_shape(model.vae, num_frames, height, width)
    if not isinstance(latents, Tensor):
        raise TypeError(f"latents: expected a tensor of shape {expected}, got {type(latents).__name__}")
    if tuple(latents.shape) != expected:
        raise ValueError(f"latents: expected shape {expected} (1, latent channels, num_frames, height / s, "
                         f"width / s), got {tuple(latents.shape)}")
    if not latents.is_floating_point() or not torch.isfinite(latents).all():
        raise ValueError("latents: expected finite float values")
    return latents.detach().float()


def load_given_inputs(
    model: Any,
    *,
    num_frames: int,
    height: int,
    width: int,
    render_video: Optional[VideoLike] = None,
    render_mask: Optional[VideoLike] = None,
    reference_images: Optional[Tensor] = None,
    reference_w2c: Any = None,
    ref_index: Any = None,
    latents: Optional[Tensor] = None,
    point_cloud: Any = None,
    use_geometric_memory: bool = True,
) -> GivenInputs:
    """Validate and load the caller-given conditioning (see :func:`~worldstereo.pipeline.generate_video`).

    Args:
        model: the WorldStereo model (variant and VAE latent shape).
        num_frames, height, width: of the video to generate (already validated).
        render_video: (F, 3, h, w) float in [0, 1] or a video file (e.g. the reference's ``render.mp4``).
        render_mask: (F, 1, h, w), (F, h, w) or (F, 3, h, w) (first channel used) float / bool in
            [0, 1], 1 = hole, or a video file (white = hole).
        reference_images: (R, 3, h, w) float in [0, 1] (memory variants).
        reference_w2c: (R, 4, 4) world-to-camera of the reference images.
        ref_index: (R,) integer RoPE slots in [0, F - 2]; defaults to [0] for one reference.
        latents: initial noise (1, C, F, height / s, width / s).

    Returns:
        :class:`GivenInputs` at the generation size.

    Raises:
        TypeError / ValueError / FileNotFoundError naming the parameter.
    """
    given = GivenInputs()
    if (render_video is None) != (render_mask is None):
        missing = "render_mask" if render_mask is None else "render_video"
        raise ValueError(f"{missing}: render_video and render_mask must be given together")
    if render_video is not None:
        if point_cloud is not None:
            raise ValueError("point_cloud: not used when render_video is given (the render replaces the point-cloud "
                             "render); pass one or the other")
        if not use_geometric_memory:
            raise ValueError("use_geometric_memory: False asks for an empty render, but render_video was given; "
                             "drop one of them")
        video = _frames_tensor(render_video, "render_video", num_frames, (3,))
        mask = _frames_tensor(render_mask, "render_mask", num_frames, (1, 3))
        given.render_video = resize_render_video(video, height, width)
        given.render_mask = resize_render_mask(mask[:, :1], height, width)
    if reference_images is None and (reference_w2c is not None or ref_index is not None):
        which = "reference_w2c" if reference_w2c is not None else "ref_index"
        raise ValueError(f"{which}: given without reference_images")
    if reference_images is not None:
        if not model.is_memory:
            raise ValueError(f"reference_images: the {model.variant} variant takes no reference views (only the "
                             "memory variants do)")
        if not isinstance(reference_images, Tensor):
            raise TypeError(f"reference_images: expected a float tensor (R, 3, H, W) in [0, 1], got "
                            f"{type(reference_images).__name__}")
        refs = reference_images.detach()
        if refs.ndim == 3:
            refs = refs[None]
        if refs.ndim != 4 or refs.shape[1] != 3 or refs.shape[0] < 1:
            raise ValueError(f"reference_images: expected shape (R, 3, H, W) with R >= 1, got {tuple(refs.shape)}")
        most = int(MEMORY_CONFIG_LIMITS["max_references"][1])
        if refs.shape[0] > most:
            raise ValueError(f"reference_images: {refs.shape[0]} reference views; at most {most} are supported "
                             f"(the reference model uses 8)")
        if not refs.is_floating_point():
            raise TypeError(f"reference_images: expected a float tensor in [0, 1], got dtype {refs.dtype}")
        refs = refs.float().cpu()
        _check_range(refs, "reference_images")
        n = refs.shape[0]
        if reference_w2c is None:
            raise ValueError("reference_w2c: required with reference_images (the camera of each reference, "
                             "world-to-camera OpenCV in the trajectory's world frame)")
        given.reference_w2c = _check_cameras(reference_w2c, n, "reference_w2c")
        given.ref_index = _check_ref_index(ref_index, n, num_frames)
        given.reference_images = resize_reference_images(refs, height, width)
    if latents is not None:
        given.latents = _check_latents(model, latents, num_frames, height, width)
    return given
