"""Keyframe latent space of WorldStereo around the diffusers Wan VAE (``AutoencoderKLWan``).

WorldStereo works on *keyframes*: every video frame is VAE-encoded on its own, as a one-frame
video, so ``F`` frames give ``F`` latent frames (no temporal compression). Latents are normalised
per channel with the VAE config's ``latents_mean`` / ``latents_std``::

    z_normalised = (z - latents_mean) * (1 / latents_std)

(reference-implementation.md §4.6). Decoding reverses the normalisation, decodes every latent
frame on its own and clips to ``[-1, 1]``.

Conventions: videos are ``[B, 3, F, H, W]`` in ``[-1, 1]`` with ``H`` and ``W`` multiples of the
VAE's spatial factor (8); latents are ``[B, z_dim, F, H/8, W/8]`` (``z_dim`` = 16 for Wan 2.1).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "latent_shape",
    "latent_stats",
    "normalize_latents",
    "denormalize_latents",
    "keyframe_encode",
    "keyframe_decode",
    "video_encode",
]


def _vae_param(vae: Any) -> Tensor:
    try:
        return next(vae.parameters())
    except (StopIteration, AttributeError) as exc:  # pragma: no cover - defensive
        raise TypeError("vae: expected a torch module with parameters (AutoencoderKLWan)") from exc


def _z_dim(vae: Any) -> int:
    z_dim = getattr(vae.config, "z_dim", None)
    if z_dim is None:
        raise TypeError("vae: expected a Wan VAE whose config has 'z_dim'")
    return int(z_dim)


def _spatial_factor(vae: Any) -> int:
    factor = getattr(vae.config, "scale_factor_spatial", None)
    return int(factor) if factor else 8


def latent_shape(vae: Any, num_frames: int, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int, int]:
    """Shape ``(batch, z_dim, num_frames, height / s, width / s)`` of the keyframe latents of a
    ``num_frames``-frame video of ``height x width`` pixels (``s`` = the VAE's spatial factor, 8)."""
    factor = _spatial_factor(vae)
    return (int(batch), _z_dim(vae), int(num_frames), int(height) // factor, int(width) // factor)


def latent_stats(vae: Any, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Per-channel latent mean and std from the VAE config.

    Returns:
        ``(mean, std)``, each ``[1, z_dim, 1, 1, 1]`` on ``device`` in ``dtype``.
    """
    z_dim = _z_dim(vae)
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is None or std is None or len(mean) != z_dim or len(std) != z_dim:
        raise ValueError(
            f"vae: config needs 'latents_mean' and 'latents_std' with z_dim={z_dim} values each")
    mean_t = torch.tensor(list(mean), dtype=dtype, device=device).view(1, z_dim, 1, 1, 1)
    std_t = torch.tensor(list(std), dtype=dtype, device=device).view(1, z_dim, 1, 1, 1)
    return mean_t, std_t


def _check_latents(vae: Any, z: Tensor, name: str) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(z).__name__}")
    z_dim = _z_dim(vae)
    if z.ndim != 5 or z.shape[1] != z_dim:
        raise ValueError(f"{name}: expected shape [B, {z_dim}, F, h, w], got {list(z.shape)}")


def normalize_latents(vae: Any, z: Tensor) -> Tensor:
    """``(z - latents_mean) * (1 / latents_std)`` computed in float32 (the reference's form: it
    multiplies by the reciprocal, which can differ from a division in the last bit).

    Args:
        z: raw VAE latents ``[B, z_dim, F, h, w]``.

    Returns:
        float32 tensor of the same shape.
    """
    _check_latents(vae, z, "z")
    mean, std = latent_stats(vae, z.device)
    return (z.float() - mean) * (1.0 / std)


def denormalize_latents(vae: Any, z: Tensor) -> Tensor:
    """Inverse of :func:`normalize_latents`: ``z * latents_std + latents_mean`` in float32."""
    _check_latents(vae, z, "latents")
    mean, std = latent_stats(vae, z.device)
    return z.float() * std + mean


def _check_video(vae: Any, video: Tensor, name: str = "video") -> None:
    if not isinstance(video, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(video).__name__}")
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"{name}: expected shape [B, 3, F, H, W] in [-1, 1], got {list(video.shape)}")
    factor = _spatial_factor(vae)
    if video.shape[-1] % factor or video.shape[-2] % factor:
        raise ValueError(f"{name}: height and width must be multiples of {factor}, got "
                         f"{video.shape[-2]}x{video.shape[-1]}")
    if video.shape[2] < 1:
        raise ValueError(f"{name}: needs at least one frame")


def _encode_mode(vae: Any, video: Tensor) -> Tensor:
    out = vae.encode(video)
    dist = out.latent_dist if hasattr(out, "latent_dist") else out[0]
    return dist.mode()


def keyframe_encode(vae: Any, video: Tensor, *, frames_per_batch: int = 1) -> Tensor:
    """Encode a video keyframe-wise: every frame alone, as a one-frame video.

    Each frame goes through ``vae.encode`` as ``[B, 3, 1, H, W]``, the posterior *mode* is taken
    (no sampling) and the result is normalised with the VAE's ``latents_mean`` / ``latents_std``
    (reference ``keyframe_vae_encode``).

    Args:
        vae: a diffusers ``AutoencoderKLWan`` (any dtype / device; the input is moved to them).
        video: ``[B, 3, F, H, W]`` in ``[-1, 1]``, ``H`` and ``W`` multiples of 8.
        frames_per_batch: number of frames folded into the batch dimension per VAE call. 1 (the
            default) loops frame by frame exactly like the reference; larger values are faster and
            mathematically identical (results may differ in the last float bits).

    Returns:
        float32 normalised latents ``[B, z_dim, F, H/8, W/8]`` on the VAE's device.
    """
    _check_video(vae, video)
    if not isinstance(frames_per_batch, int) or frames_per_batch < 1:
        raise ValueError(f"frames_per_batch: expected a positive int, got {frames_per_batch!r}")
    param = _vae_param(vae)
    b, _, f, h, w = video.shape
    video = video.to(device=param.device, dtype=param.dtype)
    chunks = []
    with torch.no_grad():
        for start in range(0, f, frames_per_batch):
            stop = min(f, start + frames_per_batch)
            n = stop - start
            # [B, 3, n, H, W] -> [B*n, 3, 1, H, W] (frames become independent one-frame videos)
            frames = video[:, :, start:stop].permute(0, 2, 1, 3, 4).reshape(b * n, 3, 1, h, w)
            z = _encode_mode(vae, frames)  # [B*n, z, 1, h', w']
            z = z.reshape(b, n, *z.shape[1:]).squeeze(3).permute(0, 2, 1, 3, 4)
            chunks.append(z)
    return normalize_latents(vae, torch.cat(chunks, dim=2))


def keyframe_decode(vae: Any, latents: Tensor, *, frames_per_batch: int = 1) -> Tensor:
    """Decode normalised keyframe latents frame by frame (reference ``keyframe_vae_decode``).

    Args:
        vae: a diffusers ``AutoencoderKLWan``.
        latents: normalised latents ``[B, z_dim, F, h, w]`` (output of :func:`keyframe_encode` or
            of the sampler).
        frames_per_batch: latent frames folded into the batch dimension per VAE call (see
            :func:`keyframe_encode`).

    Returns:
        float32 video ``[B, 3, F, 8h, 8w]`` clipped to ``[-1, 1]``.
    """
    _check_latents(vae, latents, "latents")
    if not isinstance(frames_per_batch, int) or frames_per_batch < 1:
        raise ValueError(f"frames_per_batch: expected a positive int, got {frames_per_batch!r}")
    param = _vae_param(vae)
    z = denormalize_latents(vae, latents.to(param.device)).to(param.dtype)
    b, c, f, h, w = z.shape
    chunks = []
    with torch.no_grad():
        for start in range(0, f, frames_per_batch):
            stop = min(f, start + frames_per_batch)
            n = stop - start
            zz = z[:, :, start:stop].permute(0, 2, 1, 3, 4).reshape(b * n, c, 1, h, w)
            out = vae.decode(zz)
            frames = out.sample if hasattr(out, "sample") else out[0]  # [B*n, 3, 1, H, W]
            frames = frames.reshape(b, n, *frames.shape[1:]).squeeze(3).permute(0, 2, 1, 3, 4)
            chunks.append(frames.float())
    return torch.cat(chunks, dim=2).clamp(-1.0, 1.0)


def video_encode(vae: Any, video: Tensor) -> Tensor:
    """Causal (temporally compressed) Wan VAE encode of a whole video, posterior mode, normalised.

    Args:
        video: ``[B, 3, T, H, W]`` in ``[-1, 1]``; ``T = 4k + 1`` gives ``k + 1`` latent frames.

    Returns:
        float32 normalised latents ``[B, z_dim, (T - 1)//4 + 1, H/8, W/8]``.
    """
    _check_video(vae, video)
    param = _vae_param(vae)
    with torch.no_grad():
        z = _encode_mode(vae, video.to(device=param.device, dtype=param.dtype))
    return normalize_latents(vae, z)
