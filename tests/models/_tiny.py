"""Tiny WorldStereo transformer configs for tests (the reference key-listing configuration)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from worldstereo.models.config import WorldStereoConfig

REPO_ROOT = Path(__file__).resolve().parents[2]

BACKBONE: dict[str, Any] = {
    "patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 36,
    "out_channels": 16, "text_dim": 24, "freq_dim": 256, "ffn_dim": 48, "num_layers": 2, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 20, "added_kv_proj_dim": 32,
    "rope_max_seq_len": 1024,
}
CONTROLNET: dict[str, Any] = {
    "dim": 16, "ffn_dim": 40, "num_heads": 2, "time_embed_dim": 32, "num_layers": 2, "conv_out_dim": 32,
    "add_channels": 7, "mid_channels": 16, "mask_downsample": 1,
}
MEMORY_EXTRA: dict[str, Any] = {"update_ref": True, "main_camera_embedding": True, "camera_embedding_dim": 7,
                                "ref_embedding": True}


def config_dict(model_type: str = "worldstereo-camera", **controlnet_overrides: Any) -> dict[str, Any]:
    cn = dict(CONTROLNET)
    if model_type != "worldstereo-camera":
        cn.update(MEMORY_EXTRA)
    cn.update(controlnet_overrides)
    return {
        "model_type": model_type, "base_model": "placeholder", "nframe": 3, "freeze_backbone": True,
        "scale_map": None, "latent_cond_mode": "first_frame_only", "negative_prompt": "",
        "controlnet_cfg": cn, "transformer": copy.deepcopy(BACKBONE),
    }


def tiny_config(model_type: str = "worldstereo-camera", **controlnet_overrides: Any) -> WorldStereoConfig:
    return WorldStereoConfig.from_dict(config_dict(model_type, **controlnet_overrides))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def inputs(model_type: str = "worldstereo-camera", B: int = 1, F: int = 3, h: int = 4, w: int = 6, R: int = 2,
           seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    d: dict[str, Any] = {
        "hidden_states": torch.randn(B, 36, F, h, w, generator=g),
        "timestep": torch.full((B,), 937.5),
        "encoder_hidden_states": torch.randn(B, 512, 24, generator=g),
        "encoder_hidden_states_image": torch.randn(B, 257, 20, generator=g),
        "render_latent": torch.randn(B, 16, F, h, w, generator=g),
        "render_mask": (torch.rand(B, 1, F, 8 * h, 8 * w, generator=g) > 0.5).float(),
        "camera_embedding": torch.randn(B, 6, F, 8 * h, 8 * w, generator=g),
    }
    if model_type != "worldstereo-camera":
        d.update(
            reference_latent=torch.randn(B, 36, R, h, w, generator=g),
            ref_index=torch.arange(R) % max(F - 1, 1),
            camera_qt=torch.randn(B, F, 7, generator=g),
            camera_qt_ref=torch.randn(B, R, 7, generator=g),
        )
    return d


def shared_docs_dir() -> Path:
    return Path(os.environ.get("WORLDSTEREO_SHARED_DIR", REPO_ROOT.parent / "shared")) / "docs"
