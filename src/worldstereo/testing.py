"""Tiny random WorldStereo models for tests, examples and CI (no network, CPU, seconds).

:func:`tiny_model` builds a complete :class:`~worldstereo.models.worldstereo.WorldStereo` with
random weights: the transformer (same tiny sizes as the conformance data: 2 heads x 16, 3 blocks,
ControlNet width 24), a tiny ``AutoencoderKLWan``, a tiny ``UMT5EncoderModel``, a tiny
``CLIPVisionModel`` (32 px images, 8 px patches -> 17 image tokens) with a matching
``CLIPImageProcessor``, and a word-level tokenizer built in memory with ``tokenizers``.
:func:`save_tiny_model` writes it with ``save_pretrained`` so that
``WorldStereo.from_pretrained(folder)`` works offline.

The outputs of such models are meaningless; they exercise shapes, plumbing and serialization.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import torch

from worldstereo.sampling.unipc import DEFAULT_UNIPC_CONFIG

__all__ = [
    "save_tiny_depth_model",
    "TINY_TRANSFORMER_CONFIG",
    "TINY_CONTROLNET_CONFIG",
    "TINY_VAE_CONFIG",
    "TINY_TEXT_ENCODER_CONFIG",
    "TINY_IMAGE_ENCODER_CONFIG",
    "TINY_IMAGE_PROCESSOR_CONFIG",
    "TINY_VOCABULARY",
    "tiny_vdm_config",
    "tiny_vae",
    "tiny_text_encoder",
    "tiny_image_encoder",
    "tiny_image_processor",
    "tiny_tokenizer",
    "tiny_model",
    "save_tiny_model",
]

#: Backbone (``WanTransformer3DModel`` kwargs), as in the conformance data.
TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 24,
    "freq_dim": 256,
    "ffn_dim": 64,
    "num_layers": 3,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 20,
    "added_kv_proj_dim": 32,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}

#: ``controlnet_cfg`` of the camera model; memory models add the keys of :func:`tiny_vdm_config`.
TINY_CONTROLNET_CONFIG: dict[str, Any] = {
    "dim": 24,
    "ffn_dim": 40,
    "num_heads": 2,
    "time_embed_dim": 32,
    "num_layers": 2,
    "conv_out_dim": 32,
    "add_channels": 7,
    "mid_channels": 16,
    "mask_downsample": 1,
}

#: ``AutoencoderKLWan`` kwargs (z_dim 16 as the real Wan 2.1 VAE, spatial factor 8).
TINY_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 8,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}

#: ``UMT5Config`` kwargs; ``d_model`` = the transformer's ``text_dim``.
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 64,
    "d_model": 24,
    "d_kv": 8,
    "d_ff": 32,
    "num_layers": 1,
    "num_heads": 3,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

#: ``CLIPVisionConfig`` kwargs; ``hidden_size`` = the transformer's ``image_dim``.
TINY_IMAGE_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 20,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 20,
}

#: ``CLIPImageProcessor`` kwargs matching the tiny image encoder (32 px crop).
TINY_IMAGE_PROCESSOR_CONFIG: dict[str, Any] = {
    "size": {"shortest_edge": 32},
    "crop_size": {"height": 32, "width": 32},
}

#: Words of the tiny tokenizer (ids 3...); ids 0, 1, 2 are ``<pad>``, ``</s>``, ``<unk>``.
TINY_VOCABULARY: tuple[str, ...] = tuple(
    "a an the of and in on at to with from camera scene video image room house street tree trees "
    "sky light lights moving moves forward backward left right up down view garden city night day "
    "water mountain road car table window door wall floor red green blue".split())

_UNIPC_CONFIG: dict[str, Any] = {"_class_name": "UniPCMultistepScheduler", **DEFAULT_UNIPC_CONFIG}

VARIANTS = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")


def tiny_vdm_config(variant: str = "worldstereo-memory") -> dict[str, Any]:
    """``vdm_config`` for ``WorldStereo(vdm_config=...)``: the reference ``config.json`` schema
    (with a ``transformer`` backbone object) plus the tiny component configs under ``vae``,
    ``text_encoder``, ``image_encoder``, ``image_processor`` and ``scheduler``.

    Args:
        variant: ``"worldstereo-camera"``, ``"worldstereo-memory"`` or ``"worldstereo-memory-dmd"``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    controlnet = dict(TINY_CONTROLNET_CONFIG)
    if variant != "worldstereo-camera":
        controlnet.update(update_ref=False, main_camera_embedding=True, camera_embedding_dim=7,
                          ref_embedding=True)
    cfg: dict[str, Any] = {
        "model_type": variant,
        "base_model": "",
        "nframe": 4,
        "freeze_backbone": True,
        "scale_map": [[48, 64], [64, 48], [64, 64]],
        "latent_cond_mode": "first_frame_only",
        "negative_prompt": "",
        "controlnet_cfg": controlnet,
        "transformer": copy.deepcopy(TINY_TRANSFORMER_CONFIG),
        "vae": copy.deepcopy(TINY_VAE_CONFIG),
        "text_encoder": copy.deepcopy(TINY_TEXT_ENCODER_CONFIG),
        "image_encoder": copy.deepcopy(TINY_IMAGE_ENCODER_CONFIG),
        "image_processor": copy.deepcopy(TINY_IMAGE_PROCESSOR_CONFIG),
        "scheduler": copy.deepcopy(_UNIPC_CONFIG),
    }
    if variant == "worldstereo-memory-dmd":
        cfg.update(dmd_start_steps=250, dmd_end_steps=1000, gen_shift=5.0, dmd_steps=4)
    return cfg


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Fork the global CPU RNG and seed it; the caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_vae(seed: int = 0, config: dict[str, Any] | None = None) -> Any:
    """Random tiny ``AutoencoderKLWan`` (z_dim 16, spatial factor 8), eval mode, float32."""
    from diffusers import AutoencoderKLWan

    with _seeded(seed):
        return AutoencoderKLWan(**(config or TINY_VAE_CONFIG)).eval()


def tiny_text_encoder(seed: int = 0, config: dict[str, Any] | None = None) -> Any:
    """Random tiny ``UMT5EncoderModel`` (``d_model`` 24), eval mode, float32."""
    from transformers import UMT5Config, UMT5EncoderModel

    with _seeded(seed):
        return UMT5EncoderModel(UMT5Config(**(config or TINY_TEXT_ENCODER_CONFIG))).eval()


def tiny_image_encoder(seed: int = 0, config: dict[str, Any] | None = None) -> Any:
    """Random tiny ``CLIPVisionModel`` (hidden 20, 32 px, 17 tokens), eval mode, float32."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with _seeded(seed):
        return CLIPVisionModel(CLIPVisionConfig(**(config or TINY_IMAGE_ENCODER_CONFIG))).eval()


def tiny_image_processor(config: dict[str, Any] | None = None) -> Any:
    """``CLIPImageProcessor`` with a 32 px resize/crop (CLIP mean/std, bicubic)."""
    from worldstereo.models.conditioning import clip_image_processor_class  # lazy: model stack (ftfy)

    return clip_image_processor_class()(**(config or TINY_IMAGE_PROCESSOR_CONFIG))


def tiny_tokenizer(model_max_length: int = 512) -> Any:
    """Word-level fast tokenizer built in memory (no download): lower-cases, splits on whitespace
    and punctuation, maps unknown words to ``<unk>`` and appends ``</s>`` like the T5 tokenizer."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in TINY_VOCABULARY:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def tiny_model(variant: str = "worldstereo-memory", seed: int = 0) -> Any:
    """A complete random tiny :class:`~worldstereo.models.worldstereo.WorldStereo` (CPU, float32,
    eval mode). Same ``(variant, seed)`` -> identical weights; the global RNG state is untouched.
    """
    from worldstereo.models.worldstereo import WorldStereo  # lazy: model stack (ftfy, scipy)

    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    with _seeded(seed):
        model = WorldStereo(vdm_config=tiny_vdm_config(variant), components={"tokenizer": tiny_tokenizer()})
    return model.eval()


def save_tiny_model(folder: str | os.PathLike, variant: str = "worldstereo-memory", seed: int = 0) -> Path:
    """Build :func:`tiny_model` and ``save_pretrained`` it to ``folder`` (loadable offline with
    ``WorldStereo.from_pretrained(folder)``). Returns the folder path."""
    model = tiny_model(variant, seed)
    model.save_pretrained(folder)
    return Path(folder)


def save_tiny_depth_model(folder: str | os.PathLike, depth_estimation_type: str = "relative", seed: int = 0) -> Path:
    """Save a tiny random Depth Anything (transformers ``DepthAnythingForDepthEstimation`` with a
    4-layer DINOv2 backbone of width 16, and its image processor) to ``folder``, loadable offline
    with :class:`~worldstereo.depth.TransformersDepthEstimator`. Its output is a smooth positive
    map (the head bias is set to 1), not a depth estimate. Returns the folder path.

    Args:
        depth_estimation_type: ``"relative"`` (disparity) or ``"metric"`` (metres, at most 20).
    """
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt import DPTImageProcessorPil

    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            patch_size=14, image_size=56, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
                              fusion_hidden_size=8, head_hidden_size=8, depth_estimation_type=depth_estimation_type,
                              max_depth=20)
    with _seeded(seed):
        model = DepthAnythingForDepthEstimation(cfg).eval()
        # random init gives an (almost) all-zero ReLU output; make the map non-trivial and positive
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
            model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                         do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406],
                         image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return Path(folder)
