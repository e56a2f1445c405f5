"""Conditioning encoders of WorldStereo: text (UMT5), image (CLIP vision), image latent (Wan VAE).

Follows reference-implementation.md §4.3:

* text: :func:`prompt_clean` -> tokenizer (pad/truncate to 512) -> UMT5 encoder
  ``last_hidden_state`` -> rows beyond each prompt's true length set to zero -> ``[B, 512, text_dim]``;
* image tokens: CLIP image processor -> ``CLIPVisionModel`` -> ``hidden_states[-2]``
  (``[B, 257, image_dim]`` for the real ViT-H/14 at 224 px), see :func:`encode_image_clip` for the
  reference's preprocessing quirk;
* image latent: :func:`prepare_image_condition` builds the 20-channel I2V condition
  ``cat([mask(4), normalised latents(16)])``;
* memory references: :func:`prepare_reference_latent` builds the 36-channel ``[z, ones(4), z]``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

import ftfy
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from worldstereo.models.vae import keyframe_encode, video_encode

logger = logging.getLogger(__name__)

__all__ = [
    "prompt_clean",
    "encode_prompt",
    "encode_image_clip",
    "clip_pixel_values",
    "clip_image_processor_class",
    "prepare_image_condition",
    "prepare_reference_latent",
    "IMAGE_CONDITION_MODES",
]

IMAGE_CONDITION_MODES = ("first_frame_only", "full_vae")
_WHITESPACE = re.compile(r"\s+")


def prompt_clean(text: str) -> str:
    """Clean a prompt exactly like the reference (diffusers Wan ``prompt_clean``), step for step.

    1. ``ftfy.fix_text`` (repairs mojibake such as ``"â€”"`` -> ``"—"``);
    2. ``html.unescape`` applied twice (``"&amp;amp;"`` -> ``"&"``), then leading/trailing
       whitespace stripped;
    3. every run of whitespace folded to one space, then stripped again.

    Example: ``"A  camera &amp; the   garden "`` -> ``"A camera & the garden"``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


def clip_image_processor_class() -> type:
    """The CLIP image-processor class to instantiate / load: transformers' PIL backend
    (``CLIPImageProcessorPil``) when it exists — transformers >= 5 without torchvision falls back
    to it anyway, with a warning — else ``CLIPImageProcessor``."""
    try:
        from transformers import CLIPImageProcessorPil  # type: ignore[attr-defined]

        return CLIPImageProcessorPil
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def _module_device_dtype(module: Any) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype


def encode_prompt(tokenizer: Any, text_encoder: Any, prompts: str | Sequence[str],
                  max_length: int = 512, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> Tensor:
    """Encode prompts with UMT5; padded positions are zero vectors.

    Args:
        tokenizer: the T5/UMT5 tokenizer (``PreTrainedTokenizerBase``).
        text_encoder: ``UMT5EncoderModel`` (or any encoder returning ``last_hidden_state``).
        prompts: one prompt or a list of ``B`` prompts (cleaned with :func:`prompt_clean`).
        max_length: sequence length of the output; the reference uses 512 and the transformer's
            processor relies on exactly 512 text tokens.
        device: device of the output (default: the text encoder's device).
        dtype: dtype of the output (default: the text encoder's dtype).

    Returns:
        ``[B, max_length, text_dim]``; row ``i`` of sample ``b`` is zero for ``i >= len_b`` where
        ``len_b`` is the tokenized length (special tokens included, truncated to ``max_length``).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts: expected a str or a non-empty sequence of str")
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length: expected a positive int, got {max_length!r}")
    enc_device, enc_dtype = _module_device_dtype(text_encoder)
    cleaned = [prompt_clean(p) for p in prompts]
    tokens = tokenizer(cleaned, padding="max_length", max_length=max_length, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids = tokens.input_ids.to(enc_device)
    mask = tokens.attention_mask.to(enc_device)
    seq_lens = mask.gt(0).sum(dim=1)
    with torch.no_grad():
        hidden = text_encoder(ids, mask).last_hidden_state
    hidden = hidden.to(device=device or enc_device, dtype=dtype or enc_dtype)
    keep = torch.arange(max_length, device=hidden.device)[None, :] < seq_lens.to(hidden.device)[:, None]
    return hidden * keep[:, :, None].to(hidden.dtype)


ImageInput = Image.Image | Tensor | Sequence[Image.Image]


def _to_pil_list(images: ImageInput) -> list[Image.Image]:
    """Tensor ``[3,H,W]``/``[B,3,H,W]`` in [0,1] or PIL(s) -> list of RGB PIL images (uint8)."""
    if isinstance(images, Image.Image):
        return [images.convert("RGB")]
    if isinstance(images, Tensor):
        t = images.detach()
        if t.ndim == 3:
            t = t[None]
        arr = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]
    return [im.convert("RGB") for im in images]


def _check_images(images: ImageInput) -> None:
    if isinstance(images, Image.Image):
        return
    if isinstance(images, Tensor):
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"images: expected a tensor [3, H, W] or [B, 3, H, W] in [0, 1], "
                             f"got shape {list(images.shape)}")
        if not images.is_floating_point():
            raise TypeError("images: tensor input must be floating point in [0, 1]")
        return
    if isinstance(images, Sequence) and images and all(isinstance(i, Image.Image) for i in images):
        return
    raise TypeError("images: expected a PIL image, a list of PIL images or a float tensor "
                    "[B, 3, H, W] in [0, 1]")


def clip_pixel_values(image_processor: Any, images: ImageInput, reference_quirk: bool = True) -> Tensor:
    """CLIP preprocessing -> ``pixel_values [B, 3, S, S]`` (float32).

    ``reference_quirk=True`` reproduces the reference exactly (§7.9): the processor is called with
    ``do_rescale=False`` on a PIL image, so CLIP sees 0..255 values normalised with the [0, 1]
    CLIP mean/std (pixel values up to ~950). Tensor inputs are first quantised to uint8 PIL images
    (``round(255 x)``), as the reference receives a PIL image. ``reference_quirk=False`` does the
    correct preprocessing: PIL images are rescaled by 1/255, tensors in [0, 1] are used as they are
    (not quantised); pixel values then lie in about [-1.8, 2.2].
    """
    _check_images(images)
    if reference_quirk:
        out = image_processor(images=_to_pil_list(images), do_rescale=False, return_tensors="pt")
    elif isinstance(images, Tensor):
        t = images[None] if images.ndim == 3 else images
        out = image_processor(images=t.detach().float().cpu(), do_rescale=False, return_tensors="pt")
    else:
        out = image_processor(images=_to_pil_list(images), do_rescale=True, return_tensors="pt")
    return out.pixel_values.float()


def encode_image_clip(image_processor: Any, image_encoder: Any, images: ImageInput,
                      reference_quirk: bool = True, *, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> Tensor:
    """CLIP image tokens: ``hidden_states[-2]`` of ``CLIPVisionModel`` (penultimate layer).

    Args:
        image_processor: ``CLIPImageProcessor`` (resize/crop/normalise settings from its config).
        image_encoder: ``CLIPVisionModel``.
        images: PIL image(s) or float tensor ``[3,H,W]`` / ``[B,3,H,W]`` in ``[0, 1]``.
        reference_quirk: default ``True`` reproduces the reference's preprocessing (0..255 values
            fed to the normalisation, see :func:`clip_pixel_values`); ``False`` is the correct
            [0, 1] preprocessing (better image conditioning, but not what the released weights saw
            in the reference code).
        device, dtype: of the output (default: the image encoder's).

    Returns:
        ``[B, N, image_dim]`` with ``N = (S/patch)^2 + 1`` (257 for the real ViT-H/14 at 224 px).
    """
    enc_device, enc_dtype = _module_device_dtype(image_encoder)
    pixel_values = clip_pixel_values(image_processor, images, reference_quirk)
    with torch.no_grad():
        out = image_encoder(pixel_values=pixel_values.to(device=enc_device, dtype=enc_dtype),
                            output_hidden_states=True)
    hidden_states = out.hidden_states
    if hidden_states is None or len(hidden_states) < 2:
        raise RuntimeError("image_encoder did not return hidden_states (need output_hidden_states)")
    return hidden_states[-2].to(device=device or enc_device, dtype=dtype or enc_dtype)


def _first_frame_mask(batch: int, num_latent_frames: int, h: int, w: int,
                      device: torch.device) -> Tensor:
    mask = torch.zeros(batch, 4, num_latent_frames, h, w, device=device)
    mask[:, :, 0] = 1.0
    return mask


def prepare_image_condition(vae: Any, image: Tensor, num_latent_frames: int,
                            mode: Literal["first_frame_only", "full_vae"] = "first_frame_only") -> Tensor:
    """I2V image condition ``cat([mask, z_cond])`` (20 channels), reference ``prepare_latents``.

    * ``"first_frame_only"`` (keyframe models): the image encoded as a one-frame video gives latent
      frame 0; one black (zero) frame encoded alone gives a latent repeated for frames 1..F-1.
    * ``"full_vae"``: the causal video ``[image, 4(F-1) zero frames]`` (``4(F-1)+1`` frames) is
      encoded in one go (temporal factor 4) -> ``F`` latent frames.

    Latents are the posterior mode, normalised with the VAE's latents mean/std. The mask has 4
    channels, ones on latent frame 0 and zeros elsewhere.

    Args:
        vae: diffusers ``AutoencoderKLWan``.
        image: ``[B, 3, H, W]`` in ``[-1, 1]``, ``H``/``W`` multiples of 8.
        num_latent_frames: ``F`` >= 1.
        mode: ``"first_frame_only"`` or ``"full_vae"``.

    Returns:
        float32 ``[B, 20, F, H/8, W/8]`` on the VAE's device (channels: 4 mask, 16 latents).
    """
    if mode not in IMAGE_CONDITION_MODES:
        raise ValueError(f"mode: expected one of {IMAGE_CONDITION_MODES}, got {mode!r}")
    if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[1] != 3:
        shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image: expected a tensor [B, 3, H, W] in [-1, 1], got {shape}")
    if not isinstance(num_latent_frames, int) or num_latent_frames < 1:
        raise ValueError(f"num_latent_frames: expected a positive int, got {num_latent_frames!r}")
    f = num_latent_frames
    if mode == "first_frame_only":
        first = keyframe_encode(vae, image[:, :, None])
        if f > 1:
            black = keyframe_encode(vae, torch.zeros_like(image)[:, :, None])
            z = torch.cat([first, black.expand(-1, -1, f - 1, -1, -1)], dim=2)
        else:
            z = first
    else:
        b, c, h, w = image.shape
        zeros = image.new_zeros(b, c, 4 * (f - 1), h, w)
        z = video_encode(vae, torch.cat([image[:, :, None], zeros], dim=2))
        if z.shape[2] != f:  # pragma: no cover - depends on the VAE's temporal factor
            raise ValueError(f"vae: causal encode gave {z.shape[2]} latent frames, expected {f} "
                             "(temporal factor must be 4)")
    mask = _first_frame_mask(z.shape[0], f, z.shape[3], z.shape[4], z.device)
    return torch.cat([mask, z], dim=1)


def prepare_reference_latent(z: Tensor) -> Tensor:
    """Memory reference input ``cat([z, ones_like(z[:, :4]), z], dim=1)`` (reference §4.3).

    Args:
        z: normalised keyframe latents of the reference views ``[B, 16, R, h, w]``.

    Returns:
        ``[B, 36, R, h, w]`` in the dtype of ``z``.
    """
    if not isinstance(z, Tensor) or z.ndim != 5 or z.shape[1] < 4:
        shape = list(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z: expected latents [B, C>=4, R, h, w], got {shape}")
    return torch.cat([z, torch.ones_like(z[:, :4]), z], dim=1)
