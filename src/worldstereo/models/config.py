"""Configuration schema of the WorldStereo transformer (reference ``config.json`` layout).

A reference checkpoint sub-folder (``worldstereo-camera``, ``worldstereo-memory``,
``worldstereo-memory-dmd``) holds a ``config.json`` with the top-level keys of
:class:`WorldStereoConfig`, a ``controlnet_cfg`` object (:class:`ControlNetConfig`) and, in the
conformance data and in our own saved folders, a ``transformer`` object with the diffusers
``WanTransformer3DModel`` keyword arguments of the backbone (:class:`WanBackboneConfig`). A real
reference checkpoint takes the backbone config from ``base_model`` instead; pass it explicitly then.

All classes are plain dataclasses; ``from_dict`` validates the type and the bounds of every field
(:data:`BACKBONE_LIMITS`, :data:`CONTROLNET_LIMITS`, :data:`WORLDSTEREO_LIMITS`; NaN and infinities
refused; booleans never accepted as numbers) before anything is built, and raises
:class:`~worldstereo.config_checks.ConfigError` (a ``ValueError``) or
:class:`~worldstereo.config_checks.ConfigTypeError` (a ``TypeError`` and a ``ValueError``) naming the
offending key (``transformer.num_layers``) and the allowed range.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from worldstereo.config_checks import (
    ConfigError,
    ConfigTypeError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_str,
    read_json_file,
)
from worldstereo.errors import MissingPathError

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "MAX_WIDTH",
    "BACKBONE_LIMITS",
    "CONTROLNET_LIMITS",
    "WORLDSTEREO_LIMITS",
    "MODEL_TYPES",
    "MEMORY_MODEL_TYPES",
    "WanBackboneConfig",
    "ControlNetConfig",
    "WorldStereoConfig",
    "read_config_json",
]

logger = logging.getLogger(__name__)

#: Valid ``model_type`` values (= sub-folder names of the reference checkpoint repository).
MODEL_TYPES: tuple[str, ...] = ("worldstereo-camera", "worldstereo-memory", "worldstereo-memory-dmd")
#: Model types that use the memory transformer (SSM blocks, references, camera tokens).
MEMORY_MODEL_TYPES: tuple[str, ...] = ("worldstereo-memory", "worldstereo-memory-dmd")


#: Largest backbone / ControlNet width accepted (Wan2.1-I2V-14B: 5120).
MAX_WIDTH = 32768
#: Inclusive bounds of the integer sizes of :class:`WanBackboneConfig` (Wan2.1-I2V-14B value in the
#: comment). Generous — a few times the real model — but finite, so that a config file cannot make
#: the loader build an unbounded model.
BACKBONE_LIMITS: dict[str, tuple[int, int]] = {
    "num_attention_heads": (1, 256),     # 40
    "attention_head_dim": (2, 1024),     # 128
    "in_channels": (1, 1024),            # 36
    "out_channels": (1, 1024),           # 16
    "text_dim": (1, MAX_WIDTH),          # 4096
    "freq_dim": (1, 8192),               # 256
    "ffn_dim": (1, 262144),              # 13824
    "num_layers": (1, 256),              # 40
    "rope_max_seq_len": (1, 65536),      # 1024
    "image_dim": (1, MAX_WIDTH),         # 1280
    "patch_size": (1, 16),               # (1, 2, 2), each entry
}
#: Inclusive bounds of the integer sizes of :class:`ControlNetConfig` (reference value in the comment).
CONTROLNET_LIMITS: dict[str, tuple[int, int]] = {
    "dim": (2, MAX_WIDTH),               # 1024 (memory) / 768 (camera)
    "ffn_dim": (1, 262144),              # 4096
    "num_heads": (1, 256),               # 16 / 12
    "time_embed_dim": (1, MAX_WIDTH),    # = backbone width
    "num_layers": (1, 256),              # 6
    "conv_out_dim": (1, MAX_WIDTH),      # = backbone width
    "add_channels": (1, 64),             # 1 or 7
    "mid_channels": (8, 4096),           # 64
    "mask_downsample": (1, 16),          # 1 or 4
    "camera_embedding_dim": (1, 64),     # 7
}
#: Bounds of the top-level :class:`WorldStereoConfig` values.
WORLDSTEREO_LIMITS: dict[str, tuple[float, float]] = {
    "nframe": (1, 1024),                 # 21
    "scale_map_size": (1, 16384),        # each height / width of a scale_map entry
    "scale_map_entries": (1, 256),
    "dmd_start_steps": (0, 100000),      # 250
    "dmd_end_steps": (0, 100000),        # 1000 (exclusive lower bound)
    "gen_shift": (0, 1000),              # 1.0 .. 5.0 (exclusive lower bound)
    "dmd_steps": (1, 1000),              # 4
}
MAX_STRING_LENGTH = 100_000


def _int(where: str, name: str, value: Any, limits: Mapping[str, tuple[int, int]], key: str | None = None,
         allow_none: bool = False) -> None:
    lo, hi = limits[key or name]
    check_int(f"{where}.{name}", value, lo, hi, allow_none=allow_none)


def _split_known(cls: type, data: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"{where}: expected a mapping (JSON object), got {type(data).__name__}")
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    return known, extra


@dataclass
class WanBackboneConfig:
    """Keyword arguments of diffusers' ``WanTransformer3DModel`` (Wan2.1 backbone).

    Defaults are those of Wan2.1-I2V-14B (D = 40·128 = 5120, 36 input channels, 40 blocks).
    ``inner_dim`` (= D) is ``num_attention_heads * attention_head_dim``.
    """

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 36
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    qk_norm: str | None = "rms_norm_across_heads"
    eps: float = 1e-6
    image_dim: int | None = 1280
    added_kv_proj_dim: int | None = 5120
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def inner_dim(self) -> int:
        """Backbone width D."""
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WanBackboneConfig":
        """Build from a diffusers transformer ``config.json`` dict; keys starting with ``_`` and
        unknown keys are kept in ``extra`` (logged) and otherwise ignored."""
        known, extra = _split_known(cls, data, "transformer")
        unknown = sorted(k for k in extra if not k.startswith("_"))
        if unknown:
            logger.debug("transformer config: ignoring keys %s", unknown)
        if "patch_size" in known:
            ps = known["patch_size"]
            if not isinstance(ps, (list, tuple)) or len(ps) != 3:
                raise ConfigError(f"transformer.patch_size: expected 3 integers, got {ps!r}"[:200])
            known["patch_size"] = tuple(ps)
        cfg = cls(**known, extra=dict(extra))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check types and bounds (:data:`BACKBONE_LIMITS`); raise :class:`ConfigError` /
        :class:`ConfigTypeError` (ValueError / TypeError) naming the first invalid key."""
        w = "transformer"
        for name in ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
                     "freq_dim", "ffn_dim", "num_layers", "rope_max_seq_len"):
            _int(w, name, getattr(self, name), BACKBONE_LIMITS)
        if not isinstance(self.patch_size, (list, tuple)) or len(self.patch_size) != 3:
            raise ConfigError(f"{w}.patch_size: expected 3 integers, got {self.patch_size!r}"[:200])
        for i, p in enumerate(self.patch_size):
            _int(w, f"patch_size[{i}]", p, BACKBONE_LIMITS, key="patch_size")
        if self.patch_size[0] != 1:
            raise ConfigError(f"{w}.patch_size: temporal patch size must be 1 (keyframe latents), got {self.patch_size}")
        if self.attention_head_dim % 2:
            raise ConfigError(f"{w}.attention_head_dim: must be even (RoPE rotates pairs), got {self.attention_head_dim}")
        if self.inner_dim > MAX_WIDTH:
            raise ConfigError(f"{w}: the width num_attention_heads*attention_head_dim = {self.inner_dim} exceeds "
                              f"{MAX_WIDTH}")
        check_choice(f"{w}.qk_norm", self.qk_norm, ("rms_norm_across_heads",))
        check_float(f"{w}.eps", self.eps, 0, 0.1, lo_exclusive=True)
        check_bool(f"{w}.cross_attn_norm", self.cross_attn_norm)
        _int(w, "image_dim", self.image_dim, BACKBONE_LIMITS, allow_none=True)
        check_int(f"{w}.added_kv_proj_dim", self.added_kv_proj_dim, 1, MAX_WIDTH, allow_none=True)
        if (self.image_dim is None) != (self.added_kv_proj_dim is None):
            raise ConfigError(f"{w}: image_dim and added_kv_proj_dim must both be set (I2V) or both be null, "
                              f"got {self.image_dim!r} / {self.added_kv_proj_dim!r}")
        if self.added_kv_proj_dim is not None and self.added_kv_proj_dim != self.inner_dim:
            raise ConfigError(f"{w}.added_kv_proj_dim: must equal the backbone width "
                              f"num_attention_heads*attention_head_dim = {self.inner_dim}, got {self.added_kv_proj_dim}")
        if self.pos_embed_seq_len is not None:
            raise ConfigError(f"{w}.pos_embed_seq_len: only null is supported (Wan2.1), got "
                              f"{self.pos_embed_seq_len!r}"[:200])

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["patch_size"] = list(self.patch_size)
        return d

    def to_diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments accepted by ``diffusers.WanTransformer3DModel``."""
        d = self.to_dict()
        d["patch_size"] = tuple(self.patch_size)
        return d


@dataclass
class ControlNetConfig:
    """``controlnet_cfg`` of the reference config (GGM ControlNet + memory-model switches).

    Attributes:
        dim: ControlNet hidden width d.
        ffn_dim: ControlNet MLP hidden size.
        num_heads: ControlNet heads (head dim = dim / num_heads, also its RoPE dim).
        time_embed_dim: width of the conditioning vector (the backbone ``temb``) = backbone width D.
        num_layers: N ControlNet blocks = number of leading backbone blocks that receive a residual.
        conv_out_dim: ControlNet patch/mask-embedding width = backbone width D.
        add_channels: channels of the mask/camera input (1 = mask only, 7 = mask + 6 Plücker).
        mid_channels: hidden channels of the mask embedding (GroupNorm with mid/8 groups).
        mask_downsample: temporal kernel/stride of the mask conv (1 for keyframe models).
        interp: with mask_downsample > 1, pad (md-1) frames at both ends instead of in front only.
        update_ref: memory models: carry reference tokens from block to block.
        main_camera_embedding: memory models: build/use the per-frame camera-token MLP.
        camera_embedding_dim: input size of that MLP (7 = quaternion + translation).
        ref_embedding: build the (unused) ``ref_index_embedding`` (21 × D) so checkpoints load.
    """

    dim: int
    ffn_dim: int
    num_heads: int
    time_embed_dim: int
    num_layers: int
    conv_out_dim: int
    add_channels: int = 1
    mid_channels: int = 64
    mask_downsample: int = 4
    interp: bool = False
    update_ref: bool | None = None
    main_camera_embedding: bool = False
    camera_embedding_dim: int | None = None
    ref_embedding: bool = False
    base_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    MANDATORY = ("dim", "ffn_dim", "num_heads", "time_embed_dim", "num_layers", "conv_out_dim")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ControlNetConfig":
        known, extra = _split_known(cls, data, "controlnet_cfg")
        missing = [k for k in cls.MANDATORY if k not in known]
        if missing:
            raise ConfigError(f"controlnet_cfg: missing mandatory keys {missing}")
        if extra:
            logger.debug("controlnet_cfg: ignoring keys %s", sorted(extra))
        # the reference overwrites controlnet_cfg.base_model with "" (so "5B" branches never fire)
        known["base_model"] = ""
        cfg = cls(**known, extra=dict(extra))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check types and bounds (:data:`CONTROLNET_LIMITS`); raise :class:`ConfigError` /
        :class:`ConfigTypeError` naming the first invalid key."""
        w = "controlnet_cfg"
        for name in ("dim", "ffn_dim", "num_heads", "time_embed_dim", "num_layers", "conv_out_dim",
                     "add_channels", "mid_channels", "mask_downsample"):
            _int(w, name, getattr(self, name), CONTROLNET_LIMITS)
        if self.dim % self.num_heads:
            raise ConfigError(f"{w}.num_heads: {self.num_heads} does not divide dim={self.dim}")
        if self.head_dim % 2:
            raise ConfigError(f"{w}: head dim dim/num_heads = {self.head_dim} must be even (RoPE rotates pairs)")
        groups = self.mid_channels // 8
        if self.mid_channels % groups:
            raise ConfigError(f"{w}.mid_channels: GroupNorm with mid_channels//8 groups needs mid_channels "
                              f"divisible by the group count, got {self.mid_channels}")
        for name in ("interp", "main_camera_embedding", "ref_embedding"):
            check_bool(f"{w}.{name}", getattr(self, name))
        check_bool(f"{w}.update_ref", self.update_ref, allow_none=True)
        _int(w, "camera_embedding_dim", self.camera_embedding_dim, CONTROLNET_LIMITS, allow_none=True)
        if self.main_camera_embedding and self.camera_embedding_dim is None:
            raise ConfigError(f"{w}.camera_embedding_dim: required when main_camera_embedding is true")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "base_model")}
        if d["update_ref"] is None:
            del d["update_ref"]
        if d["camera_embedding_dim"] is None:
            del d["camera_embedding_dim"]
        return d


@dataclass
class WorldStereoConfig:
    """Top-level reference ``config.json`` (+ optional ``transformer`` backbone object).

    ``base_model``, ``controlnet_cfg``, ``freeze_backbone``, ``nframe``, ``scale_map`` and
    ``latent_cond_mode`` are mandatory (the reference accesses them as attributes); the DMD keys
    have the reference scheduler defaults.
    """

    model_type: str
    base_model: str
    controlnet_cfg: ControlNetConfig
    nframe: int = 21
    freeze_backbone: bool = True
    scale_map: list[list[int]] | None = None
    latent_cond_mode: str = "first_frame_only"
    negative_prompt: str = ""
    dmd_start_steps: float = 250
    dmd_end_steps: float = 1000
    gen_shift: float = 1.0
    dmd_steps: int = 4
    transformer: WanBackboneConfig | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    MANDATORY = ("model_type", "base_model", "controlnet_cfg", "freeze_backbone", "nframe", "scale_map",
                 "latent_cond_mode")

    @property
    def is_memory(self) -> bool:
        """True for ``worldstereo-memory`` and ``worldstereo-memory-dmd`` (SSM transformer)."""
        return self.model_type in MEMORY_MODEL_TYPES

    @property
    def is_dmd(self) -> bool:
        return self.model_type == "worldstereo-memory-dmd"

    @property
    def controlnet(self) -> ControlNetConfig:
        """Alias of ``controlnet_cfg``."""
        return self.controlnet_cfg

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None
                  ) -> "WorldStereoConfig":
        """Validate and build from a parsed ``config.json``.

        Args:
            data: the JSON object.
            backbone_config: backbone config to use when ``data`` has no ``transformer`` object (a real
                reference checkpoint, whose backbone config lives in ``base_model``); overrides it otherwise.
        Raises:
            ConfigError (a ValueError): unknown ``model_type``, missing mandatory key, a value out of
                its bounds (:data:`WORLDSTEREO_LIMITS`, :data:`CONTROLNET_LIMITS`,
                :data:`BACKBONE_LIMITS`), NaN/inf, inconsistent sizes.
            ConfigTypeError (a TypeError and a ValueError): a value of the wrong type.
        """
        known, extra = _split_known(cls, data, "config")
        if "model_type" not in known:
            raise ConfigError(f"config: missing mandatory key 'model_type' (one of {list(MODEL_TYPES)})")
        check_choice("config.model_type", known["model_type"], MODEL_TYPES)
        missing = [k for k in cls.MANDATORY if k not in known]
        if missing:
            raise ConfigError(f"config: missing mandatory keys {missing}")
        if extra:
            logger.debug("config: ignoring keys %s", sorted(extra))
        if not isinstance(known["controlnet_cfg"], ControlNetConfig):
            known["controlnet_cfg"] = ControlNetConfig.from_dict(known["controlnet_cfg"])
        tr = known.pop("transformer", None)
        if backbone_config is not None:
            tr = backbone_config
        if tr is not None and not isinstance(tr, WanBackboneConfig):
            tr = WanBackboneConfig.from_dict(tr)
        cfg = cls(**known, transformer=tr, extra=dict(extra))
        cfg.validate()
        return cfg

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None
                       ) -> "WorldStereoConfig":
        """Read ``config.json`` (a file, or a directory containing one); errors name the file."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise MissingPathError(f"path: config file {str(p)!r} does not exist")
        data = read_config_json(p)
        try:
            return cls.from_dict(data, backbone_config=backbone_config)
        except ConfigError as exc:
            raise type(exc)(f"{str(p)!r}: {exc}") from exc

    def validate(self) -> None:
        """Check types and bounds (:data:`WORLDSTEREO_LIMITS`) and the fit of the ControlNet to the
        backbone; raise :class:`ConfigError` / :class:`ConfigTypeError` naming the first invalid key."""
        w = "config"
        lim = WORLDSTEREO_LIMITS
        check_str(f"{w}.base_model", self.base_model, 4096)
        check_bool(f"{w}.freeze_backbone", self.freeze_backbone)
        check_int(f"{w}.nframe", self.nframe, *lim["nframe"])
        check_choice(f"{w}.latent_cond_mode", self.latent_cond_mode, ("full_vae", "first_frame_only"))
        if self.scale_map is not None:
            lo, hi = lim["scale_map_size"]
            if not isinstance(self.scale_map, (list, tuple)) or not 1 <= len(self.scale_map) <= \
                    lim["scale_map_entries"][1] or not all(
                        isinstance(s, (list, tuple)) and len(s) == 2
                        and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in s)
                        for s in self.scale_map):
                raise ConfigError(f"{w}.scale_map: expected null or a list of 1 to {lim['scale_map_entries'][1]} "
                                  f"[height, width] integer pairs in [{lo}, {hi}], got {self.scale_map!r}"[:300])
        check_str(f"{w}.negative_prompt", self.negative_prompt, MAX_STRING_LENGTH, allow_none=True)
        if self.negative_prompt is None:
            self.negative_prompt = ""
        check_float(f"{w}.dmd_start_steps", self.dmd_start_steps, *lim["dmd_start_steps"])
        check_float(f"{w}.dmd_end_steps", self.dmd_end_steps, *lim["dmd_end_steps"], lo_exclusive=True)
        check_float(f"{w}.gen_shift", self.gen_shift, *lim["gen_shift"], lo_exclusive=True)
        check_int(f"{w}.dmd_steps", self.dmd_steps, *lim["dmd_steps"])
        if not self.dmd_start_steps < self.dmd_end_steps:
            raise ConfigError(f"{w}: need 0 <= dmd_start_steps < dmd_end_steps, got {self.dmd_start_steps} / "
                              f"{self.dmd_end_steps}")
        if not isinstance(self.controlnet_cfg, ControlNetConfig):
            raise ConfigTypeError(f"controlnet_cfg: expected a ControlNetConfig, got {type(self.controlnet_cfg).__name__}")
        cn = self.controlnet_cfg
        if self.is_memory and cn.update_ref is None:
            raise ConfigError(f"controlnet_cfg.update_ref: mandatory for model_type {self.model_type!r}")
        if self.transformer is not None:
            self.check_backbone(self.transformer)

    def check_backbone(self, backbone: WanBackboneConfig) -> None:
        """Check that the ControlNet config fits ``backbone`` (widths equal to D, layer counts)."""
        cn = self.controlnet_cfg
        D = backbone.inner_dim
        if cn.time_embed_dim != D:
            raise ConfigError(f"controlnet_cfg.time_embed_dim: must equal the backbone width "
                              f"num_attention_heads*attention_head_dim = {D}, got {cn.time_embed_dim}")
        if cn.conv_out_dim != D:
            raise ConfigError(f"controlnet_cfg.conv_out_dim: must equal the backbone width {D}, got {cn.conv_out_dim}")
        if cn.num_layers > backbone.num_layers:
            raise ConfigError(f"controlnet_cfg.num_layers: {cn.num_layers} exceeds the backbone's "
                              f"num_layers={backbone.num_layers}")
        if backbone.in_channels != 36:
            raise ConfigError(f"transformer.in_channels: WorldStereo needs the 36-channel I2V input, "
                              f"got {backbone.in_channels}")
        if backbone.out_channels != 16:
            raise ConfigError(f"transformer.out_channels: expected 16 latent channels, got {backbone.out_channels}")
        if tuple(backbone.patch_size) != (1, 2, 2):
            raise ConfigError(f"transformer.patch_size: WorldStereo needs (1, 2, 2), got {backbone.patch_size}")
        if backbone.image_dim is None:
            raise ConfigError("transformer.image_dim: WorldStereo needs an I2V backbone (image_dim set)")
        if self.is_memory and cn.main_camera_embedding and D % 2:
            raise ConfigError(f"transformer: backbone width {D} must be even for the camera MLP (D/2 hidden)")

    def with_backbone(self, backbone: WanBackboneConfig | Mapping[str, Any]) -> "WorldStereoConfig":
        """Copy with ``transformer`` replaced (validated)."""
        if not isinstance(backbone, WanBackboneConfig):
            backbone = WanBackboneConfig.from_dict(backbone)
        d = self.to_dict()
        d["transformer"] = backbone.to_dict()
        return WorldStereoConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict in the reference schema (``transformer`` included when known)."""
        d: dict[str, Any] = {
            "model_type": self.model_type,
            "base_model": self.base_model,
            "nframe": self.nframe,
            "freeze_backbone": self.freeze_backbone,
            "scale_map": [list(s) for s in self.scale_map] if self.scale_map is not None else None,
            "latent_cond_mode": self.latent_cond_mode,
            "negative_prompt": self.negative_prompt,
            "dmd_start_steps": self.dmd_start_steps,
            "dmd_end_steps": self.dmd_end_steps,
            "gen_shift": self.gen_shift,
            "dmd_steps": self.dmd_steps,
            "controlnet_cfg": self.controlnet_cfg.to_dict(),
        }
        if self.transformer is not None:
            d["transformer"] = self.transformer.to_dict()
        return d

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON atomically (temp file + rename)."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)
        os.replace(tmp, p)



def read_config_json(path: str | os.PathLike) -> Any:
    """Parse a JSON configuration file; every parse problem (too large, bad UTF-8, bad JSON,
    nesting too deep) is a :class:`ConfigError` naming the file. ``NaN``/``Infinity`` literals are
    parsed (and then refused by the field checks, which name the field)."""
    return read_json_file(path, error=ConfigError, what="config file")
