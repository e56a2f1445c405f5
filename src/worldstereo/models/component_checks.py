"""Bounds of the base components' configs (VAE, UMT5 text encoder, CLIP image encoder), checked
before a component is built.

The diffusers / transformers loaders build a model from ``config.json`` before they read a weight:
a config with ``num_layers: 100000`` or ``d_model: 10**7`` would allocate without bound (or run for
hours) first. :func:`check_component_config` therefore checks every size field against
:data:`COMPONENT_LIMITS` (a few times the Wan2.1 components), and :func:`check_component_size`
builds the component on PyTorch's ``meta`` device (no memory) and compares its parameter count with
what the weight files of the folder hold (safetensors headers only) — a config that describes more
parameters than the files carry is refused before anything is allocated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from worldstereo.config_checks import ConfigError, ConfigTypeError, check_int, read_json_file
from worldstereo.models.checkpoint import CheckpointError, read_safetensors_specs

__all__ = ["COMPONENT_LIMITS", "check_component_config", "check_component_size", "check_fits_in_memory",
           "meta_component", "physical_memory_bytes"]

#: Inclusive bounds of the size fields of each component config (Wan2.1-I2V-14B in the comment).
COMPONENT_LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "vae": {
        "base_dim": (1, 1024),               # 96
        "decoder_base_dim": (1, 1024),       # None (= base_dim)
        "z_dim": (1, 256),                   # 16
        "num_res_blocks": (1, 16),           # 2
        "dim_mult": (1, 64),                 # [1, 2, 4, 4] (each entry; at most 8 entries)
    },
    "text_encoder": {
        "d_model": (1, 32768),               # 4096
        "d_ff": (1, 262144),                 # 10240
        "d_kv": (1, 4096),                   # 64
        "num_layers": (1, 256),              # 24
        "num_decoder_layers": (0, 256),      # 24 (unused by the encoder)
        "num_heads": (1, 1024),              # 64
        "vocab_size": (1, 4194304),          # 256384
        "relative_attention_num_buckets": (1, 65536),   # 32
        "relative_attention_max_distance": (1, 1048576),  # 128
    },
    "image_encoder": {
        "hidden_size": (1, 32768),           # 1280
        "intermediate_size": (1, 262144),    # 5120
        "num_hidden_layers": (1, 256),       # 32
        "num_attention_heads": (1, 1024),    # 16
        "image_size": (1, 16384),            # 224
        "patch_size": (1, 4096),             # 14
        "num_channels": (1, 64),             # 3
        "projection_dim": (1, 32768),        # 1024
    },
}
#: The weight files may hold fewer parameters than the config describes by this many (tied or
#: re-initialised buffers), and no fewer.
_SLACK_PARAMETERS = 1_000_000


def check_component_config(name: str, config: Any, where: str) -> None:
    """Check the size fields of a component config against :data:`COMPONENT_LIMITS`.

    Args:
        name: ``"vae"``, ``"text_encoder"`` or ``"image_encoder"`` (others are not checked).
        config: the parsed ``config.json`` (or constructor keyword arguments).
        where: the file or parameter, for messages.

    Raises:
        ConfigError / ConfigTypeError: naming ``where``, the field and the allowed range.
    """
    limits = COMPONENT_LIMITS.get(name)
    if limits is None:
        return
    if not isinstance(config, Mapping):
        raise ConfigTypeError(f"{where}: expected a JSON object of {name} settings, got {type(config).__name__}")
    for key, (lo, hi) in limits.items():
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if key == "dim_mult":
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 8:
                raise ConfigTypeError(f"{where}: {key}: expected a list of 1 to 8 integers, got {value!r:.80}")
            for i, v in enumerate(value):
                check_int(f"{where}: {key}[{i}]", v, lo, hi)
        else:
            check_int(f"{where}: {key}", value, lo, hi)


def meta_component(name: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """The component ``name`` built from ``config`` on the ``meta`` device (no memory)."""
    kw = {k: v for k, v in config.items() if not str(k).startswith("_")}
    with torch.device("meta"):
        if name == "vae":
            from diffusers import AutoencoderKLWan

            return AutoencoderKLWan.from_config(kw)
        if name == "text_encoder":
            from transformers import UMT5Config, UMT5EncoderModel

            return UMT5EncoderModel(UMT5Config(**kw))
        if name == "image_encoder":
            from transformers import CLIPVisionConfig, CLIPVisionModel

            return CLIPVisionModel(CLIPVisionConfig(**kw))
    raise ValueError(f"name: no meta build for component {name!r}")


def _parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_component_size(name: str, folder: Path) -> None:
    """Before loading ``folder`` (a component sub-folder): its ``config.json`` within
    :data:`COMPONENT_LIMITS`, and the parameters it describes (counted on the ``meta`` device) not
    more than its safetensors weight files hold.

    Raises:
        ConfigError / CheckpointError (ValueErrors) naming the folder and the numbers.
    """
    if name not in COMPONENT_LIMITS:
        return
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return  # the loader reports the missing file
    config = read_json_file(cfg_path, what=f"{name} config")
    check_component_config(name, config, repr(str(cfg_path)))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return
    held = 0
    for f in files:
        for spec in read_safetensors_specs(f).values():
            held += math.prod(spec.shape)
    try:
        described = _parameter_count(meta_component(name, config))
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{str(cfg_path)!r}: not a valid {name} config: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    if described > held + _SLACK_PARAMETERS:
        raise CheckpointError(f"{name} ({str(folder)!r}): the config describes {described} parameters, the weight "
                              f"file(s) hold {held}; config.json does not belong to these weights")


def check_random_component(name: str, config: Mapping[str, Any], where: str) -> None:
    """For a randomly initialised component: the config within :data:`COMPONENT_LIMITS` and its
    float32 parameters (counted on the ``meta`` device) within this machine's memory."""
    if name not in COMPONENT_LIMITS:
        return
    check_component_config(name, config, where)
    try:
        described = _parameter_count(meta_component(name, config))
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ConfigError(f"{where}: not a valid {name} config: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    check_fits_in_memory(described, name, where)


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say, e.g. Windows)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(parameters: int, name: str, where: str) -> None:
    """Refuse a component of ``parameters`` float32 parameters that cannot fit in this machine's
    memory, before it is built (``where``: the config field, for the message)."""
    available = physical_memory_bytes()
    if available is not None and parameters * 4 > available:
        raise ConfigError(f"{where}: the config describes a {name} of {parameters * 4 / 1e9:.1f} GB (float32), more "
                          f"than this machine's {available / 1e9:.1f} GB of memory")
