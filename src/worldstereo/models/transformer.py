"""WorldStereo diffusion transformer (camera and memory variants), weight-compatible with the reference.

The backbone is diffusers' Wan2.1 I2V transformer, built from diffusers' Wan components
(``WanRotaryPosEmbed``, ``WanTimeTextImageEmbedding``, ``WanTransformerBlock`` parameters); the
state-dict keys are identical to the reference classes ``WorldStereoModel`` (camera) and
``WorldStereoRefSModel`` (memory). See ``reference-implementation.md`` §2.

:class:`WorldStereoTransformer` is a diffusers model (``ModelMixin`` + ``ConfigMixin`` +
``AttentionMixin`` + ``CacheMixin`` + ``PeftAdapterMixin``) whose registered config is the reference
``config.json`` schema (validated by :class:`~worldstereo.models.config.WorldStereoConfig`, available
as :attr:`WorldStereoTransformer.worldstereo_config`). diffusers' machinery applies unchanged:
``save_pretrained`` / ``from_pretrained``, ``enable_group_offload``, ``enable_layerwise_casting``,
``set_attention_backend``, ``compile_repeated_blocks``, ``enable_cache`` (FirstBlockCache, ...),
``enable_parallelism`` (context parallel, with the plan :attr:`WorldStereoTransformer._cp_plan`) and
quantization configs. The ControlNet (``controlnet``) is a diffusers model of its own.

Shapes (B batch, F latent frames, latent grid h×w, h' = h/2, w' = w/2, S = h'·w', L = F·S,
D backbone width, R references):

* ``hidden_states`` ``[B, 36, F, h, w]``: [noisy latent 16, I2V frame mask 4, condition latent 16].
* ``render_latent`` ``[B, 16, F, h, w]``; ``render_mask`` ``[B, 1, F, 8h, 8w]`` (1 = hole);
  ``camera_embedding`` ``[B, 6, F, 8h, 8w]`` Plücker map [direction, origin × direction].
* memory only: ``reference_latent`` ``[B, 36, R, h, w]`` = [z_ref, ones(4), z_ref];
  ``ref_index`` int64 ``[R]`` in [0, F−2]; ``camera_qt`` ``[B, F, 7]``, ``camera_qt_ref`` ``[B, R, 7]``.
* output ``[B, 16, F, h, w]`` flow velocity.

Context parallelism (``enable_parallelism``): the plan splits, along the token axis, the backbone
target tokens (input of ``blocks.0``), the ControlNet tokens (input of ``controlnet.proj_in``), the memory
variant's stereo-stitched reference tokens (input of ``blocks.0``, or of every block when
``update_ref`` is false because every block then receives the original reference tokens) and all RoPE
tables (outputs of ``rope`` and ``controlnet_rope``); the ControlNet residuals are produced already
split like the backbone tokens; the output is gathered after ``proj_out``. Self-attentions run
Ulysses or ring attention over the split tokens; cross-attentions are local. L and R·S must be
divisible by the number of context-parallel ranks and, for Ulysses, the head counts by the Ulysses
degree (checked with a clear error).
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.loaders import PeftAdapterMixin
from diffusers.models._modeling_parallel import (
    ContextParallelConfig,
    ContextParallelInput,
    ContextParallelOutput,
    ParallelConfig,
)
from diffusers.models.attention import AttentionMixin
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTimeTextImageEmbedding
from torch import Tensor, nn

from .attention import AttentionProcessorBase, check_attention_backend, legacy_backend_name
from .checkpoint import PICKLE_SUFFIXES, CheckpointError, load_transformer
from .config import ControlNetConfig, WanBackboneConfig, WorldStereoConfig
from .controlnet import WanXControlNet
from .diffusers_checkpoint import CheckpointFolderMixin
from .memory_block import WorldStereoBlock, WorldStereoMemoryBlock, register_block_metadata

__all__ = ["WorldStereoTransformer", "StereoRotaryPosEmbed", "Transformer2DModelOutput", "REF_INDEX_EMBEDDING_SIZE",
           "context_parallel_plan", "module_compute_dtype"]

logger = logging.getLogger(__name__)

#: Rows of the (unused) ``ref_index_embedding`` of the release (hard-coded 21 = keyframes).
REF_INDEX_EMBEDDING_SIZE = 21
#: Keyword arguments the reference pipelines pass and the model ignores.
_IGNORED_KWARGS = frozenset({"point_map_latent", "point_map_ref_latent"})
#: Backbone modules kept in float32 under a half dtype (diffusers' Wan list, without the parameter-free
#: ``rope``) and the modules the reference creates in float32 after loading the backbone.
_KEEP_IN_FP32 = ["time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "controlnet", "camera_embedding",
                 "ref_index_embedding"]
#: diffusers attention backends that cannot return the log-sum-exp ring attention needs.
_NO_LSE_BACKENDS = frozenset({"native", "_native_efficient", "_native_math", "_native_npu", "_native_xla", "xformers",
                              "sage_varlen", "sage_blackwell_hub"})


def module_compute_dtype(module: nn.Module) -> torch.dtype:
    """dtype a module computes in: the compute dtype of diffusers' layerwise-casting hooks when present
    (weights are then stored in a lower precision), else the dtype of its first floating parameter."""
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        hook = registry.get_hook("layerwise_casting") if registry is not None else None
        if hook is not None:
            return hook.compute_dtype
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class StereoRotaryPosEmbed(WanRotaryPosEmbed):
    """Wan 3D RoPE, with the stereo-stitched reference tables of the memory model.

    ``forward(hidden_states)`` returns diffusers' ``(cos, sin)`` tables ``[1, L, 1, Dh]``.
    ``forward(hidden_states, ref_index)`` returns ``(cos, sin, ref_cos, ref_sin)``: tables on an
    ``F × h' × 2w'`` grid where targets take columns ``[0, w')`` (identical to the plain tables) and
    reference k takes frame ``ref_index[k] + 1`` and columns ``[w', 2w')`` — each reference view sits
    immediately to the right of the target frame that retrieved it. Reference tables ``[1, R·S, 1, Dh]``.
    No persistent state (the tables are non-persistent buffers), so the state dict is unchanged.
    """

    def forward(self, hidden_states: Tensor, ref_index: Tensor | None = None  # type: ignore[override]
                ) -> tuple[Tensor, ...]:
        if ref_index is None:
            return super().forward(hidden_states)
        _, _, frames, height, width = hidden_states.shape
        _, ph, pw = self.patch_size
        hp, wp = height // ph, width // pw
        dummy = torch.empty((1, 1, frames, height, 2 * width), device="meta")
        cos, sin = super().forward(dummy)  # [1, F*hp*2wp, 1, Dh]
        idx = ref_index.to(cos.device) + 1
        out = []
        for table in (cos, sin):
            grid = table.reshape(frames, hp, 2 * wp, table.shape[-1])
            out.append(grid[:, :, :wp].reshape(1, frames * hp * wp, 1, -1).to(hidden_states.device))
        for table in (cos, sin):
            grid = table.reshape(frames, hp, 2 * wp, table.shape[-1])
            out.append(grid[idx][:, :, wp:].reshape(1, idx.shape[0] * hp * wp, 1, -1).to(hidden_states.device))
        return tuple(out)


def context_parallel_plan(is_memory: bool, update_ref: bool = True) -> dict[str, Any]:
    """diffusers context-parallel plan of a WorldStereo transformer (see the module docstring).

    Args:
        is_memory: memory variant (reference stream, four RoPE tables).
        update_ref: memory variant: references carried from block to block (split once at
            ``blocks.0``) or re-fed to every block (split at every block's input).
    """
    tokens = ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)
    table = ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)
    plan: dict[str, Any] = {
        "rope": {i: table for i in range(4 if is_memory else 2)},
        "controlnet_rope": {0: table, 1: table},
        "controlnet.proj_in": {"input": tokens},
        "blocks.0": {"hidden_states": tokens},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
    if is_memory:
        if update_ref:
            plan["blocks.0"]["ref_states"] = tokens
        else:
            plan["blocks.*"] = {"ref_states": tokens}
    return plan


class WorldStereoTransformer(CheckpointFolderMixin, ModelMixin, ConfigMixin, AttentionMixin, CacheMixin,
                             PeftAdapterMixin):
    """Wan2.1-I2V backbone + GGM ControlNet (+ SSM memory for the memory variants).

    Build with ``WorldStereoTransformer(config)`` (a :class:`WorldStereoConfig`; random weights, the
    release's zero-inits and ControlNet patch-embedding copy), with the reference ``config.json`` keys
    as keyword arguments (``WorldStereoTransformer(**json.load(f))``, what diffusers'
    ``from_config`` does), or load with :meth:`from_pretrained` / :meth:`from_reference_dir`.
    The backbone config (``transformer`` key) must be set, or passed as ``backbone_config``.

    Attributes:
        config: diffusers' frozen config: the reference ``config.json`` keys (``model_type``,
            ``controlnet_cfg``, ``transformer``, ...), what ``save_pretrained`` writes.
        worldstereo_config: the same as a validated :class:`WorldStereoConfig`.
        is_memory: True for ``worldstereo-memory`` / ``worldstereo-memory-dmd``.
    """

    config_name = "config.json"
    ignore_for_config = ["config", "backbone_config"]
    _supports_gradient_checkpointing = False
    _supports_group_offloading = True
    _keep_in_fp32_modules = _KEEP_IN_FP32
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm"]
    _no_split_modules = ["WorldStereoBlock", "WorldStereoMemoryBlock", "ControlNetBlock"]
    _repeated_blocks = ["WorldStereoBlock", "WorldStereoMemoryBlock", "ControlNetBlock"]
    _group_offload_block_modules = ["controlnet"]

    def __init__(self, config: WorldStereoConfig | None = None,
                 backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None, *,
                 model_type: str | None = None, base_model: str = "", controlnet_cfg: Mapping[str, Any] | None = None,
                 nframe: int = 21, freeze_backbone: bool = True, scale_map: Sequence[Sequence[int]] | None = None,
                 latent_cond_mode: str = "first_frame_only", negative_prompt: str = "",
                 dmd_start_steps: float = 250, dmd_end_steps: float = 1000, gen_shift: float = 1.0,
                 dmd_steps: int = 4, transformer: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if config is None:
            if model_type is None or controlnet_cfg is None:
                raise ValueError("config: pass a WorldStereoConfig, or the reference config.json keys (model_type, "
                                 "controlnet_cfg, transformer, ...) as keyword arguments")
            raw = dict(model_type=model_type, base_model=base_model, controlnet_cfg=controlnet_cfg, nframe=nframe,
                       freeze_backbone=freeze_backbone, scale_map=scale_map, latent_cond_mode=latent_cond_mode,
                       negative_prompt=negative_prompt, dmd_start_steps=dmd_start_steps,
                       dmd_end_steps=dmd_end_steps, gen_shift=gen_shift, dmd_steps=dmd_steps)
            if transformer is not None:
                raw["transformer"] = transformer
            if isinstance(controlnet_cfg, ControlNetConfig):
                raw["controlnet_cfg"] = controlnet_cfg.to_dict()
            config = WorldStereoConfig.from_dict(raw)
        elif not isinstance(config, WorldStereoConfig):
            raise TypeError(f"config: expected WorldStereoConfig, got {type(config).__name__}")
        if backbone_config is not None:
            config = config.with_backbone(backbone_config)
        if config.transformer is None:
            raise ValueError("config.transformer: the backbone config is missing; pass backbone_config= "
                             "(the diffusers transformer config of the base model)")
        config.check_backbone(config.transformer)
        self.register_to_config(**config.to_dict())
        self.worldstereo_config = config
        register_block_metadata()
        bb = config.transformer
        cn = config.controlnet_cfg
        D = bb.inner_dim
        self.inner_dim = D
        self.is_memory = config.is_memory

        # backbone (names and registration order as diffusers WanTransformer3DModel)
        self.rope = StereoRotaryPosEmbed(bb.attention_head_dim, tuple(bb.patch_size), bb.rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(bb.in_channels, D, kernel_size=bb.patch_size, stride=bb.patch_size)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=D, time_freq_dim=bb.freq_dim, time_proj_dim=6 * D, text_embed_dim=bb.text_dim,
            image_embed_dim=bb.image_dim, pos_embed_seq_len=bb.pos_embed_seq_len,
        )
        block_cls = WorldStereoMemoryBlock if self.is_memory else WorldStereoBlock
        self.blocks = nn.ModuleList([
            block_cls(D, bb.ffn_dim, bb.num_attention_heads, bb.qk_norm or "rms_norm_across_heads",
                      bb.cross_attn_norm, bb.eps, bb.added_kv_proj_dim)
            for _ in range(bb.num_layers)
        ])
        self.norm_out = FP32LayerNorm(D, bb.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(D, bb.out_channels * math.prod(bb.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, D) / D**0.5)

        # GGM ControlNet (a diffusers model of its own)
        self.controlnet = WanXControlNet.from_controlnet_config(cn, in_channels=bb.in_channels, out_dim=D,
                                                                patch_size=bb.patch_size)
        self.controlnet_rope = WanRotaryPosEmbed(cn.head_dim, tuple(bb.patch_size), 1024)

        # memory-model extras
        self.ref_index_embedding: nn.Embedding | None = None
        self.camera_embedding: nn.Sequential | None = None
        if self.is_memory:
            if cn.ref_embedding:
                self.ref_index_embedding = nn.Embedding(REF_INDEX_EMBEDDING_SIZE, D)
            if cn.main_camera_embedding:
                cam_dim = int(cn.camera_embedding_dim)  # validated non-None
                self.camera_embedding = nn.Sequential(
                    nn.Linear(cam_dim, D // 2), nn.SiLU(), nn.Linear(D // 2, D), nn.SiLU(), nn.Linear(D, D)
                )
        self._init_like_reference()

    # ------------------------------------------------------------------ construction helpers
    @torch.no_grad()
    def _init_like_reference(self) -> None:
        """Zero-init what the release zero-inits and copy the backbone patch embedding into the ControlNet."""
        if self.patch_embedding.weight.is_meta:
            return
        for proj in self.controlnet.proj_out:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.controlnet.controlnet_mask_embedding.mask_zero_proj.weight)
        nn.init.zeros_(self.controlnet.controlnet_mask_embedding.mask_zero_proj.bias)
        self.controlnet.controlnet_patch_embedding.weight.copy_(self.patch_embedding.weight)
        self.controlnet.controlnet_patch_embedding.bias.copy_(self.patch_embedding.bias)
        if self.camera_embedding is not None:
            nn.init.zeros_(self.camera_embedding[4].weight)
            nn.init.zeros_(self.camera_embedding[4].bias)
        if self.ref_index_embedding is not None:
            nn.init.zeros_(self.ref_index_embedding.weight)

    def _rebuild_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent RoPE tables (needed after building on the meta device)."""
        bb = self.backbone_config
        self.rope = StereoRotaryPosEmbed(bb.attention_head_dim, tuple(bb.patch_size), bb.rope_max_seq_len).to(device)
        self.controlnet_rope = WanRotaryPosEmbed(self.worldstereo_config.controlnet_cfg.head_dim, tuple(bb.patch_size),
                                                 1024).to(device)

    @classmethod
    def from_config(cls, config: Any = None, backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None,
                    return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """Randomly initialised model from a :class:`WorldStereoConfig` or a (reference / diffusers)
        ``config.json`` dict (diffusers' ``ConfigMixin.from_config`` for the latter)."""
        if isinstance(config, WorldStereoConfig) or backbone_config is not None:
            cfg = config if isinstance(config, WorldStereoConfig) else WorldStereoConfig.from_dict(dict(config))
            model = cls(cfg, backbone_config=backbone_config)
            return (model, {}) if return_unused_kwargs else model
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_reference_dir(cls, directory: str | os.PathLike, torch_dtype: torch.dtype | None = torch.float32,
                           backbone_config: WanBackboneConfig | Mapping[str, Any] | None = None,
                           device: torch.device | str = "cpu", allow_pickle: bool = False) -> "WorldStereoTransformer":
        """Load ``config.json`` + ``model.safetensors`` from a reference checkpoint sub-folder or a
        conformance case directory. See :func:`worldstereo.models.checkpoint.load_transformer`."""
        return load_transformer(directory, torch_dtype=torch_dtype, backbone_config=backbone_config, device=device,
                                allow_pickle=allow_pickle)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load a transformer folder strictly (missing, unexpected or mis-shaped weights raise).

        * A reference checkpoint sub-folder (``config.json`` without diffusers' ``_class_name`` +
          ``model.safetensors``) goes through :func:`~worldstereo.models.checkpoint.load_transformer`
          (low-memory reader, reference dtype policy); accepted keyword arguments: ``torch_dtype``,
          ``device``, ``allow_pickle``, ``backbone_config``.
        * Anything else (a folder written by :meth:`save_pretrained`, a Hub id, ``subfolder=``, a
          ``quantization_config``, ``device_map``...) is diffusers' ``ModelMixin.from_pretrained``,
          checked strictly afterwards. With ``torch_dtype`` half, the modules of
          ``_keep_in_fp32_modules`` (reference policy: keep-fp32 backbone modules, ControlNet, camera
          MLP, ``ref_index_embedding``) are loaded in float32.
        """
        folder = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(folder) and kwargs.get("subfolder") is None and _is_reference_folder(folder):
            allowed = {"torch_dtype", "device", "allow_pickle", "backbone_config"}
            unknown = sorted(set(kwargs) - allowed)
            if unknown:
                raise TypeError(f"from_pretrained: {unknown} are not supported for a reference checkpoint folder "
                                f"(config.json + model.safetensors); supported: {sorted(allowed)}")
            return load_transformer(folder, torch_dtype=kwargs.get("torch_dtype"),
                                    backbone_config=kwargs.get("backbone_config"),
                                    device=kwargs.get("device") or "cpu", allow_pickle=kwargs.get("allow_pickle", False))
        want_info = bool(kwargs.pop("output_loading_info", False))
        model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        problems = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if any(problems.values()):
            raise CheckpointError(f"{folder!r} does not match the model: " + "; ".join(
                f"{k.replace('_', ' ')} ({len(v)}): {', '.join(map(str, v))}" for k, v in problems.items() if v))
        model.worldstereo_config = WorldStereoConfig.from_dict(
            {k: v for k, v in model.config.items() if not k.startswith("_")})
        return (model, info) if want_info else model

    # ------------------------------------------------------------------ properties
    @property
    def backbone_config(self) -> WanBackboneConfig:
        assert self.worldstereo_config.transformer is not None
        return self.worldstereo_config.transformer

    @property
    def _cp_plan(self) -> dict[str, Any]:  # type: ignore[override]
        """diffusers context-parallel plan of this model (depends on the variant; see
        :func:`context_parallel_plan`)."""
        return context_parallel_plan(self.is_memory, bool(self.worldstereo_config.controlnet_cfg.update_ref))

    # ------------------------------------------------------------------ attention backend
    def attention_processors(self) -> Iterator[AttentionProcessorBase]:
        """All attention processors (backbone self/joint and cross attention, ControlNet)."""
        for block in self.blocks:
            yield from block.attention_processors()
        for block in self.controlnet.controlnet_blocks:
            yield block.self_attn.processor

    def set_attention_backend(self, backend: str) -> None:
        """Select the attention backend of every attention of the model (diffusers'
        ``ModelMixin.set_attention_backend``): ``"sdpa"`` (= diffusers ``"native"``, PyTorch
        ``scaled_dot_product_attention``, the default), ``"xformers"``, or any diffusers backend name
        (``"flash"``, ``"_native_cudnn"``, ...).

        Raises:
            ValueError: unknown backend; ImportError: xformers requested but not installed.
        """
        super().set_attention_backend(check_attention_backend(backend))

    @property
    def attention_backend(self) -> str:
        """Backend in use (``"sdpa"`` for diffusers' ``"native"`` / default)."""
        return legacy_backend_name(next(iter(self.attention_processors()))._attention_backend)

    def enable_xformers_memory_efficient_attention(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Same as ``set_attention_backend("xformers")``."""
        self.set_attention_backend("xformers")

    def disable_xformers_memory_efficient_attention(self) -> None:  # type: ignore[override]
        self.set_attention_backend("sdpa")

    # ------------------------------------------------------------------ context parallel
    def enable_parallelism(self, *, config: Any, cp_plan: dict[str, Any] | None = None) -> None:
        """diffusers' ``ModelMixin.enable_parallelism`` with WorldStereo's checks first.

        Raises:
            ValueError: Ulysses degree does not divide the backbone or ControlNet head counts.
            NotImplementedError: ring attention with an attention backend that does not return the
                log-sum-exp ring attention needs (``"sdpa"``/``"native"``, the only CPU backend,
                ``"xformers"``, ...): use Ulysses, or ``set_attention_backend("flash")`` /
                ``"_native_cudnn"`` / ``"_native_flash"`` on CUDA first.
        """
        cp = config.context_parallel_config if isinstance(config, ParallelConfig) else config
        if isinstance(cp, ContextParallelConfig):
            if not cp.ulysses_anything:
                self.check_ulysses_degree(cp.ulysses_degree or 1)
            if (cp.ring_degree or 1) > 1:
                names = {legacy_backend_name(p._attention_backend) for p in self.attention_processors()}
                if not names:
                    names = {"sdpa"}
                names = {"native" if n == "sdpa" else n for n in names}
                if names & _NO_LSE_BACKENDS:
                    raise NotImplementedError(
                        f"config.ring_degree: ring attention needs the attention's log-sum-exp, which the "
                        f"{sorted(names & _NO_LSE_BACKENDS)} attention backend does not return (PyTorch SDPA, "
                        f"'native', is the only backend on the CPU); use ulysses_degree instead, or on CUDA call "
                        f"set_attention_backend('flash' | '_native_cudnn' | '_native_flash') first")
        super().enable_parallelism(config=config, cp_plan=cp_plan)

    def check_ulysses_degree(self, degree: int, name: str = "config.ulysses_degree") -> None:
        """Raise a ``ValueError`` naming ``name`` unless ``degree`` divides the backbone and ControlNet
        head counts (Ulysses attention splits the heads over the ranks)."""
        if degree <= 1:
            return
        heads = {"backbone": self.backbone_config.num_attention_heads,
                 "controlnet": self.worldstereo_config.controlnet_cfg.num_heads}
        bad = {k: v for k, v in heads.items() if v % degree}
        if bad:
            raise ValueError(f"{name}: {degree} must divide the attention head counts {heads}; not {bad} (Ulysses "
                             f"splits the heads over the ranks)")

    def _resolve_parallel_config(self, config: Any) -> Any:
        """diffusers' resolution of the parallel config, made to work without an accelerator.

        diffusers 0.42 picks ``rank % torch.accelerator.device_count()`` as the device, which divides by
        zero on a CPU-only machine; there (gloo process group) the mesh is built on ``"cpu"`` and the
        device is the CPU. With an accelerator this is diffusers' own method.
        """
        accelerator = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        if accelerator is not None and torch.accelerator.device_count() > 0:
            return super()._resolve_parallel_config(config)
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError("torch.distributed must be available and initialized before applying a "
                               "`parallel_config` (e.g. torch.distributed.init_process_group('gloo') on the CPU)")
        if isinstance(config, ContextParallelConfig):
            config = ParallelConfig(context_parallel_config=config)
        if not isinstance(config, ParallelConfig) or config.context_parallel_config is None:
            raise NotImplementedError("config: only context parallelism runs without an accelerator")
        cp = config.context_parallel_config
        mesh = cp.mesh or torch.distributed.device_mesh.init_device_mesh(
            device_type="cpu", mesh_shape=cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
        config.setup(torch.distributed.get_rank(), torch.distributed.get_world_size(), torch.device("cpu"), mesh=mesh)
        self._parallel_config = config
        return config

    def _check_context_parallel_sizes(self, n_tokens: int, n_ref_tokens: int | None) -> None:
        pc = getattr(self, "_parallel_config", None)
        cp = getattr(pc, "context_parallel_config", None)
        if cp is None or cp.ulysses_anything or cp.ring_anything:
            return
        world = (cp.ring_degree or 1) * (cp.ulysses_degree or 1)
        sizes = {"target tokens F*h'*w'": n_tokens}
        if n_ref_tokens is not None:
            sizes["reference tokens R*h'*w'"] = n_ref_tokens
        bad = {k: v for k, v in sizes.items() if v % world}
        if bad:
            raise ValueError(f"hidden_states/reference_latent: context parallelism over {world} ranks splits the "
                             f"tokens evenly, but {bad} is not divisible by {world}; change the resolution, frame or "
                             f"reference count, or enable ulysses_anything")

    # ------------------------------------------------------------------ input validation
    def _check_inputs(self, hidden_states: Tensor, timestep: Tensor | float | int, encoder_hidden_states: Tensor,
                      encoder_hidden_states_image: Tensor | None, render_latent: Tensor | None,
                      render_mask: Tensor | None, camera_embedding: Tensor | None) -> Tensor:
        bb = self.backbone_config
        cn = self.worldstereo_config.controlnet_cfg
        if not isinstance(hidden_states, Tensor) or hidden_states.ndim != 5:
            raise ValueError(f"hidden_states: expected a [B, {bb.in_channels}, F, h, w] tensor, got "
                             f"{getattr(hidden_states, 'shape', type(hidden_states).__name__)}")
        B, C, Fr, h, w = hidden_states.shape
        if C != bb.in_channels:
            raise ValueError(f"hidden_states: expected {bb.in_channels} channels, got shape {tuple(hidden_states.shape)}")
        _, ph, pw = bb.patch_size
        if h % ph or w % pw or h == 0 or w == 0 or Fr == 0:
            raise ValueError(f"hidden_states: latent grid {h}x{w} must be non-empty multiples of the patch size "
                             f"({ph}, {pw})")
        if not isinstance(timestep, Tensor):
            timestep = torch.tensor(timestep)
        if timestep.is_complex() or timestep.dtype == torch.bool:
            raise TypeError(f"timestep: expected a real tensor, got dtype {timestep.dtype}")
        if timestep.ndim == 0:
            timestep = timestep.reshape(1)
        if timestep.ndim != 1 or timestep.shape[0] not in (1, B):
            raise ValueError(f"timestep: expected shape [{B}] (one per sample) or a scalar, got {tuple(timestep.shape)}")
        if timestep.shape[0] != B:
            timestep = timestep.expand(B)
        if not isinstance(encoder_hidden_states, Tensor) or encoder_hidden_states.ndim != 3 or \
                encoder_hidden_states.shape[0] != B or encoder_hidden_states.shape[2] != bb.text_dim:
            raise ValueError(f"encoder_hidden_states: expected [{B}, 512, {bb.text_dim}], got "
                             f"{tuple(getattr(encoder_hidden_states, 'shape', ()))}")
        if bb.image_dim is not None:
            if encoder_hidden_states.shape[1] != 512:
                raise ValueError(f"encoder_hidden_states: the I2V cross-attention needs exactly 512 text tokens, got "
                                 f"{encoder_hidden_states.shape[1]}")
            if encoder_hidden_states_image is None:
                raise ValueError("encoder_hidden_states_image: required (CLIP image tokens [B, 257, image_dim])")
            e = encoder_hidden_states_image
            if e.ndim != 3 or e.shape[0] != B or e.shape[2] != bb.image_dim or e.shape[1] == 0:
                raise ValueError(f"encoder_hidden_states_image: expected [{B}, N>0, {bb.image_dim}], got {tuple(e.shape)}")
        if render_latent is None or render_mask is None:
            raise ValueError("render_latent and render_mask: both are required (GGM ControlNet inputs)")
        n_lat = bb.in_channels - 20
        if render_latent.shape != (B, n_lat, Fr, h, w):
            raise ValueError(f"render_latent: expected shape {(B, n_lat, Fr, h, w)}, got {tuple(render_latent.shape)}")
        if render_mask.ndim != 5 or render_mask.shape[0] != B or render_mask.shape[1] != 1:
            raise ValueError(f"render_mask: expected [{B}, 1, F, 8h, 8w], got {tuple(render_mask.shape)}")
        exp_pix = (h * 8, w * 8)
        if tuple(render_mask.shape[3:]) != exp_pix:
            raise ValueError(f"render_mask: spatial size must be the full pixel resolution {exp_pix} (8x the latent "
                             f"grid), got {tuple(render_mask.shape[3:])}")
        n_cam = cn.add_channels - 1
        if n_cam == 0:
            if camera_embedding is not None:
                raise ValueError("camera_embedding: this model has add_channels=1 (mask only); pass None")
        else:
            if camera_embedding is None:
                raise ValueError(f"camera_embedding: required ([B, {n_cam}, F, 8h, 8w] Plücker map), "
                                 f"controlnet_cfg.add_channels={cn.add_channels}")
            if camera_embedding.ndim != 5 or camera_embedding.shape[1] != n_cam or \
                    camera_embedding.shape[0] != B or camera_embedding.shape[2:] != render_mask.shape[2:]:
                raise ValueError(f"camera_embedding: expected [{B}, {n_cam}, *render_mask spatial dims "
                                 f"{tuple(render_mask.shape[2:])}], got {tuple(camera_embedding.shape)}")
        md = cn.mask_downsample
        n_mask_frames = render_mask.shape[2]
        pad = (md - 1) * (2 if cn.interp else 1) if md > 1 else 0
        if (n_mask_frames + pad) // md != Fr or (n_mask_frames + pad) % md:
            raise ValueError(f"render_mask: {n_mask_frames} frames do not map to {Fr} latent frames with "
                             f"mask_downsample={md}")
        return timestep

    def _check_memory_inputs(self, B: int, Fr: int, h: int, w: int, reference_latent: Tensor | None,
                             ref_index: Any, camera_qt: Tensor | None, camera_qt_ref: Tensor | None
                             ) -> tuple[Tensor, Tensor]:
        bb = self.backbone_config
        if reference_latent is None:
            raise ValueError(f"reference_latent: required by the memory model ([B, {bb.in_channels}, R, h, w])")
        if reference_latent.ndim != 5 or reference_latent.shape[0] != B or \
                reference_latent.shape[1] != bb.in_channels or tuple(reference_latent.shape[3:]) != (h, w):
            raise ValueError(f"reference_latent: expected [{B}, {bb.in_channels}, R, {h}, {w}], got "
                             f"{tuple(reference_latent.shape)}")
        R = reference_latent.shape[2]
        if ref_index is None:
            raise ValueError(f"ref_index: required by the memory model (int64 [R={R}] with values in [0, F-2])")
        if isinstance(ref_index, (list, tuple)):
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ref_index):
                raise TypeError(f"ref_index: expected integers, got {ref_index!r}")
            ref_index = torch.tensor(ref_index, dtype=torch.long)
        if not isinstance(ref_index, Tensor):
            raise TypeError(f"ref_index: expected a LongTensor [R], got {type(ref_index).__name__}")
        if ref_index.is_floating_point() or ref_index.is_complex() or ref_index.dtype == torch.bool:
            raise TypeError(f"ref_index: expected an integer tensor (int64), got dtype {ref_index.dtype}")
        if ref_index.ndim != 1 or ref_index.shape[0] != R:
            raise ValueError(f"ref_index: expected shape [{R}] (one slot per reference), got {tuple(ref_index.shape)}")
        if R > 0:
            lo, hi = int(ref_index.min()), int(ref_index.max())
            if lo < 0 or hi > Fr - 2:
                raise ValueError(f"ref_index: values must lie in [0, F-2] = [0, {Fr - 2}] (reference k is placed at "
                                 f"RoPE frame ref_index[k]+1), got min {lo}, max {hi}")
        cam_dim = self.worldstereo_config.controlnet_cfg.camera_embedding_dim
        for name, t, n in (("camera_qt", camera_qt, Fr), ("camera_qt_ref", camera_qt_ref, R)):
            if t is None:
                continue
            if self.camera_embedding is None:
                raise ValueError(f"{name}: this model has no camera embedding (controlnet_cfg.main_camera_embedding "
                                 f"is false); pass None")
            if t.ndim != 3 or tuple(t.shape) != (B, n, cam_dim):
                raise ValueError(f"{name}: expected shape {(B, n, cam_dim)}, got {tuple(t.shape)}")
        return reference_latent, ref_index.to(torch.long)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_hidden_states_image: Tensor | None = None,
        *,
        render_latent: Tensor | None = None,
        render_mask: Tensor | None = None,
        camera_embedding: Tensor | None = None,
        reference_latent: Tensor | None = None,
        ref_index: Tensor | Sequence[int] | None = None,
        camera_qt: Tensor | None = None,
        camera_qt_ref: Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        extrinsics: Tensor | None = None,
        intrinsics: Tensor | None = None,
        intermediates: dict[str, Tensor] | None = None,
        **kwargs: Any,
    ) -> Transformer2DModelOutput | tuple[Tensor]:
        """Predict the flow velocity.

        Args:
            hidden_states: ``[B, 36, F, h, w]`` model input (noisy latent, I2V mask, condition latent).
            timestep: ``[B]`` (or scalar) diffusion timesteps in [0, 1000]; float values are embedded as
                given (never rounded), integer tensors are converted to float.
            encoder_hidden_states: ``[B, 512, text_dim]`` text embeddings (padded rows zero).
            encoder_hidden_states_image: ``[B, 257, image_dim]`` CLIP tokens.
            render_latent: ``[B, 16, F, h, w]`` keyframe latent of the point-cloud render.
            render_mask: ``[B, 1, F, 8h, 8w]`` hole mask at full pixel resolution (1 = hole).
            camera_embedding: ``[B, 6, F, 8h, 8w]`` Plücker map (required when add_channels = 7).
            reference_latent: memory model: ``[B, 36, R, h, w]`` reference latents [z, ones(4), z].
            ref_index: memory model: integer ``[R]``, target slot that retrieved each reference, in [0, F-2].
            camera_qt, camera_qt_ref: memory model: ``[B, F, 7]`` / ``[B, R, 7]`` camera tokens
                (quaternion wxyz + translation of the normalised w2c); each skipped when None.
            return_dict: return a ``Transformer2DModelOutput`` (``.sample``) instead of a 1-tuple.
            attention_kwargs: accepted for diffusers compatibility; unused.
            extrinsics, intrinsics: accepted like the reference camera model (checked finite) and ignored.
            intermediates: optional dict filled with debug tensors (names of the conformance data).
            **kwargs: ``point_map_latent`` / ``point_map_ref_latent`` are accepted and ignored.
        Returns:
            ``[B, 16, F, h, w]`` in the backbone dtype, wrapped as requested.
        """
        unknown = set(kwargs) - _IGNORED_KWARGS
        if unknown:
            raise TypeError(f"forward() got unexpected keyword arguments {sorted(unknown)}")
        for name, t in (("extrinsics", extrinsics), ("intrinsics", intrinsics)):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"{name}: contains non-finite values")
        timestep = self._check_inputs(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                                      render_latent, render_mask, camera_embedding)
        B, _, Fr, h, w = hidden_states.shape
        _, ph, pw = self.backbone_config.patch_size
        hp, wp = h // ph, w // pw
        if self.is_memory:
            reference_latent, ref_index_t = self._check_memory_inputs(B, Fr, h, w, reference_latent, ref_index,
                                                                      camera_qt, camera_qt_ref)
        elif reference_latent is not None or ref_index is not None or camera_qt is not None or camera_qt_ref is not None:
            raise ValueError("reference_latent/ref_index/camera_qt/camera_qt_ref: the camera model "
                             f"({self.worldstereo_config.model_type}) takes no references; use a memory model")
        cap = intermediates
        device = hidden_states.device
        dtype = self.dtype
        assert render_latent is not None and render_mask is not None
        self._check_context_parallel_sizes(Fr * hp * wp, reference_latent.shape[2] * hp * wp if self.is_memory
                                           and reference_latent is not None else None)

        # ControlNet embedding of [noisy 16, frame mask 4, render latent 16] + mask/camera map
        cn_dtype = module_compute_dtype(self.controlnet)
        x_c = torch.cat([hidden_states[:, :20], render_latent.to(hidden_states.dtype)], dim=1).to(cn_dtype)
        mask_cam = render_mask if camera_embedding is None else torch.cat([render_mask, camera_embedding], dim=1)
        mask_cam = mask_cam.to(cn_dtype)
        cn_rope = self.controlnet_rope(x_c)

        # backbone embeddings
        if self.is_memory:
            cos, sin, ref_cos, ref_sin = self.rope(hidden_states, ref_index_t)
            rope, ref_rope = (cos, sin), (ref_cos, ref_sin)
        else:
            rope, ref_rope = tuple(self.rope(hidden_states)), None
        x = self.patch_embedding(hidden_states.to(dtype)).flatten(2).transpose(1, 2).contiguous()
        if cap is not None:
            cap["patch_embed"] = x
        ref0 = None
        if self.is_memory:
            assert reference_latent is not None
            ref0 = self.patch_embedding(reference_latent.to(dtype)).flatten(2).transpose(1, 2).contiguous()
            if cap is not None:
                cap["ref_patch_embed"] = ref0
            if self.camera_embedding is not None:
                cam_dtype = module_compute_dtype(self.camera_embedding)
                S = hp * wp
                if camera_qt is not None:
                    tok = self.camera_embedding(camera_qt.to(cam_dtype))
                    x = x + tok.repeat_interleave(S, dim=1).to(dtype)
                    if cap is not None:
                        cap["camera_token"] = tok
                if camera_qt_ref is not None:
                    tok = self.camera_embedding(camera_qt_ref.to(cam_dtype))
                    ref0 = ref0 + tok.repeat_interleave(S, dim=1).to(dtype)
                    if cap is not None:
                        cap["camera_token_ref"] = tok

        temb, timestep_proj, text_ctx, image_ctx = self.condition_embedder(
            timestep.to(device), encoder_hidden_states.to(dtype),
            encoder_hidden_states_image.to(dtype) if encoder_hidden_states_image is not None else None,
        )
        if cap is not None:
            cn_tokens, cn_patch, cn_mask = self.controlnet.embed(x_c, mask_cam)  # debug capture only
            cap.update(temb=temb, timestep_proj=timestep_proj, text_context=text_ctx,
                       controlnet_patch_embed=cn_patch, mask_cam_embed=cn_mask, controlnet_input_tokens=cn_tokens,
                       rope_cos=rope[0], rope_sin=rope[1], controlnet_rope_cos=cn_rope[0],
                       controlnet_rope_sin=cn_rope[1])
            if image_ctx is not None:
                cap["image_context"] = image_ctx
            if ref_rope is not None:
                cap.update(ref_rope_cos=ref_rope[0], ref_rope_sin=ref_rope[1])
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        context = text_ctx if image_ctx is None else torch.cat([image_ctx, text_ctx], dim=1)

        # residuals cast to the backbone dtype as produced (the cast the addition does; debug capture
        # keeps the ControlNet dtype)
        cn_states = self.controlnet(x_c, mask_cam, temb.to(cn_dtype), cn_rope,
                                    output_dtype=None if cap is not None else x.dtype)
        if cap is not None:
            for i, s in enumerate(cn_states):
                cap[f"controlnet_state_{i}"] = s

        ref = ref0
        update_ref = bool(self.worldstereo_config.controlnet_cfg.update_ref)
        for i, block in enumerate(self.blocks):
            residual = cn_states[i] if i < len(cn_states) else None
            if cap is not None:  # debug: block output captured before the residual (reference layout)
                cap[f"block_{i}_in"] = x
            ref_in = (ref if update_ref else ref0) if self.is_memory else None
            if cap is not None and ref_in is not None:
                cap[f"block_{i}_ref_in"] = ref_in
            out = block(x, context, timestep_proj, rope, ref_in, ref_rope, None if cap is not None else residual)
            if self.is_memory:
                x, ref = out
                if cap is not None:
                    cap[f"block_{i}_ref_out"] = ref
            else:
                x = out
            if cap is not None:
                cap[f"block_{i}_out"] = x
                if residual is not None:
                    x = x + residual.to(x.dtype)

        # output head
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x)
        if cap is not None:
            cap["proj_out"] = x
        p_t, _, _ = self.backbone_config.patch_size
        x = x.reshape(B, Fr // p_t, hp, wp, p_t, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)


def _is_reference_folder(folder: str | os.PathLike) -> bool:
    """A reference checkpoint sub-folder: ``config.json`` without diffusers' ``_class_name`` and
    ``model.safetensors`` (or a pickle file) instead of ``diffusion_pytorch_model.*``."""
    cfg = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or "_class_name" in data:
        return False
    names = os.listdir(folder)
    return any(n.startswith("model.safetensors") or n.endswith(PICKLE_SUFFIXES) for n in names)
