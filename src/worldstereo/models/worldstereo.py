"""The ``WorldStereo`` model: transformer + Wan base components + memory settings.

``WorldStereo`` is a ``torch.nn.Module`` holding

* ``transformer`` (:class:`~worldstereo.models.transformer.WorldStereoTransformer`),
* ``vae`` (diffusers ``AutoencoderKLWan``), ``text_encoder`` (``UMT5EncoderModel``),
  ``image_encoder`` (``CLIPVisionModel``) — sub-modules, so ``.to()``, ``.half()``, ``.eval()``
  apply to all of them;
* ``tokenizer``, ``image_processor`` (``CLIPImageProcessor``), ``scheduler`` (UniPC flow scheduler
  for ``worldstereo-camera`` / ``worldstereo-memory``, :class:`~worldstereo.sampling.DMDScheduler`
  for ``worldstereo-memory-dmd``; schedulers are stateful, use :meth:`WorldStereo.make_scheduler`
  for a fresh one per sampling run);
* ``config`` (:class:`~worldstereo.models.config.WorldStereoConfig`), ``variant`` (its
  ``model_type``), ``global_memory_config`` and ``spatial_memory_config`` (plain dicts, see
  :data:`DEFAULT_GLOBAL_MEMORY_CONFIG` / :data:`DEFAULT_SPATIAL_MEMORY_CONFIG`).

Build a random model with ``WorldStereo(vdm_config=...)`` or load one with
:meth:`WorldStereo.from_pretrained`; :meth:`WorldStereo.save_pretrained` writes a complete,
self-describing folder (layout in :mod:`worldstereo.models.loading`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from worldstereo.config_checks import (
    ConfigError,
    ConfigTypeError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_str,
)
from worldstereo.devices import check_device
from worldstereo.finite import all_finite, count_nonfinite
from worldstereo.io.paths import as_path
from worldstereo.memory.limits import MEMORY_CONFIG_LIMITS as _MEMORY_LIMITS
from worldstereo.models import conditioning as _cond
from worldstereo.models import vae as _vae
from worldstereo.models.checkpoint import (
    check_finite,
    find_weights_file,
    load_transformer,
    meta_transformer,
    save_file_of_transformer,
    weight_file_specs,
)
from worldstereo.models.checkpoint_folder import CheckpointError, folder_state, owning_folder, write_checkpoint_folder
from worldstereo.models.component_checks import check_component_size, check_fits_in_memory, check_random_component
from worldstereo.models.config import MODEL_TYPES, WanBackboneConfig, WorldStereoConfig
from worldstereo.models.loading import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MARKER_FILE,
    read_json,
    resolve_base_model,
    resolve_checkpoint,
)
from worldstereo.errors import MissingPathError

logger = logging.getLogger(__name__)

__all__ = [
    "WorldStereo",
    "DEFAULT_GLOBAL_MEMORY_CONFIG",
    "DEFAULT_SPATIAL_MEMORY_CONFIG",
    "COMPONENT_CONFIG_KEYS",
    "resolve_memory_config",
    "MEMORY_CONFIG_LIMITS",
]

#: Defaults of ``global_memory_config`` (api.md "Memory configs").
#: ``max_points``: cap of the global point cloud (exceeded -> down-sampling);
#: ``update_frequency``: "auto" (after every generated video) | "manual" | "never";
#: ``point_radius`` (NDC units) and ``points_per_pixel``: point renderer settings.
DEFAULT_GLOBAL_MEMORY_CONFIG: dict[str, Any] = {
    "max_points": 2_000_000,
    "update_frequency": "auto",
    "point_radius": 0.008,
    "points_per_pixel": 8,
}

#: Defaults of ``spatial_memory_config`` (api.md "Memory configs").
#: ``memory_size``: maximum frames kept in the bank (the condition view is never evicted);
#: ``max_references``: references per generated video (8 as the reference);
#: ``frames_per_update``: frames of each generated video added to the bank (8 as the reference);
#: ``retrieval``: "fov_overlap" (reference) | "correspondence";
#: ``num_correspondences``: pixels sampled per target view by the "correspondence" method;
#: ``image_feature_model``: image features of the reference selection (a DINOv2 folder / id, or a
#: callable ``(N,3,H,W) -> (N,D)``; None = the built-in light-weight descriptor).
DEFAULT_SPATIAL_MEMORY_CONFIG: dict[str, Any] = {
    "memory_size": 256,
    "max_references": 8,
    "frames_per_update": 8,
    "retrieval": "fov_overlap",
    "num_correspondences": 64,
    "image_feature_model": None,
}

#: Keys of ``vdm_config`` that configure the base components (the rest is the reference schema).
COMPONENT_CONFIG_KEYS = ("vae", "text_encoder", "image_encoder", "image_processor", "tokenizer", "scheduler")
_MODULE_COMPONENTS = ("vae", "text_encoder", "image_encoder")


#: Inclusive bounds of the numeric memory settings (:mod:`worldstereo.memory.limits`).
MEMORY_CONFIG_LIMITS = _MEMORY_LIMITS


def resolve_memory_config(kind: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with the user's ``config`` and validated (types and
    :data:`MEMORY_CONFIG_LIMITS`; NaN/inf and booleans-as-numbers refused).

    Args:
        kind: ``"global"`` or ``"spatial"``.
        config: user overrides (None = defaults).

    Raises:
        ConfigError (ValueError): unknown key or invalid value (named, e.g.
            ``global_memory_config.max_points``); ConfigTypeError (TypeError and ValueError): a value
            of the wrong type.
    """
    if kind not in ("global", "spatial"):
        raise ValueError(f"kind: expected 'global' or 'spatial', got {kind!r}")
    name = f"{kind}_memory_config"
    defaults = DEFAULT_GLOBAL_MEMORY_CONFIG if kind == "global" else DEFAULT_SPATIAL_MEMORY_CONFIG
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigTypeError(f"{name}: expected a dict, got {type(config).__name__}")
    unknown = sorted(map(str, set(config) - set(defaults)))
    if unknown:
        raise ConfigError(f"{name}: unknown keys {unknown[:20]}; known keys: {sorted(defaults)}")
    merged = {**defaults, **config}
    lim = MEMORY_CONFIG_LIMITS
    if kind == "global":
        check_int(f"{name}.max_points", merged["max_points"], *lim["max_points"], allow_none=True)
        check_choice(f"{name}.update_frequency", merged["update_frequency"], ("auto", "manual", "never"))
        check_float(f"{name}.point_radius", merged["point_radius"], *lim["point_radius"], lo_exclusive=True)
        check_int(f"{name}.points_per_pixel", merged["points_per_pixel"], *lim["points_per_pixel"])
    else:
        for key in ("memory_size", "max_references", "frames_per_update", "num_correspondences"):
            check_int(f"{name}.{key}", merged[key], *lim[key])
        check_choice(f"{name}.retrieval", merged["retrieval"], ("fov_overlap", "correspondence"))
        feat = merged["image_feature_model"]
        if feat is not None and not isinstance(feat, (str, os.PathLike)) and not callable(feat):
            raise ConfigTypeError(f"{name}.image_feature_model: expected None, a DINOv2 folder / model id, or a "
                                  f"callable (N,3,H,W) -> (N,D), got {type(feat).__name__}")
        if isinstance(feat, str):
            check_str(f"{name}.image_feature_model", feat, 4096)
    return merged


def _serialisable_memory_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A memory config for ``worldstereo_config.json``: paths as strings; a callable feature model
    cannot be saved and is written as None (logged)."""
    out = dict(config)
    feat = out.get("image_feature_model")
    if isinstance(feat, os.PathLike):
        out["image_feature_model"] = os.fspath(feat)
    elif feat is not None and not isinstance(feat, str):
        logger.warning("spatial_memory_config.image_feature_model: a callable is not saved; the saved model "
                       "uses the built-in descriptor unless you pass it again to from_pretrained")
        out["image_feature_model"] = None
    return out


def _clean_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in cfg.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- component builders
def _random_component(name: str, cfg: Mapping[str, Any]) -> Any:
    if not isinstance(cfg, Mapping):
        raise TypeError(f"vdm_config['{name}']: expected a dict of constructor arguments, got {type(cfg).__name__}")
    kw = _clean_kwargs(cfg)
    check_random_component(name, kw, f"vdm_config['{name}']")
    if name == "vae":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan(**kw)
    if name == "text_encoder":
        from transformers import UMT5Config, UMT5EncoderModel

        return UMT5EncoderModel(UMT5Config(**kw))
    if name == "image_encoder":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return CLIPVisionModel(CLIPVisionConfig(**kw))
    if name == "image_processor":
        return _cond.clip_image_processor_class()(**kw)
    raise ValueError(f"vdm_config['{name}']: cannot build this component from a config")  # pragma: no cover


def _raise_loading_info(name: str, folder: Path, info: Mapping[str, Any], allowed_missing: Sequence[str] = ()) -> None:
    missing = sorted(set(info.get("missing_keys") or []) - set(allowed_missing))
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(str(m) for m in (info.get("mismatched_keys") or []))
    if missing or unexpected or mismatched:
        raise ValueError(f"{name} ({str(folder)!r}): weights do not match the model: missing keys {missing}, "
                         f"unexpected keys {unexpected}, mis-shaped keys {mismatched}")


def _transformers_dtype_kwarg(dtype: torch.dtype) -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56 (``torch_dtype`` is deprecated there), else ``torch_dtype=``."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _load_component(name: str, root: Path, torch_dtype: torch.dtype) -> Any:
    """Load one base component from ``root/<name>`` strictly (missing/unexpected keys raise) and
    refuse non-finite weights.

    Raises:
        MissingPathError (FileNotFoundError): missing folder; ConfigError / CheckpointError
            (ValueError): a config beyond :data:`~worldstereo.models.component_checks.COMPONENT_LIMITS`
            or describing more parameters than the weight files hold, any other failure of the
            diffusers / transformers loader (malformed config or weights, missing weight file), naming
            the component folder, or a weight with NaN/inf values (naming it).
    """

    folder = root / name
    if not folder.is_dir():
        raise MissingPathError(f"{name}: folder {str(folder)!r} not found (expected a diffusers Wan2.1 I2V layout)")
    check_component_size(name, folder)  # sizes bounded and matching the weight files, before building
    try:
        component = _read_component(name, folder, torch_dtype)
    except (FileNotFoundError, CheckpointError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - a third-party loader failing on a bad file; re-raised naming it
        raise CheckpointError(f"{name}: cannot load {str(folder)!r}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}"[:2000]) from exc
    if isinstance(component, nn.Module):
        source = f"{name} ({str(folder)!r})"
        for key, tensor in component.state_dict().items():
            check_finite(tensor, key, source)
    return component


def _read_component(name: str, folder: Path, torch_dtype: torch.dtype) -> Any:
    if name == "vae":
        from diffusers import AutoencoderKLWan

        model, info = AutoencoderKLWan.from_pretrained(folder, torch_dtype=torch_dtype, output_loading_info=True,
                                                       use_safetensors=True)
        _raise_loading_info(name, folder, info)
        return model.eval()
    if name == "text_encoder":
        from transformers import UMT5EncoderModel

        model, info = UMT5EncoderModel.from_pretrained(folder, output_loading_info=True, use_safetensors=True,
                                                       **_transformers_dtype_kwarg(torch_dtype))
        _raise_loading_info(name, folder, info, allowed_missing=("encoder.embed_tokens.weight",))
        if model.encoder.embed_tokens is not model.shared:  # re-tie (reference, transformers >= 5)
            model.encoder.embed_tokens = model.shared
        return model.eval()
    if name == "image_encoder":
        from transformers import CLIPVisionModel

        model, info = CLIPVisionModel.from_pretrained(folder, output_loading_info=True, use_safetensors=True,
                                                      **_transformers_dtype_kwarg(torch_dtype))
        _raise_loading_info(name, folder, info)
        return model.eval()
    if name == "image_processor":
        return _cond.clip_image_processor_class().from_pretrained(folder)
    if name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    if name == "scheduler":
        path = folder / "scheduler_config.json"
        if not path.is_file():
            raise MissingPathError(f"scheduler: {str(path)!r} not found")
        return read_json(path)
    raise ValueError(f"unknown component {name!r}")  # pragma: no cover


def _make_scheduler(config: WorldStereoConfig, scheduler_config: Mapping[str, Any] | None) -> Any:
    """UniPC flow scheduler (camera/memory) or DMD scheduler (-dmd) from the configs."""
    from worldstereo.sampling import DMDScheduler, make_unipc_scheduler  # lazy: diffusers

    if config.is_dmd:
        return DMDScheduler(start_timesteps=config.dmd_start_steps, num_train_timesteps=config.dmd_end_steps,
                            shift=config.gen_shift, dmd_steps=config.dmd_steps)
    if scheduler_config is not None and scheduler_config.get("_class_name") == "DMDScheduler":
        raise ValueError(f"scheduler: a DMD scheduler config was given for variant {config.model_type!r}")
    return make_unipc_scheduler(dict(scheduler_config) if scheduler_config is not None else None)


class WorldStereo(nn.Module):
    """WorldStereo model: transformer, Wan base components and memory settings.

    Args:
        vdm_config: the reference ``config.json`` schema (``model_type``, ``base_model``,
            ``controlnet_cfg``, ``nframe``, ``freeze_backbone``, ``scale_map``,
            ``latent_cond_mode``, ... and a ``transformer`` object with the Wan backbone kwargs)
            plus component configs: ``vae`` (``AutoencoderKLWan`` kwargs), ``text_encoder``
            (``UMT5Config`` kwargs), ``image_encoder`` (``CLIPVisionConfig`` kwargs),
            ``image_processor`` (``CLIPImageProcessor`` kwargs), ``tokenizer`` (a tokenizer
            folder path) and ``scheduler`` (UniPC scheduler config; ignored by the DMD variant).
            Components given as configs are randomly initialised; a missing one is loaded from
            ``base_model`` when that is a local folder (else ``ValueError``). A missing
            ``transformer`` object is read from ``base_model/transformer/config.json``.
        global_memory_config: overrides of :data:`DEFAULT_GLOBAL_MEMORY_CONFIG`.
        spatial_memory_config: overrides of :data:`DEFAULT_SPATIAL_MEMORY_CONFIG`.
        components: ready-made components by name (e.g. ``{"tokenizer": tok}``); they win over
            ``vdm_config``.

    The model is built in float32 on the CPU, in eval mode.
    """

    def __init__(self, vdm_config: Mapping[str, Any] | None = None,
                 global_memory_config: Mapping[str, Any] | None = None,
                 spatial_memory_config: Mapping[str, Any] | None = None, *,
                 components: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if vdm_config is None:
            raise ValueError("vdm_config: required (the reference config.json schema + component configs); "
                             "use WorldStereo.from_pretrained(...) to load a checkpoint")
        if not isinstance(vdm_config, Mapping):
            raise TypeError(f"vdm_config: expected a dict, got {type(vdm_config).__name__}")
        components = dict(components or {})
        unknown = sorted(set(components) - set(COMPONENT_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"components: unknown names {unknown}; expected some of {list(COMPONENT_CONFIG_KEYS)}")
        gmc = resolve_memory_config("global", global_memory_config)
        smc = resolve_memory_config("spatial", spatial_memory_config)

        ref_cfg = {k: v for k, v in vdm_config.items() if k not in COMPONENT_CONFIG_KEYS}
        base = ref_cfg.get("base_model") or ""
        base_dir = Path(base).expanduser() if base and Path(base).expanduser().is_dir() else None
        backbone = None
        if "transformer" not in ref_cfg:
            if base_dir is None:
                raise ValueError("vdm_config['transformer']: the Wan backbone config is required when base_model "
                                 "is not a local folder")
            backbone = WanBackboneConfig.from_dict(read_json(base_dir / "transformer" / "config.json"))
        config = WorldStereoConfig.from_dict(ref_cfg, backbone_config=backbone)

        from worldstereo.models.transformer import WorldStereoTransformer  # lazy: diffusers

        tok_cfg = vdm_config.get("tokenizer")
        if tok_cfg is not None and not isinstance(tok_cfg, (str, os.PathLike)):
            raise TypeError(f"vdm_config['tokenizer']: expected a tokenizer folder path, got {type(tok_cfg).__name__}; "
                            f"pass tokenizer objects with components={{'tokenizer': ...}}")
        parts: dict[str, Any] = {}
        for name in ("vae", "text_encoder", "image_encoder", "image_processor", "tokenizer"):
            if name in components:
                parts[name] = components[name]
            elif name in vdm_config and name != "tokenizer":
                parts[name] = _random_component(name, vdm_config[name])
            elif name == "tokenizer" and isinstance(vdm_config.get("tokenizer"), (str, os.PathLike)):
                from transformers import AutoTokenizer

                parts[name] = AutoTokenizer.from_pretrained(vdm_config["tokenizer"])
            elif base_dir is not None:
                parts[name] = _load_component(name, base_dir, torch.float32)
            else:
                raise ValueError(f"vdm_config['{name}']: missing, and base_model {base!r} is not a local folder to "
                                 f"load it from")
        if "scheduler" in components:
            scheduler = components["scheduler"]
        else:
            sched_cfg = vdm_config.get("scheduler")
            if sched_cfg is None and base_dir is not None and not config.is_dmd:
                sched_cfg = _load_component("scheduler", base_dir, torch.float32)
            scheduler = _make_scheduler(config, sched_cfg)
        self._check_consistency(config, parts)  # before building the (possibly large) transformer
        _check_fits_in_memory(config)
        self._setup(WorldStereoTransformer(config), parts, scheduler, gmc, smc)

    # ------------------------------------------------------------------ construction helpers
    def _setup(self, transformer: nn.Module, parts: Mapping[str, Any], scheduler: Any,
               global_memory_config: dict[str, Any], spatial_memory_config: dict[str, Any]) -> None:
        config: WorldStereoConfig = transformer.worldstereo_config  # type: ignore[assignment]
        self._check_consistency(config, parts)
        self.transformer = transformer
        self.vae = parts["vae"]
        self.text_encoder = parts["text_encoder"]
        self.image_encoder = parts["image_encoder"]
        self.tokenizer = parts["tokenizer"]
        self.image_processor = parts["image_processor"]
        self.scheduler = scheduler
        self.config = config
        self.global_memory_config = global_memory_config
        self.spatial_memory_config = spatial_memory_config
        self.eval()

    @staticmethod
    def _check_consistency(config: WorldStereoConfig, parts: Mapping[str, Any]) -> None:
        bb = config.transformer
        assert bb is not None
        z_dim = getattr(parts["vae"].config, "z_dim", None)
        if z_dim != bb.out_channels:
            raise ValueError(f"vae.z_dim: must equal the transformer's out_channels={bb.out_channels}, got {z_dim}")
        d_model = getattr(parts["text_encoder"].config, "d_model", None)
        if d_model != bb.text_dim:
            raise ValueError(f"text_encoder.d_model: must equal transformer.text_dim={bb.text_dim}, got {d_model}")
        hidden = getattr(parts["image_encoder"].config, "hidden_size", None)
        if hidden != bb.image_dim:
            raise ValueError(f"image_encoder.hidden_size: must equal transformer.image_dim={bb.image_dim}, "
                             f"got {hidden}")
        vocab = len(parts["tokenizer"])
        te_vocab = getattr(parts["text_encoder"].config, "vocab_size", vocab)
        if vocab > te_vocab:
            raise ValueError(f"tokenizer: vocabulary of {vocab} tokens exceeds text_encoder.vocab_size={te_vocab}")

    @classmethod
    def _from_parts(cls, transformer: nn.Module, parts: Mapping[str, Any], scheduler: Any,
                    global_memory_config: dict[str, Any], spatial_memory_config: dict[str, Any]) -> "WorldStereo":
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model._setup(transformer, parts, scheduler, global_memory_config, spatial_memory_config)
        return model

    # ------------------------------------------------------------------ properties
    @property
    def variant(self) -> str:
        """``model_type``: ``worldstereo-camera``, ``worldstereo-memory`` or ``worldstereo-memory-dmd``."""
        return self.config.model_type

    @property
    def is_memory(self) -> bool:
        """True for the memory variants (SSM transformer, references)."""
        return self.config.is_memory

    @property
    def is_distilled(self) -> bool:
        """True for ``worldstereo-memory-dmd`` (few-step DMD sampler, no guidance)."""
        return self.config.is_dmd

    @property
    def device(self) -> torch.device:
        """Device of the transformer."""
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the transformer (patch embedding)."""
        return getattr(self.transformer, "dtype", next(self.transformer.parameters()).dtype)

    def make_scheduler(self) -> Any:
        """A fresh scheduler of the same configuration as ``self.scheduler`` (schedulers are stateful)."""
        from worldstereo.sampling import DMDScheduler, make_unipc_scheduler  # lazy: diffusers

        if isinstance(self.scheduler, DMDScheduler):
            return DMDScheduler.from_dict(self.scheduler.config)
        return make_unipc_scheduler(dict(self.scheduler.config))

    # ------------------------------------------------------------------ conditioning helpers
    def encode_prompt(self, prompts: str | Sequence[str], max_length: int = 512, *,
                      dtype: torch.dtype | None = None) -> Tensor:
        """Text embeddings ``[B, max_length, text_dim]`` (padded rows zero) on the transformer's device,
        in ``dtype`` (default: the text encoder's). See :func:`worldstereo.models.conditioning.encode_prompt`."""
        return _cond.encode_prompt(self.tokenizer, self.text_encoder, prompts, max_length, device=self.device,
                                   dtype=dtype)

    def encode_image(self, images: Any, reference_quirk: bool = True, *, dtype: torch.dtype | None = None) -> Tensor:
        """CLIP tokens ``[B, N, image_dim]`` (``hidden_states[-2]``) of PIL image(s) or a tensor
        ``[B, 3, H, W]`` in [0, 1]. See :func:`worldstereo.models.conditioning.encode_image_clip`."""
        return _cond.encode_image_clip(self.image_processor, self.image_encoder, images, reference_quirk,
                                       device=self.device, dtype=dtype)

    def encode_video(self, video: Tensor) -> Tensor:
        """Keyframe latents ``[B, 16, F, H/8, W/8]`` (float32, normalised) of a video
        ``[B, 3, F, H, W]`` in [-1, 1]. See :func:`worldstereo.models.vae.keyframe_encode`."""
        return _vae.keyframe_encode(self.vae, video)

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Video ``[B, 3, F, 8h, 8w]`` in [-1, 1] (float32) from normalised keyframe latents
        ``[B, 16, F, h, w]``. See :func:`worldstereo.models.vae.keyframe_decode`.

        Raises:
            ValueError: ``latents`` holds NaN/inf (decoding them would give a black or garbage
                video without a word).
            FloatingPointError: the VAE produced NaN/inf from finite latents (e.g. float16
                overflow; decode in bfloat16 or float32).
        """
        if isinstance(latents, Tensor) and not all_finite(latents):
            bad = sum(count_nonfinite(latents))
            raise ValueError(f"latents: {bad} of {latents.numel()} values are NaN or inf; refusing to decode them "
                             f"into a video (sampling went wrong upstream)")
        video = _vae.keyframe_decode(self.vae, latents)
        if not all_finite(video):
            bad = sum(count_nonfinite(video))
            raise FloatingPointError(f"decode_latents: the VAE ({self.vae.dtype}) produced {bad} non-finite values "
                                     f"from finite latents; decode in bfloat16 or float32")
        return video

    def prepare_image_condition(self, image: Tensor, num_latent_frames: int, mode: str | None = None) -> Tensor:
        """I2V condition ``[B, 20, F, h, w]`` for an image ``[B, 3, H, W]`` in [-1, 1]; ``mode`` defaults
        to ``config.latent_cond_mode``. See :func:`worldstereo.models.conditioning.prepare_image_condition`."""
        return _cond.prepare_image_condition(self.vae, image, num_latent_frames,
                                             mode or self.config.latent_cond_mode)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ serialization
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write a complete, self-describing folder (loads with :meth:`from_pretrained`, no network).

        Layout: ``worldstereo_config.json`` (marker: format, variant, memory configs),
        ``config.json`` (reference schema with the ``transformer`` backbone object),
        ``model.safetensors`` (transformer, official key names), the diffusers/transformers
        folders ``vae/``, ``text_encoder/``, ``tokenizer/``, ``image_encoder/``,
        ``image_processor/``, ``scheduler/``, and ``worldstereo_manifest.json`` (written last: every
        file of the save with its size). Weights are saved in their current dtypes.

        The save is a crash-safe transaction (:mod:`worldstereo.models.checkpoint_folder`): the
        new checkpoint is written into a hidden staging folder inside ``folder`` and committed with
        one atomic rename, so at every instant ``folder`` holds the complete old checkpoint or the
        complete new one, and the leftovers of an interrupted save are finished or removed by the
        next save. Only files written by this or an earlier save are replaced or removed; other
        files in ``folder`` (notes, results) are kept.

        Returns:
            The folder path.
        Raises:
            ValueError: ``folder`` is an existing file, or a file of the checkpoint would have to
                replace a directory or be written through a symbolic link.
        """
        target = as_path(folder, "folder").expanduser()
        write_checkpoint_folder(target, self._write_files)
        logger.info("Saved %s model to %s", self.variant, target)
        return target

    def _write_files(self, out: Path) -> None:
        """Write every file of the checkpoint into the empty folder ``out``."""
        save_file_of_transformer(self.transformer, out)  # config.json + model.safetensors
        self.vae.save_pretrained(out / "vae", safe_serialization=True)
        self.text_encoder.save_pretrained(out / "text_encoder")
        self.image_encoder.save_pretrained(out / "image_encoder")
        self.tokenizer.save_pretrained(out / "tokenizer")
        self.image_processor.save_pretrained(out / "image_processor")
        (out / "scheduler").mkdir()
        sched_cfg = self.scheduler.to_dict() if hasattr(self.scheduler, "to_dict") else dict(self.scheduler.config)
        sched_cfg.setdefault("_class_name", type(self.scheduler).__name__)
        (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched_cfg, indent=2, default=str)
                                                                 + "\n", encoding="utf-8")
        marker = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "variant": self.variant,
            "global_memory_config": self.global_memory_config,
            "spatial_memory_config": _serialisable_memory_config(self.spatial_memory_config),
            "components": {
                "transformer": type(self.transformer).__name__,
                "vae": type(self.vae).__name__,
                "text_encoder": type(self.text_encoder).__name__,
                "image_encoder": type(self.image_encoder).__name__,
                "tokenizer": type(self.tokenizer).__name__,
                "image_processor": type(self.image_processor).__name__,
                "scheduler": type(self.scheduler).__name__,
            },
        }
        (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, variant: str | None = None, *,
                        base_model: str | os.PathLike | None = None, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, local_files_only: bool = False,
                        allow_pickle: bool = False, global_memory_config: Mapping[str, Any] | None = None,
                        spatial_memory_config: Mapping[str, Any] | None = None) -> "WorldStereo":
        """Load a WorldStereo checkpoint (layouts in :mod:`worldstereo.models.loading`).

        Args:
            name_or_path: reference checkpoint root, one variant sub-folder, a ``save_pretrained``
                folder, or a Hugging Face id of any of these.
            variant: ``"worldstereo-camera"``, ``"worldstereo-memory"`` (default for a reference
                root) or ``"worldstereo-memory-dmd"``.
            base_model: diffusers Wan2.1 I2V folder or Hub id for the base components (text
                encoder, tokenizer, CLIP, VAE, scheduler); default: ``config.json``'s ``base_model``
                (a ``save_pretrained`` folder carries its own components).
            torch_dtype: dtype of the transformer and the VAE (default float32); the text and
                image encoders stay float32 as in the reference.
            device: move the model there after loading (default: stay on the CPU).
            local_files_only: never use the network for Hub ids.
            allow_pickle: accept pickle weight files (``.bin``/``.pt``...); refused by default.
            global_memory_config, spatial_memory_config: overrides of the saved / default settings.

        Loading is strict: a missing, unexpected or mis-shaped weight raises ``ValueError`` naming
        the keys.
        """
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise TypeError(f"torch_dtype: expected a torch.dtype, got {torch_dtype!r}")
        if torch_dtype is not None and torch_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"torch_dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {torch_dtype}")
        check_bool("local_files_only", local_files_only)
        check_bool("allow_pickle", allow_pickle)
        if device is not None:
            device = check_device(device, "device")
        resolved = resolve_checkpoint(name_or_path, variant, local_files_only=local_files_only,
                                      allow_pickle=allow_pickle)
        saved_folder = owning_folder(resolved.directory)
        state = folder_state(saved_folder)
        config_dict = resolved.config
        if resolved.is_own_format and base_model is None:
            comp_dir = resolved.directory
        else:
            base = base_model if base_model is not None else config_dict.get("base_model", "")
            comp_dir = resolve_base_model(base, local_files_only=local_files_only)
        backbone = None
        if "transformer" not in config_dict:
            bb_path = comp_dir / "transformer" / "config.json"
            if not bb_path.is_file():
                raise ConfigError(f"config.json of {str(resolved.directory)!r} has no 'transformer' object (the Wan "
                                  f"backbone settings) and the base model has no {str(bb_path)!r} to take it from")
            backbone = _with_file_name(bb_path, lambda: WanBackboneConfig.from_dict(read_json(bb_path)))
        config = _with_file_name(resolved.directory / "config.json",
                                 lambda: WorldStereoConfig.from_dict(config_dict, backbone_config=backbone))
        # every small setting is validated before any weight is read
        marker = resolved.marker or {}
        gmc = _with_file_name(resolved.directory / MARKER_FILE, lambda: resolve_memory_config(
            "global", global_memory_config if global_memory_config is not None
            else marker.get("global_memory_config")))
        smc = _with_file_name(resolved.directory / MARKER_FILE, lambda: resolve_memory_config(
            "spatial", spatial_memory_config if spatial_memory_config is not None
            else marker.get("spatial_memory_config")))
        sched_cfg = None
        if (comp_dir / "scheduler" / "scheduler_config.json").is_file():
            sched_cfg = _load_component("scheduler", comp_dir, torch.float32)
        elif not config.is_dmd:
            logger.warning("No scheduler/scheduler_config.json in %s; using the default Wan UniPC config", comp_dir)
        scheduler = _with_file_name(comp_dir / "scheduler" / "scheduler_config.json",
                                    lambda: _make_scheduler(config, sched_cfg))

        dtype = torch_dtype or torch.float32
        base_transformer = comp_dir / "transformer"
        has_base_weights = base_transformer.is_dir() and any(base_transformer.glob("*.safetensors*"))
        if not has_base_weights and not (resolved.is_own_format and base_model is None) \
                and _checkpoint_lacks_weights(resolved.directory, config, allow_pickle):
            # like the reference, the weights the checkpoint does not carry come from the base transformer
            base = base_model if base_model is not None else config_dict.get("base_model", "")
            comp_dir = resolve_base_model(base, local_files_only=local_files_only, need_transformer_weights=True)
            base_transformer = comp_dir / "transformer"
            has_base_weights = base_transformer.is_dir() and any(base_transformer.glob("*.safetensors*"))
        transformer = _load_transformer(resolved.directory, backbone, dtype, allow_pickle,
                                        base_transformer if has_base_weights else None)

        parts = {name: _load_component(name, comp_dir, dtype if name == "vae" else torch.float32)
                 for name in ("vae", "text_encoder", "image_encoder", "image_processor", "tokenizer")}
        model = cls._from_parts(transformer, parts, scheduler, gmc, smc)
        if folder_state(saved_folder) != state:
            raise CheckpointError(f"{str(saved_folder)!r} was changed by a save while it was being loaded; "
                                  f"load it again")
        if device is not None:
            model.to(device)
        logger.info("Loaded %s from %s (components from %s)", model.variant, resolved.directory, comp_dir)
        return model


def _with_file_name(path: Path, build: Any) -> Any:
    """``build()``, with a :class:`ConfigError` re-raised (same class) prefixed by the file's name."""
    try:
        return build()
    except ConfigError as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{str(path)!r}: {exc}") from exc


def _check_fits_in_memory(config: WorldStereoConfig) -> None:
    """A randomly initialised transformer is built in float32 on the CPU: count its parameters on
    the ``meta`` device first and refuse a config that cannot fit in this machine's memory."""
    parameters = sum(t.numel() for t in meta_transformer(config).state_dict().values())
    check_fits_in_memory(parameters, "transformer", "vdm_config['transformer']")


def _checkpoint_lacks_weights(directory: Path, config: WorldStereoConfig, allow_pickle: bool) -> bool:
    """Whether the checkpoint of ``directory`` lacks some of the transformer's weights (read from the
    safetensors header only; False for formats without a header)."""
    present = weight_file_specs(find_weights_file(directory, allow_pickle=allow_pickle))
    if present is None:
        return False
    return any(k not in present for k in meta_transformer(config).state_dict())


def _load_transformer(directory: Path, backbone: WanBackboneConfig | None, dtype: torch.dtype | None,
                      allow_pickle: bool, base_transformer: Path | None = None) -> nn.Module:
    """``config.json`` + ``model.safetensors`` of ``directory`` -> transformer, strictly (missing,
    unexpected or mis-shaped keys raise :class:`~worldstereo.models.checkpoint.CheckpointError`);
    weights the checkpoint lacks come from ``base_transformer`` (the base Wan transformer), as in
    the reference."""
    return load_transformer(directory, torch_dtype=dtype, backbone_config=backbone, device="cpu",
                            allow_pickle=allow_pickle, base_transformer=base_transformer)


# keep the documented variant names importable from here too
VARIANTS: tuple[str, ...] = MODEL_TYPES
